"""Published genotypes, by name (a registry: no ``eval``), and resolution of ``NAME|FILE`` arguments.

Sources: ISTA-NAS's official repository (tools/genotypes.py) for the three ISTA-NAS cells; DARTS
(Liu et al., ICLR 2019) and PC-DARTS (Xu et al., ICLR 2020) repositories for theirs.
"""

from __future__ import annotations

from pathlib import Path

from .errors import UserError
from .genotype import AnyGenotype, Genotype, Nb201Arch, load_genotype

_CONCAT = [2, 3, 4, 5]


def _g(normal: str, reduce: str, flavour: str = "standard") -> Genotype:
    def pairs(text: str) -> list[list]:
        out = []
        for item in text.split():
            op, pred = item.rsplit(":", 1)
            out.append([op, int(pred)])
        return out

    return Genotype.from_dict({"normal": pairs(normal), "normal_concat": _CONCAT, "reduce": pairs(reduce),
                               "reduce_concat": _CONCAT, "flavour": flavour}, source="built-in genotype")


# Each string lists op:predecessor pairs, two per intermediate node.
PUBLISHED: dict[str, Genotype] = {
    "ista_twostage": _g(
        "skip_connect:0 dil_conv_3x3:1 sep_conv_5x5:0 dil_conv_3x3:2 dil_conv_3x3:1 sep_conv_3x3:0 "
        "sep_conv_3x3:2 skip_connect:0",
        "avg_pool_3x3:0 sep_conv_5x5:1 dil_conv_5x5:2 max_pool_3x3:1 dil_conv_5x5:3 sep_conv_3x3:1 "
        "dil_conv_5x5:4 sep_conv_5x5:1"),
    "ista_onestage": _g(
        "skip_connect:0 dil_conv_3x3:1 sep_conv_3x3:1 dil_conv_5x5:2 avg_pool_3x3:3 sep_conv_3x3:1 "
        "sep_conv_5x5:1 sep_conv_3x3:2",
        "avg_pool_3x3:0 max_pool_3x3:1 skip_connect:0 max_pool_3x3:1 sep_conv_5x5:1 avg_pool_3x3:0 "
        "max_pool_3x3:0 dil_conv_5x5:2", flavour="one-stage"),
    "ista_imagenet": _g(
        "sep_conv_3x3:1 sep_conv_3x3:0 sep_conv_3x3:1 skip_connect:2 sep_conv_3x3:1 sep_conv_3x3:0 "
        "sep_conv_3x3:1 dil_conv_5x5:4",
        "skip_connect:0 sep_conv_3x3:1 dil_conv_5x5:2 sep_conv_3x3:0 sep_conv_3x3:0 skip_connect:2 "
        "sep_conv_3x3:2 skip_connect:3", flavour="one-stage"),
    "darts_v1": _g(
        "sep_conv_3x3:1 sep_conv_3x3:0 skip_connect:0 sep_conv_3x3:1 skip_connect:0 sep_conv_3x3:1 "
        "sep_conv_3x3:0 skip_connect:2",
        "max_pool_3x3:0 max_pool_3x3:1 skip_connect:2 max_pool_3x3:0 max_pool_3x3:0 skip_connect:2 "
        "skip_connect:2 avg_pool_3x3:0"),
    "darts_v2": _g(
        "sep_conv_3x3:0 sep_conv_3x3:1 sep_conv_3x3:0 sep_conv_3x3:1 sep_conv_3x3:1 skip_connect:0 "
        "skip_connect:0 dil_conv_3x3:2",
        "max_pool_3x3:0 max_pool_3x3:1 skip_connect:2 max_pool_3x3:1 max_pool_3x3:0 skip_connect:2 "
        "skip_connect:2 max_pool_3x3:1"),
    "pc_darts": _g(
        "sep_conv_3x3:1 skip_connect:0 sep_conv_3x3:0 dil_conv_3x3:1 sep_conv_5x5:0 sep_conv_3x3:1 "
        "avg_pool_3x3:0 dil_conv_3x3:1",
        "sep_conv_5x5:1 max_pool_3x3:0 sep_conv_5x5:1 sep_conv_5x5:2 sep_conv_3x3:0 sep_conv_3x3:3 "
        "sep_conv_3x3:1 sep_conv_3x3:2"),
}


def get_genotype(spec: str | Path) -> AnyGenotype:
    """A built-in genotype by name, a NAS-Bench-201 architecture string, or one read from a JSON file (a
    search's genotype.json, of either space)."""
    spec = str(spec)
    if spec in PUBLISHED:
        return PUBLISHED[spec]
    if spec.startswith("|"):
        return Nb201Arch.parse(spec)
    path = Path(spec).expanduser()
    if path.is_dir() and (path / "genotype.json").is_file():
        path = path / "genotype.json"  # a search run directory
    if not path.exists():
        raise UserError(f"--genotype {spec!r} is neither a built-in name ({', '.join(PUBLISHED)}) nor a file; "
                        "pass a name or the path of a genotype.json")
    return load_genotype(path)
