"""Search methods, by name, and what starts, resumes and configures them. A new method is one module (a
``SearchMethod`` subclass, run by the engine's driver) and one entry in ``METHODS``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..benchmark import NO_TABLE
from ..config import SearchConfig
from ..fields import resolve
from ..engine import driver
from ..engine.rundir import RunDir
from ..errors import UserError
from ..files import read_json, refuse_link
from ..limits import check_size
from ..spaces import SPACES, check_network, machine_memory
from .base import SearchMethod, SearchResult, table_of
from .darts import Darts
from .one_stage import OneStage
from .two_stage import TwoStage

METHODS: dict[str, type[SearchMethod]] = {"two-stage": TwoStage, "one-stage": OneStage, "darts": Darts}


def validate(cfg: SearchConfig) -> SearchConfig:
    """``cfg.validate()``, who owns each setting (``cfg.owned``), what its method and its space require of it
    together, and its benchmark table (read here, once: the method records with the same reading); returns
    ``cfg``. Everything here runs before any data loads."""
    cfg.validate()
    if cfg.method not in METHODS:
        raise UserError(f"unknown method {cfg.method!r}; choose one of {', '.join(METHODS)}")
    method, space = METHODS[cfg.method], SPACES[cfg.space]
    for ok, message in cfg.owned(settings(cfg.preset, method=cfg.method, space=cfg.space)):
        if not ok:
            raise UserError(message)
    check_search_size(cfg, space)
    smallest = space.smallest_group(method.supernet == "dense")
    checks = [(cfg.sparsity < smallest, f"--sparsity (s) must be in 1..{smallest - 1}: the smallest decision group "
                                        f"has only {smallest} candidates, got {cfg.sparsity}"),
              (cfg.sparsity <= cfg.proj_dims, f"--sparsity (s) must be at most --proj-dims (m): a LASSO solution has "
                                              f"at most m nonzeros, got s={cfg.sparsity} > m={cfg.proj_dims}")]
    for ok, message in method.checks(cfg, space) + space.check_search(cfg) + checks:
        if not ok:
            raise UserError(message)
    if cfg.benchmark not in ("", NO_TABLE) and not space.example:
        raise UserError(f"--benchmark needs a space whose architectures have a written form; --space {space.name} "
                        "has none (use ista-nas correlate with training runs as the truth)")
    method.validate_parts(cfg)
    table_of(cfg)  # a bad table fails here, before the data loads
    return cfg


MAX_CANDIDATE_OPS = 100_000  # 50x the paper's largest supernet (the one-stage DARTS cell network: 1,960)


def check_search_size(cfg: SearchConfig, space: Any) -> None:
    """Refuse, from a formula and before anything is built, a supernet of more candidate ops than an hour builds,
    or measurement matrices larger than this machine's memory; and the one size rule for its network
    (``spaces.check_network``)."""
    check_size(cfg.channels, cfg.layers)
    ops, entries = space.search_size(cfg)
    if ops > MAX_CANDIDATE_OPS:
        nodes = "nodes" in space.own_fields  # the DARTS cell's nodes size its supernet too
        raise UserError(f"--layers {cfg.layers}{f' --nodes {cfg.nodes}' if nodes else ''}: the supernet would build "
                        f"{ops:,} candidate ops (the paper's largest: 1,960; at most {MAX_CANDIDATE_OPS:,}); lower "
                        f"--layers{' or --nodes' if nodes else ''}")
    if entries * 8 * 4 > machine_memory():  # float64 A, its float32 copy, the solver's work
        raise UserError(f"--proj-dims {cfg.proj_dims}: the measurement matrices would take {entries * 32 / 2**30:.0f} "
                        "GiB, more than this machine's memory; lower --proj-dims (m; the paper's: 7)")
    check_network(cfg.space, cfg.channels, cfg.layers)


def make_config(preset: str = "paper", **overrides: Any) -> SearchConfig:
    """A validated SearchConfig from a preset (``settings``)."""
    return validate(settings(preset, **overrides))


def settings(preset: str = "paper", **overrides: Any) -> SearchConfig:
    """The SearchConfig of a preset, layered: the search's, the space's, the method's (those of ``overrides``:
    two-stage in the darts space by default), the space's for a method of its target supernet, then
    ``overrides``; not validated yet (``search`` validates it)."""
    name = overrides.get("method", "two-stage")
    method, space = METHODS.get(name), SPACES.get(overrides.get("space", "darts"))
    tables = [("", SearchConfig.PRESETS)]
    tables += [(f"--space {space.name}", space.search_presets)] if space else []
    tables += [(f"--method {name}", method.presets)] if method else []
    tables += [(f"--space {space.name} --method {name}", space.target.presets)] if method and space and \
        space.target and method.supernet == "target" else []
    return SearchConfig(**resolve(preset, tables, overrides))


def stored_settings(path: str | Path) -> dict[str, Any]:
    """The settings of a search's config.json (``search --config``): a JSON object of search settings, each of its
    type, none retired or unknown; a UserError naming the file otherwise. Validated with the flags over it."""
    source = str(path)
    data = read_json(path, "search config", "give the config.json of an ista-nas search run")
    if not isinstance(data, dict):
        raise UserError(f"{source} does not hold a settings object; give the config.json of an ista-nas search run")
    SearchConfig.check_stored(data, source)
    unknown = SearchConfig.unknown_keys(data)
    if unknown:
        raise UserError(f"{source} has settings a search does not take ({', '.join(unknown[:3])}"
                        f"{', ...' if len(unknown) > 3 else ''}); give the config.json of a search run")
    return data


def search(cfg: SearchConfig, out: str | Path) -> SearchResult:
    """Run the search ``cfg.method`` names from scratch into the new run directory ``out``."""
    return _start(validate(cfg), out)


def _start(cfg: SearchConfig, out: str | Path) -> SearchResult:
    """``search`` of a validated ``cfg``."""
    return driver.start(METHODS[cfg.method](cfg), out)


def resume(run_dir: str | Path, **overrides: Any) -> SearchResult:
    """Continue the search in ``run_dir`` from its last checkpoint. ``overrides`` may change epochs and device."""
    return driver.resume(run_dir, lambda cfg: METHODS[cfg.method](cfg), SearchConfig, overrides,
                         kind=lambda cfg: METHODS[cfg.method].kind, validate=validate)


def search_seeds(cfg: SearchConfig, seeds: list[int], out: str | Path) -> list[SearchResult]:
    """The search ``cfg`` once per seed, each into its own run directory ``out``/seed-S. Started again with the
    same settings, it resumes every unfinished seed where its checkpoint stopped and leaves finished ones as
    they are (their results are read back)."""
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds needs distinct seeds, got {' '.join(map(str, seeds)) or 'none'}")
    seeded_configs = [validate(dataclasses.replace(cfg, seed=seed)) for seed in seeds]  # every seed before any run
    refuse_link(Path(out), "--out")
    if Path(out).exists() and not Path(out).is_dir():
        raise UserError(f"--out {out} exists and is not a folder; give a new folder (or the --out of the same "
                        "--seeds search to continue it)")
    paths = [Path(out) / f"seed-{seed}" for seed in seeds]
    for path, seeded in zip(paths, seeded_configs):  # and every new run directory
        if not (path / "config.json").is_file():
            RunDir.check_new(path, seeded.to_dict())
    results = []
    for path, seeded in zip(paths, seeded_configs):
        if not (path / "config.json").is_file():
            results.append(_start(seeded, path))
            continue
        stored = RunDir.open(path)[1]
        SearchConfig.check_stored(stored, str(path / "config.json"))
        mine = seeded.to_dict()
        differs = sorted(k for k in set(stored) | set(mine) if k != "device" and stored.get(k) != mine.get(k))
        if differs:
            raise UserError(f"{path} holds a search with other settings ({', '.join(differs)}); give the same "
                            "settings to continue it, or another --out")
        results.append(resume(path))
    return results
