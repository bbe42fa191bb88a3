"""The run driver: one loop that every search method and the train command run under.

A ``Job`` (a search method, or training) says what an epoch is; the driver owns everything around it, once:
starting a run (``start``: join the process group, refuse an ``--out`` that cannot hold it) or resuming one
(``resume``: read its config and checkpoint on rank 0), the device, the run directory, restoring a checkpoint
(exact resume, also inside an epoch), the epoch loop with its progress bar, Ctrl-C (the first one checkpoints
the very step it stopped after), metrics and checkpoints in a crash-safe order, and the result. Read
``start``, ``resume`` and ``drive`` top to bottom.

    job.setup(ctx)                  data, network, optimisers (before the run directory opens)
    job.opened(run)                 files written once the run directory exists
    job.load(checkpoint)            a resumed run's state
    while job.more(done):
        plan = job.begin_epoch(e)   what this epoch runs: step, batches, progress-bar label
        job.end_epoch(e, stats)     evaluation, recovery, ...: the epoch's metrics record
        job.state(finished)         what the checkpoint holds besides epoch, config and partial
    job.result(run)                 results files; what the caller gets back
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypedDict

from torch import Tensor

from .distributed import Dist, on_main
from .graphs import use_graphs
from .loop import EpochInterrupted, graceful_stop, ignore_interrupts, resume_point, run_epoch
from ..errors import UserError
from .data import data_identity
from .rundir import RunDir, lock, unlock

log = logging.getLogger(__name__)


class Checkpoint(TypedDict, total=False):
    """The entries every checkpoint has (written by ``drive``); a job's ``state`` adds its own, one of them
    named by its ``entry``."""

    epoch: int  # epochs finished
    config: dict[str, Any]  # the run's resolved config (a checkpoint of another run is refused)
    partial: dict[str, Any]  # Ctrl-C inside epoch ``epoch``: the step to resume at, the sums, the RNG states
    min_epochs: int  # the least --epochs that continues the run, where --epochs counts only some of its epochs


@dataclass
class EpochPlan:
    """One epoch of a job: ``step(*batch)`` for every batch, ``means`` turns the summed statistics into
    the values the bar shows and the record stores."""

    step: Callable[..., dict[str, Tensor]]
    batches: Iterable[Any]
    total: int
    desc: str
    means: Callable[[dict[str, float]], dict[str, float]]


class Job:
    """What the driver runs. ``entry`` names the checkpoint entry every checkpoint of the job holds (``--resume``
    refuses a checkpoint without it: one written by another command)."""

    entry: ClassVar[str]

    def __init__(self, cfg: Any):
        self.cfg = cfg
        self.run: RunDir | None = None

    def setup(self, ctx: Dist) -> None:
        """Load the data and build the network and optimisers on ``ctx``'s device."""
        raise NotImplementedError

    def opened(self, run: RunDir) -> None:
        """The run directory exists (rank 0 writes, the other ranks hold a read-only view)."""
        self.run = run

    def load(self, checkpoint: dict[str, Any]) -> None:
        """Restore the state ``state`` wrote (a KeyError, ValueError or RuntimeError: it is another run's)."""
        raise NotImplementedError

    def start_line(self) -> str:
        """The line logged when the loop starts."""
        raise NotImplementedError

    def more(self, done: int) -> bool:
        """Another epoch after ``done`` finished ones?"""
        return done < self.cfg.epochs

    def begin_epoch(self, epoch: int) -> EpochPlan:
        raise NotImplementedError

    def end_epoch(self, epoch: int, stats: dict[str, float]) -> dict[str, Any]:
        """After the epoch's steps: the metrics record (the driver adds ``epoch`` and ``seconds``)."""
        raise NotImplementedError

    def state(self, finished: int, stopped: bool = False) -> Any:
        """The checkpoint's entries after ``finished`` epochs, or (``stopped``) inside the next one."""
        raise NotImplementedError

    def log_epoch(self, record: dict[str, Any]) -> None:
        raise NotImplementedError

    def result(self, run: RunDir) -> Any:
        raise NotImplementedError


def start(job: Job, out: str | Path, check: Callable[[], Any] | None = None) -> Any:
    """Run ``job`` (its config validated) from scratch into the new run directory ``out``. Before any data
    loads, rank 0 runs ``check`` and refuses an ``out`` that cannot hold this run; the directory is created
    once the data has loaded (and checked again then: the load takes minutes)."""
    ctx = Dist.setup(job.cfg.device)
    config = job.cfg.record()
    on_main(lambda: (check() if check else None, RunDir.check_new(out, config), lock(out)))
    return drive(job, ctx, lambda: RunDir.create(out, config), None, out)


