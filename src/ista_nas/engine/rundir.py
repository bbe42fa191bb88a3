"""The run directory: resolved config, per-epoch metrics (JSON lines), results and the checkpoint.

    RUN/config.json        the resolved configuration
    RUN/metrics.jsonl      one JSON object per finished epoch
    RUN/checkpoint.pt      the last finished epoch, written atomically
    RUN/<results>          written by the method (genotype.json, ...)
    RUN/status.json        {"finished": false} while the run goes on or after it stopped early, true at its end
    RUN/data.json          the dataset and (an image folder) the digest of its listing, checked by --resume
    RUN/.lock              the advisory lock of the process writing the run (its pid inside)

Files only: the driver decides which process touches them. With several processes only rank 0 writes: the
other ranks hold a read-only ``RunDir`` (``writes`` False) whose write methods do nothing, so the methods
call them unconditionally.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..files import LIMITS, open_own, parse_json, read_bytes, read_json, refuse_link
from ..files import atomic_write_bytes
from .checkpoint import atomic_write_json, load_latest_good, previous_path, save_checkpoint

log = logging.getLogger(__name__)
RESUMABLE = ("epochs", "device", "cuda_graphs", "tensorboard")  # what --resume may change; the rest continues as stored
LOCK = ".lock"
_HELD: dict[Path, tuple[int, bool]] = {}  # run directories this process holds: lock descriptor, created by lock


def lock(path: str | Path) -> None:
    """Hold the advisory lock of the run directory ``path`` (created if missing) until ``unlock`` or the process
    ends (the system drops the lock of a dead process, so a killed run never blocks the next). A run directory
    another live process holds is refused in one line; holding one twice in a process is one hold."""
    refuse_link(Path(path).expanduser(), "run directory")
    path = Path(path).expanduser().resolve()
    if path in _HELD:
        return
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = open_own(path / LOCK, os.O_RDWR | os.O_CREAT)  # a planted link or hard link there is refused
    except OSError as exc:
        raise UserError(f"cannot write in {path}: {exc.strerror}; choose another --out (a writable folder)") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        error = busy(path, fd)
        os.close(fd)
        raise error from None
    try:  # the holder's pid, for the next one's message; and a folder that takes no new file is refused now
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe"):  # exclusive, random name: follows no link
            pass
    except OSError as exc:
        os.close(fd)
        raise UserError(f"cannot write in {path}: {exc.strerror}; make it writable or choose another --out") from None
    _HELD[path] = fd, created


def busy(path: Path, fd: int) -> UserError:
    """The refusal of the run directory ``path`` whose lock file, open at ``fd``, a live process holds."""
    pid = os.read(fd, 32).decode(errors="replace").strip() or "unknown"  # the holder wrote its pid there
    return UserError(f"{path} is being written by another ista-nas process (pid {pid}); wait for it to end, or "
                     "choose another --out")


def refuse_held(path: Path) -> None:
    """Refuse the run directory ``path`` while another live process holds its lock, asked without taking it (a
    shared lock is refused only while a writer holds its exclusive one)."""
    if path.expanduser().resolve() in _HELD:
        return
    try:
        fd = os.open(path / LOCK, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        raise busy(path, fd) from None
    finally:
        os.close(fd)  # drops the shared lock, if taken


def whole(record: dict[str, Any]) -> bool:
    """Does a metrics record hold the types every reader relies on (an integer epoch; a number, or null, for the
    seconds and every loss and accuracy)? A hand-edited line that does not counts as damaged."""
    epoch = record.get("epoch", 0)
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch < 2**31:
        return False
    numeric = [v for k, v in record.items() if k == "seconds" or k.endswith(("_loss", "_acc", "_top1", "_top5"))]
    return all(v is None or (isinstance(v, float) and math.isfinite(v)) or
               (isinstance(v, int) and not isinstance(v, bool) and abs(v) < 2**53) for v in numeric)


@contextlib.contextmanager
def default_out(out: str | None, prefix: str) -> Iterator[str]:
    """``out``, or when it is None the default run directory ``PREFIX-DATE-TIME`` (``-2``, ``-3``... when taken),
    the first name this process creates itself: ``mkdir`` fails for all but one of the runs that pick a name at
    once, so two runs started in the same second never share a folder. A default folder the run left empty (it
    was refused) is removed on the way out."""
    if out is not None:
        yield out
        return
    stem = time.strftime(f"{prefix}-%Y%m%d-%H%M%S")
    name, n = stem, 1
    while True:
        try:
            Path(name).parent.mkdir(parents=True, exist_ok=True)
            Path(name).mkdir()
            break
        except FileExistsError:
            n += 1
            name = f"{stem}-{n}"
        except OSError as exc:
            raise UserError(f"cannot create run directory {name}: {exc.strerror}; choose a writable --out") from None
    try:
        yield name
    finally:
        with contextlib.suppress(OSError):  # it holds the run
            Path(name).rmdir()


def unlock(path: str | Path) -> None:
    """Drop the lock ``lock`` took. A run that never wrote its config (refused while its data loaded) leaves
    nothing behind: the lock file goes, and the folder too when ``lock`` created it."""
    path = Path(path).expanduser().resolve()
    fd, created = _HELD.pop(path, (None, False))
    if fd is None:
        return
    try:
        if not (path / "config.json").exists():
            (path / LOCK).unlink(missing_ok=True)
            if created and not any(path.iterdir()):
                path.rmdir()
    except OSError:
        pass  # the folder is left as it is
    finally:
        os.close(fd)  # closing the descriptor drops the lock


class RunDir:
    def __init__(self, path: str | Path, writes: bool = True):
        self.path = Path(path).expanduser()
        self.writes = writes
        self.tensorboard: Any = None  # a SummaryWriter after enable_tensorboard()
        self.config_path = self.path / "config.json"
        self.metrics_path = self.path / "metrics.jsonl"
        self.checkpoint_path = self.path / "checkpoint.pt"

    @classmethod
    def check_new(cls, path: str | Path, config: dict[str, Any]) -> "RunDir":
        """Refuse a directory that already holds a run or other files; creates nothing."""
        run = cls(path)
        refuse_link(run.path, "--out")
        refuse_held(run.path)
        if run.config_path.is_file():
            try:
                stored = read_json(run.config_path, "run config", "the run directory is damaged")
            except UserError:  # unreadable, not UTF-8, not JSON
                stored = None
            if stored == config:
                if not run.checkpoint_path.exists() and not previous_path(run.checkpoint_path).exists():
                    return run  # the same run stopped before its first checkpoint: start it again
                raise UserError(f"{run.path} already holds this run; continue it with --resume {run.path} or "
                                "choose a new --out")
            raise UserError(f"{run.path} holds a different run (its config.json differs); choose another --out "
                            f"or continue that run with --resume {run.path}")
        elif run.path.exists() and (not run.path.is_dir() or any(p.name != LOCK for p in run.path.iterdir())):
            raise UserError(f"--out {run.path} exists and is not an empty directory; choose a new --out")
        return run

    @classmethod
    def create(cls, path: str | Path, config: dict[str, Any]) -> "RunDir":
        """A fresh run directory holding ``config`` (after the same checks as ``check_new``)."""
        run = cls.check_new(path, config)
        try:
            run.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create run directory {run.path}: {exc.strerror}; choose another --out") from None
        atomic_write_json(run.config_path, config)
        run.keep_metrics_before(1)  # a restart of a run that died before its first checkpoint starts clean
        return run

    @classmethod
    def open(cls, path: str | Path) -> tuple["RunDir", dict[str, Any]]:
        """An existing run directory and its stored config (for --resume)."""
        run = cls(path)
        if not run.path.is_dir():
            raise UserError(f"{run.path} is not a run directory (not a folder); give the --out folder of an "
                            "ista-nas search or train run")
        if not run.config_path.is_file():
            raise UserError(f"{run.path} is not a run directory (no config.json); give the --out folder of an "
                            "ista-nas search or train run")
        config = read_json(run.config_path, "run config", "the run directory is damaged")
        if not isinstance(config, dict):
            raise UserError(f"{run.config_path} does not hold a config object; the run directory is damaged")
        return run, config

    def read_data_identity(self) -> str | None:
        """The data identity the run recorded when it started (data.json); None if it recorded none."""
        try:
            data = read_json(self.path / "data.json", "run data record", "the run directory is damaged")
        except UserError:
            return None
        return data.get("identity") if isinstance(data, dict) and isinstance(data.get("identity"), str) else None

    def set_finished(self, finished: bool) -> None:
        """Record whether the run has reached its end (``finished``: readers refuse or mark a run that has not)."""
        self.write_json("status.json", {"finished": finished})

    def finished(self) -> bool | None:
        """Has the run reached its end? None for a run written before status.json existed, or a damaged one."""
        try:
            status = read_json(self.path / "status.json", "run status", "the run directory is damaged")
        except UserError:
            return None
        return status.get("finished") if isinstance(status, dict) and isinstance(status.get("finished"), bool) \
            else None

    def write_json(self, name: str, obj: Any) -> Path:
        path = self.path / name
        if self.writes:
            atomic_write_json(path, obj)
        return path

    @staticmethod
    def summary_writer() -> type:
        """TensorBoard's SummaryWriter, or the UserError saying how to install it (checked before a run starts)."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("--tensorboard needs the tensorboard package: "
                            "pip install 'ista-nas[tensorboard]'") from None
        return SummaryWriter

    def enable_tensorboard(self) -> None:
        """Also send every metrics record to TensorBoard (numbers as scalars, the genotype as text)."""
        if self.writes:
            refuse_link(self.path / "tensorboard", "TensorBoard folder")
            self.tensorboard = self.summary_writer()(str(self.path / "tensorboard"))

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        if self.writes:
            save_checkpoint(self.checkpoint_path, state)

    def append_metrics(self, record: dict[str, Any]) -> None:
        if not self.writes:
            return
        try:
            with os.fdopen(open_own(self.metrics_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "a") as fh:
                fh.write(json.dumps(record) + "\n")
        except OSError as exc:  # a line cut short by a full disk is dropped by the next --resume
            raise UserError(f"cannot write {self.metrics_path}: {exc.strerror or exc}; free some space or make the "
                            f"folder writable, then continue with --resume {self.path}") from None
        writer = self.tensorboard
        if writer is not None and isinstance(record.get("epoch"), int):
            for key, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch":
                    writer.add_scalar(key, value, record["epoch"])
            if "genotype" in record:
                writer.add_text("genotype", json.dumps(record["genotype"]), record["epoch"])
            writer.flush()

    def read_metrics(self, warn: bool = False) -> list[dict[str, Any]]:
        """The metric records that are whole; a damaged line (one cut short by a crash) is skipped, and with
        ``warn`` (readers of a finished run: report, compare) named in a warning."""
        if not self.metrics_path.exists():
            return []
        data = read_bytes(self.metrics_path, "metrics file", LIMITS["metrics"], "the run directory is damaged")
        records, damaged = [], []
        for number, line in enumerate(data.decode("utf-8", errors="replace").split("\n"), start=1):
            try:
                record = parse_json(line, "", "")
            except UserError:
                record = None
            if isinstance(record, dict) and whole(record):
                records.append(record)
            elif line.strip():
                damaged.append(number)
        if warn and damaged:
            log.warning("%s: line%s %s damaged (cut short?) and skipped; showing the %d whole records",
                        self.metrics_path, "s" if len(damaged) > 1 else "", ", ".join(map(str, damaged[:5])),
                        len(records))
        return records

    def keep_metrics_before(self, epoch: int) -> None:
        """Keep only the records of epochs before ``epoch`` (a resume drops those after its checkpoint)."""
        if not self.writes:
            return
        kept = [r for r in self.read_metrics() if isinstance(r.get("epoch"), int) and r["epoch"] < epoch]
        atomic_write_bytes(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept).encode())

    @classmethod
    def resume(cls, path: str | Path, config_cls: type, overrides: dict[str, Any], entry: Callable[[Any], str],
               validate: Callable[[Any], Any] | None = None) -> tuple["RunDir", Any, dict]:
        """Open a run for --resume: its stored config with ``overrides`` applied, and its last checkpoint.

        Only the RESUMABLE keys may differ from the stored config; the checkpoint must come from this run and
        hold the entry ``entry(config)`` names (the state of the command that wrote it). ``validate`` checks
        the resumed config (default: its own ``validate``).
        """
        run, stored = cls.open(path)
        lock(run.path)  # before anything is read further: a run another process still writes is refused here
        try:
            return run._resume(stored, config_cls, overrides, entry, validate)
        except BaseException:
            unlock(run.path)
            raise

    def _resume(self, stored: dict[str, Any], config_cls: type, overrides: dict[str, Any], entry: Callable[[Any], str],
                validate: Callable[[Any], Any] | None) -> tuple["RunDir", Any, dict]:
        run = self
        config_cls.check_stored(stored, f"{run.path / 'config.json'}")
        foreign = config_cls.unknown_keys(stored)
        if foreign:
            raise UserError(f"{run.path} is not a run of this command: its config.json has settings this command "
                            f"does not take ({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); "
                            "continue it with the command that started it (ista-nas search --resume or ista-nas "
                            "train --resume)")
        cfg = config_cls.from_dict(stored)
        for key, value in overrides.items():
            if key in RESUMABLE:
                setattr(cfg, key, value)
            elif getattr(cfg, key) != value:
                raise UserError(f"--resume continues the stored run; --{key.replace('_', '-')} {value} differs from "
                                f"its {getattr(cfg, key)} (only {' and '.join('--' + k for k in RESUMABLE)} can change)")
        (validate or config_cls.validate)(cfg)
        checkpoint, used = load_latest_good(run.checkpoint_path, required=("epoch", "config"))
        if used != run.checkpoint_path and run.checkpoint_path.exists():
            # Keep the damaged file for inspection, out of the way: the next save must not rotate it over the
            # good previous checkpoint.
            aside = run.checkpoint_path.with_name(f"{run.checkpoint_path.stem}.damaged{run.checkpoint_path.suffix}")
            os.replace(run.checkpoint_path, aside)
            log.warning("moved the damaged %s to %s", run.checkpoint_path, aside)
        if entry(cfg) not in checkpoint:
            raise UserError(f"{run.checkpoint_path} was not written by this command; resume it with the command "
                            "that wrote it")
        mismatched = sorted(k for k, v in checkpoint["config"].items() if k not in RESUMABLE and stored.get(k) != v)
        if mismatched:
            raise UserError(f"checkpoint {used} was written by a run with other settings "
                            f"({', '.join(mismatched)} differ from config.json); it belongs to another run")
        # The least --epochs that continues the run: an epoch stopped halfway must be finished. A run whose
        # --epochs counts only some of its epochs (the one-stage training phase) stores its own figure.
        least = checkpoint.get("min_epochs", checkpoint["epoch"] + ("partial" in checkpoint))
        if least > cfg.epochs:
            if "min_epochs" in checkpoint:
                done = f"begun {least} training epochs"
            else:
                done = f"finished {checkpoint['epoch']} epochs" + (" and started the next" if "partial" in checkpoint
                                                                    else "")
            raise UserError(f"the checkpoint has already {done}; pass --epochs {least} or more")
        return run, cfg, checkpoint

    def restore(self, checkpoint: dict[str, Any] | None, load: Callable[[dict[str, Any]], None]) -> int:
        """Restore ``checkpoint`` with ``load`` and drop the metrics written after it; return the epoch to start
        from (0 without a checkpoint)."""
        if checkpoint is None:
            return 0
        try:
            load(checkpoint)
        except (RuntimeError, KeyError, ValueError) as exc:
            raise UserError(f"checkpoint {self.checkpoint_path} does not fit this run's network ({exc}); "
                            "it belongs to another run") from None
        self.keep_metrics_before(checkpoint["epoch"] + 1)
        partial = checkpoint.get("partial")
        log.info("resuming %s after %d finished epochs%s", self.path, checkpoint["epoch"],
                 f", at step {partial['step']} of epoch {partial['epoch'] + 1}" if partial else "")
        return checkpoint["epoch"]

    def rewrite_config(self, config: dict[str, Any]) -> "RunDir":
        """Store the (resumed, possibly extended) config; returns self."""
        self.write_json("config.json", config)  # rank 0 only
        return self

    def report_interrupt(self, state: dict[str, Any] | None) -> None:
        """The resume hint after a Ctrl-C, from ``state``: the last checkpoint this run directory holds (its
        ``epoch`` and ``partial`` entries; None: none yet). Known in memory: nothing is read while the user waits."""
        if not self.writes:
            return
        if state is None:
            log.warning("interrupted before the first checkpoint; run the command again")
            return
        where = f"after {state['epoch']} finished epochs"
        if "partial" in state:
            where = f"in epoch {state['partial']['epoch'] + 1} after step {state['partial']['step']} (checkpointed)"
        log.warning("interrupted %s; continue with --resume %s", where, self.path)
