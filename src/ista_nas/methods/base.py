"""What every search method shares: its result, the benchmark record of an epoch's architecture, and the
result files written when the search ends."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from ..benchmark import Table, table_for
from ..engine.driver import Job
from ..engine.rundir import RunDir
from ..errors import UserError
from ..networks.protocols import DenseSupernet, SparseSupernet, TargetSupernet
from ..report import write_run_report
from ..spaces import SPACES, write_diagrams
from ..spaces.base import Checks, SearchSpace

if TYPE_CHECKING:
    from ..config import SearchConfig

log = logging.getLogger(__name__)


@dataclass
class SearchResult:
    genotype: Any
    run_dir: Path
    metrics: list[dict[str, Any]]


class SearchMethod(Job):
    """A search method: a ``Job`` whose result is a genotype. What the method requires of a config is declared
    here, beside its code (``checks``, ``validate_parts``), and which settings it alone reads beside their
    fields (``config``: a field's ``methods``); ``methods.validate`` applies both."""

    presets: ClassVar[dict[str, dict[str, Any]]] = {}  # its settings per preset, over the search's and the space's
    dense: ClassVar[bool] = False  # searches a dense supernet (every candidate runs)
    target: ClassVar[bool] = False  # searches the space's target supernet (its target_presets apply)

    @staticmethod
    def checks(cfg: "SearchConfig", space: SearchSpace) -> Checks:
        """(ok, message) pairs for this method's constraints on ``cfg``."""
        return []

    @staticmethod
    def validate_parts(cfg: "SearchConfig") -> None:
        """Once every check passed: validate what the method derives from ``cfg`` (raise a UserError)."""

    def __init__(self, cfg: "SearchConfig"):
        super().__init__(cfg)
        self.table: Table | None = table_of(cfg)  # read once, when validate checked it (before the data loads)
        self.missing: set[str] = set()

    def benchmark_record(self, genotype: Any) -> dict[str, Any]:
        """With ``--benchmark``: the table's metric and rank of ``genotype`` (None, and one warning, for an
        architecture the table lacks), for the epoch's record."""
        if self.table is None:
            return {}
        entry = self.table.get(genotype)
        if entry is None:
            key = self.table.key(genotype)
            if key not in self.missing:
                self.missing.add(key)
                log.warning("architecture %s is not in the benchmark table %s; recorded as null", key,
                            self.table.path)
            return {"benchmark": None, "benchmark_rank": None}
        return {"benchmark": entry.value, "benchmark_rank": entry.rank}

    def finish(self, run: RunDir, genotype: Any) -> SearchResult:
        """The searched cell's diagrams and the run's report beside its genotype.json."""
        if run.writes:
            write_diagrams(genotype, run.path)
        log.info("genotype: %s", genotype.to_dict())
        if self.table is not None and run.writes:
            entry = self.table.get(genotype)
            run.write_json("benchmark.json", {"table": str(self.table.path), "builtin": self.table.builtin,
                                              "metric": self.table.metric, "dense": self.dense,
                                              **(entry.to_dict() if entry else {"arch": self.table.key(genotype),
                                                                                "value": None})})
            if entry:
                log.info("benchmark %s of the found architecture: %.2f, rank %d of %d (best %.2f, mean %.2f)",
                         self.table.metric, entry.value, entry.rank, entry.size, entry.best, entry.mean)
        write_run_report(run)
        return SearchResult(genotype, run.path, run.read_metrics())


def build_supernet(cfg: "SearchConfig", data: Any, dense: bool = False, target: bool = False
                   ) -> SparseSupernet | DenseSupernet | TargetSupernet:
    """The supernet of the configured space a method searches, its weights drawn from ``cfg.seed``: sparse
    (ISTA-NAS two-stage), dense (every candidate runs: the DARTS baseline) or the target network (one-stage)."""
    torch.manual_seed(cfg.seed)
    space = SPACES[cfg.space]
    return (space.target_supernet if target else space.dense_supernet if dense else space.supernet)(cfg, data)


def table_of(cfg: "SearchConfig") -> Table | None:
    """The benchmark table the search records (``--benchmark`` FILE, checked: of the run's space; by default the
    space's built-in table where one ships), or None (``--benchmark none``, or no table for the space)."""
    table = table_for(SPACES[cfg.space], cfg.benchmark, cfg.arch_column, cfg.metric)
    if table is None:
        return None
    if table.space.name != cfg.space:
        raise UserError(f"--benchmark {cfg.benchmark} lists architectures of --space {table.space.name}, the search "
                        f"is of --space {cfg.space}; give a table of its space")
    return table
