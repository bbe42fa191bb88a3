"""The DARTS space's published genotypes, by name (a registry: no ``eval``).

Sources: ISTA-NAS's official repository (tools/genotypes.py) for the three ISTA-NAS cells; DARTS
(Liu et al., ICLR 2019) and PC-DARTS (Xu et al., ICLR 2020) repositories for theirs.
"""

from __future__ import annotations

from .genotype import Genotype

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
