"""Search methods, by name, and what starts, resumes and configures them. A new method is one module (a
``SearchMethod`` subclass, run by the engine's driver, listing its settings) and one entry in ``METHODS``.

``SearchConfig``, a search's settings, is composed here from every search's (``base.SearchSettings``) and the
settings every registered method and space lists (``fields.Settings`` groups, each declared beside the code that
reads it): one flat dataclass, so every setting is a flag and a key of a run's config.json. Who owns a setting
is read from the same lists (``owned``)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from ..benchmark import NO_TABLE
from ..config import COMMAND_KEY, RunConfig, TrainConfig
from ..config import check_types as check_types_of
from ..fields import resolve
from ..engine import driver
from ..engine.rundir import RunDir
from ..errors import UserError
from ..files import read_json, refuse_link
from ..limits import check_size
from ..spaces import SPACES, check_network, machine_memory
from .base import SearchMethod, SearchResult, SearchSettings, table_of
from .budget import budget_of
from .darts import Darts
from .one_stage import OneStage
from .two_stage import TwoStage

METHODS: dict[str, type[SearchMethod]] = {"two-stage": TwoStage, "one-stage": OneStage, "darts": Darts}

log = logging.getLogger(__name__)

_PARTS = tuple(dict.fromkeys(part for plugin in (*METHODS.values(), *SPACES.values()) for part in plugin.settings))
# The plug-ins' settings follow every search's (fields come in reverse base order), in registry order.
SearchConfig = dataclasses.dataclass(type("SearchConfig", (*reversed(_PARTS), SearchSettings), {
    "__module__": __name__, "__doc__": "``ista-nas search``: every search's settings and each plug-in's (composed "
                                       "from the registries; ``owned`` says which plug-in reads which)."}))


def _listed() -> dict[str, tuple[list[str], list[str], str]]:
    """Per setting some plug-in lists: the methods listing it, the spaces listing it, and what it is (its
    group's ``why``). Read from the registries once."""
    found: dict[str, tuple[list[str], list[str], str]] = {}
    for position, plugins in enumerate((METHODS, SPACES)):
        for name, plugin in plugins.items():
            for part in plugin.settings:
                for f in dataclasses.fields(part):
                    found.setdefault(f.name, ([], [], part.why))[position].append(name)
    return found


_LISTED = _listed()


def owners(name: str) -> tuple[list[str], list[str], str]:
    """Who reads the search setting ``name``: the methods listing it, the spaces listing it (empty: every one),
    and what it is (its group's ``why``)."""
    return _LISTED.get(name, ([], [], ""))


def owned(cfg: SearchConfig, baseline: SearchConfig) -> list[str]:
    """The one check of who owns a setting: a setting that the chosen method or space does not list keeps the
    value ``baseline`` (the same preset, method and space without flags) gives it. One refusal per setting given,
    naming the flag, its owner and the fix."""
    refusals = []
    for f in dataclasses.fields(cfg):
        if getattr(cfg, f.name) == getattr(baseline, f.name):
            continue
        flag, (methods, spaces, why) = f"--{f.name.replace('_', '-')}", owners(f.name)
        if methods and cfg.method not in methods:
            refusals.append(f"{flag} is a setting of --method {' and '.join(methods)} ({why}), unused by --method "
                            f"{cfg.method}: drop it or use --method {methods[0]}")
        if spaces and cfg.space not in spaces:
            refusals.append(f"{flag} is a setting of --space {spaces[0]} only, unused by --space {cfg.space}: drop "
                            f"it or use --space {spaces[0]}")
    return refusals


def check_types(config: Any, source: str) -> dict[str, Any]:
    """A run's stored settings (a search's or a training run's) as readers rely on them: ``config.check_types``
    over both commands' settings."""
    return check_types_of(config, source, (SearchConfig, TrainConfig))


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """What a run is, from its config.json: the command that made it, a search's method, its space, and how that
    was read (``rule``: "recorded", or the rule applied to a run written before runs recorded their command)."""

    command: str  # "search" or "train"
    method: str | None  # a search's method; None for a training run
    space: str
    rule: str = "recorded"

    @property
    def search(self) -> bool:
        return self.command == SearchConfig.COMMAND


# Runs written before config.json recorded the command: the rules that read them, in one place.
LEGACY_COMMAND = "no command recorded: a config with a genotype and no method is a training run's, else a search's"
LEGACY_SPACE = "no space recorded: the DARTS cell space, the only one then"
LEGACY_METHOD = "no method recorded: two-stage, the only method then"


def run_record(config: Any, source: str) -> RunRecord:
    """The record of a run's stored ``config`` (checked by ``check_types``, a UserError naming ``source``): read
    from the keys its command wrote, or, for a run of an earlier version that lacks them, by the rules above
    (logged with the rule applied). Every reader of a finished run asks here what the run is."""
    check_types(config, source)
    rules = []
    command = config.get(COMMAND_KEY)
    if command is None:
        command = TrainConfig.COMMAND if "genotype" in config and "method" not in config else SearchConfig.COMMAND
        rules.append(LEGACY_COMMAND)
    if "space" not in config:
        rules.append(LEGACY_SPACE)
    method = None
    if command == SearchConfig.COMMAND:
        method = config.get("method")
        if method is None:
            method = SearchSettings.method  # the field default was the only method then
            rules.append(LEGACY_METHOD)
    record = RunRecord(command, method, config.get("space", RunConfig.space), "; ".join(rules) or "recorded")
    if rules:
        log.debug("%s: read by the rule for runs of earlier versions (%s)", source, record.rule)
    return record


def evaluation_fields(record: RunRecord) -> tuple[str, str]:
    """The (C, L) fields of the network a run's genotype is evaluated at, as its method says: a search whose
    method retrains the genotype (the methods listing ``RetrainSize``), the budget network's; a training run,
    or a search that trains its own network, the run's own."""
    if record.search and record.method in owners("budget_channels")[0]:
        return "budget_channels", "budget_layers"
    return "channels", "layers"


def validate(cfg: SearchConfig) -> SearchConfig:
    """Every setting's type and rule, who owns each setting (``owned``), what the method and the space require of
    it, the checks of the settings groups they list, and its benchmark table (read here, once: the method
    records with the same reading); returns ``cfg``. Everything here runs before any data loads."""
    cfg.check_rules()
    cfg.check_parts({RunConfig, SearchSettings})  # what every run and every search requires
    if cfg.method not in METHODS:
        raise UserError(f"unknown method {cfg.method!r}; choose one of {', '.join(METHODS)}")
    method, space = METHODS[cfg.method], SPACES[cfg.space]
    for refusal in owned(cfg, settings(cfg.preset, method=cfg.method, space=cfg.space)):
        raise UserError(refusal)
    check_search_size(cfg, space)
    smallest = space.smallest_group(method.variant == "dense")
    checks = [(cfg.sparsity < smallest, f"--sparsity (s) must be in 1..{smallest - 1}: the smallest decision group "
                                        f"has only {smallest} candidates, got {cfg.sparsity}")]
    for ok, message in method.checks(cfg, space) + space.check_search(cfg) + checks:
        if not ok:
            raise UserError(message)
    cfg.check_parts({*method.settings, *space.settings})  # each plug-in's own checks of its settings
    if cfg.benchmark not in ("", NO_TABLE) and not space.example:
        raise UserError(f"--benchmark needs a space whose architectures have a written form; --space {space.name} "
                        "has none (use ista-nas correlate with training runs as the truth)")
    method.validate_parts(cfg)
    table_of(cfg)  # a bad table fails here, before the data loads
    budget_of(cfg, method.variant)  # so does a budget nothing meets (its latency table read and fitted here, once)
    return cfg


MAX_CANDIDATE_OPS = 100_000  # 50x the paper's largest supernet (the one-stage DARTS cell network: 1,960)


def check_search_size(cfg: SearchConfig, space: Any) -> None:
    """Refuse, from a formula and before anything is built, a supernet of more candidate ops than an hour builds,
    or measurement matrices larger than this machine's memory; and the one size rule for its network
    (``spaces.check_network``)."""
    check_size(cfg.channels, cfg.layers)
    ops, entries = space.search_size(cfg)
    if ops > MAX_CANDIDATE_OPS:
        nodes = space.name in owners("nodes")[1]  # the DARTS cell's nodes size its supernet too
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
    name = overrides.get("method", SearchSettings.method)
    method, space = METHODS.get(name), SPACES.get(overrides.get("space", SearchSettings.space))
    tables = [("", SearchSettings.PRESETS)]
    tables += [(f"--space {space.name}", space.search_presets)] if space else []
    tables += [(f"--method {name}", method.presets)] if method else []
    tables += [(f"--space {space.name} --method {name}", space.target.presets)] if method and space and \
        space.target and method.variant == "target" else []
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
    return {k: v for k, v in SearchConfig.current(data).items() if k != COMMAND_KEY}


def search(cfg: SearchConfig, out: str | Path) -> SearchResult:
    """Run the search ``cfg.method`` names from scratch into the new run directory ``out``."""
    return _start(validate(cfg), out)


def _start(cfg: SearchConfig, out: str | Path) -> SearchResult:
    """``search`` of a validated ``cfg``."""
    return driver.start(METHODS[cfg.method](cfg), out)


def resume(run_dir: str | Path, **overrides: Any) -> SearchResult:
    """Continue the search in ``run_dir`` from its last checkpoint. ``overrides`` may change epochs and device."""
    return driver.resume(run_dir, lambda cfg: METHODS[cfg.method](cfg), SearchConfig, overrides,
                         entry=lambda cfg: METHODS[cfg.method].entry, validate=validate)


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
            RunDir.check_new(path, seeded.record())
    results = []
    for path, seeded in zip(paths, seeded_configs):
        if not (path / "config.json").is_file():
            results.append(_start(seeded, path))
            continue
        stored = RunDir.open(path)[1]
        SearchConfig.check_stored(stored, str(path / "config.json"))
        stored = SearchConfig.current(stored)
        mine = seeded.to_dict()  # the settings: a run of an earlier version records no command
        differs = sorted(k for k in set(stored) | set(mine) if k not in ("device", COMMAND_KEY)
                         and stored.get(k) != mine.get(k))
        if differs:
            raise UserError(f"{path} holds a search with other settings ({', '.join(differs)}); give the same "
                            "settings to continue it, or another --out")
        results.append(resume(path))
    return results