def resume(path: str | Path, make_job: Callable[[Any], Job], config_cls: type, overrides: dict[str, Any],
           entry: Callable[[Any], str], validate: Callable[[Any], Any] | None = None) -> Any:
    """Continue the run in ``path`` from its last checkpoint: rank 0 reads its config (``overrides`` applied,
    checked by ``validate``) and checkpoint (``RunDir.resume``), every rank gets them and runs
    ``make_job(config)`` on the stored device (or the one ``overrides`` names)."""
    ctx = Dist.setup()
    run, cfg, checkpoint = on_main(lambda: _same_data(*RunDir.resume(path, config_cls, overrides, entry, validate)))
    return drive(make_job(cfg), ctx.on(cfg.device), lambda: run.rewrite_config(cfg.record()), checkpoint, path)


def _same_data(run: RunDir, cfg: Any, checkpoint: dict[str, Any]) -> tuple[RunDir, Any, dict[str, Any]]:
    """A resume reads the data its run started with (the identity recorded in data.json), else one line."""
    recorded = run.read_data_identity()
    if recorded is not None and recorded != data_identity(cfg.dataset):
        unlock(run.path)
        raise UserError(f"the data of {run.path} ({cfg.dataset}) changed since the run started (images added, "
                        "removed, moved or rewritten): --resume continues exactly only on the same data; restore it, "
                        "or start a new run")
    return run, cfg, checkpoint


def drive(job: Job, ctx: Dist, open_run: Callable[[], RunDir], checkpoint: dict[str, Any] | None,
          path: str | Path) -> Any:
    """Run ``job`` to the end on ``ctx`` in the run directory ``open_run()`` opens at ``path`` (on rank 0, which
    holds its lock until the run ends; the other ranks get a read-only view); ``checkpoint`` continues a run."""
    try:
        return _drive(job, ctx, open_run, checkpoint)
    finally:
        if ctx.main:
            unlock(path)


def _drive(job: Job, ctx: Dist, open_run: Callable[[], RunDir], checkpoint: dict[str, Any] | None) -> Any:
    cfg = job.cfg
    if cfg.tensorboard:
        on_main(lambda: RunDir.summary_writer() and None)  # refused before the data loads
    use_graphs(cfg.cuda_graphs, ctx)  # --cuda-graphs on where graphs cannot run: refused before the data loads
    job.setup(ctx)
    run = on_main(open_run)
    run = run if ctx.main else RunDir(run.path, writes=False)
    if cfg.tensorboard:
        run.enable_tensorboard()
    job.opened(run)
    run.set_finished(False)
    if checkpoint is None:
        run.write_json("data.json", {"dataset": cfg.dataset, "identity": data_identity(cfg.dataset)})
    done = run.restore(checkpoint, job.load)
    log.info("%s, run directory %s", job.start_line(), run.path)
    partial = (checkpoint or {}).get("partial")

    saved = checkpoint  # the checkpoint the run directory holds now (what the resume hint names)

    def save(finished: int, partial: dict[str, Any] | None = None) -> None:
        nonlocal saved
        checkpoint = Checkpoint(epoch=finished, config=cfg.record())
        checkpoint.update(job.state(finished, stopped=partial is not None))
        if partial is not None:
            checkpoint["partial"] = partial
        run.save_checkpoint(checkpoint)
        saved = checkpoint

    try:
        with graceful_stop(ctx.world == 1):  # several processes would have to agree on the step: not offered
            while job.more(done):
                began, epoch = time.perf_counter(), done
                plan = job.begin_epoch(epoch)
                resume = resume_point(partial, epoch, ctx.main)
                try:
                    stats = run_epoch(plan.step, plan.batches, plan.total, plan.desc, plan.means,
                                      reduce=ctx.sum_stats, show=ctx.main, interruptible=True, resume=resume)
                except EpochInterrupted as stop:  # Ctrl-C: keep this very step
                    save(epoch, partial={"epoch": epoch, **stop.progress})
                    raise
                record = {"epoch": epoch + 1, **job.end_epoch(epoch, stats)}
                record["seconds"] = round(time.perf_counter() - began, 3)
                done = epoch + 1
                # Metrics first, checkpoint last: a crash in between is undone by the resume trimming the metrics.
                run.append_metrics(record)
                save(done)
                job.log_epoch(record)
    except KeyboardInterrupt:
        with ignore_interrupts():  # a further Ctrl-C (the second of a double one) must not cut the hint short
            run.report_interrupt(saved)
        raise
    result = job.result(run)
    run.set_finished(True)
    return result
