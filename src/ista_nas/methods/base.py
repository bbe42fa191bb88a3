"""What every search method shares: its result, and the result files written when the search ends."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..engine.driver import Job
from ..engine.rundir import RunDir
from ..report import write_run_report
from ..spaces import write_diagrams
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
    here, beside its code; ``methods.validate`` applies it."""

    presets: ClassVar[dict[str, dict[str, Any]]] = {}  # its settings per preset, over the search's and the space's
    dense: ClassVar[bool] = False  # searches a dense supernet (every candidate runs)
    streams: ClassVar[bool] = False  # can read its data from disk every epoch (--stream)
    # (settings only this method reads, what they do): other methods refuse them away from their defaults
    exclusive: ClassVar[tuple[tuple[str, ...], str]] = ((), "")

    @staticmethod
    def checks(cfg: "SearchConfig", space: SearchSpace) -> Checks:
        """(ok, message) pairs for this method's constraints on ``cfg``."""
        return []

    @staticmethod
    def validate_parts(cfg: "SearchConfig") -> None:
        """Once every check passed: validate what the method derives from ``cfg`` (raise a UserError)."""

    def finish(self, run: RunDir, genotype: Any) -> SearchResult:
        """The searched cell's diagrams and the run's report beside its genotype.json."""
        if run.writes:
            write_diagrams(genotype, run.path)
        log.info("genotype: %s", genotype.to_dict())
        write_run_report(run)
        return SearchResult(genotype, run.path, run.read_metrics())
