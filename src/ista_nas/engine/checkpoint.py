"""Atomic, checksummed checkpoint files: written to a temporary file in the same folder, then renamed over the
target; the file replaced is kept as the previous checkpoint, the fallback when the latest one is damaged.

A checkpoint is read as data only (``torch.load(weights_only=True)``, the outer file and its payload alike):
tensors, numbers, strings and containers of them, which is all the tool writes. A pickle that names anything
else (``os.system``, a class) is refused before any of it runs (``NotData``), and is never taken as damage that
would send a resume to the previous checkpoint."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import pickletools
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import NotData, NotPermitted, UserError
from ..files import atomic_write_bytes, unreadable

log = logging.getLogger(__name__)
FORMAT = 2  # {"format", "sha256", "config", "epoch", "payload": torch.save bytes of the state}


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def previous_path(path: str | Path) -> Path:
    """Where the checkpoint before the last one is kept: ``checkpoint.prev.pt`` beside ``checkpoint.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` with a SHA-256 of its bytes and the run's config; the file it replaces is kept as the
    previous checkpoint. Every step is a rename, so a kill at any moment leaves a good file behind."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    wrapped = {"format": FORMAT, "sha256": hashlib.sha256(payload).hexdigest(), "config": state.get("config"),
               "epoch": state.get("epoch"), "payload": payload}

    data = io.BytesIO()
    torch.save(wrapped, data)  # into memory: a failed write is an OSError from Python, not torch's C++ writer

    def keep_previous() -> None:  # only once the new checkpoint is whole on disk
        if path.exists():
            os.replace(path, previous_path(path))

    atomic_write_bytes(path, data.getbuffer(), "; --resume continues from the last checkpoint written", keep_previous)


DATA_MODULES = ("torch", "collections")  # what the tool's own checkpoints import: tensors, OrderedDict


def _imports(data: bytes) -> str | None:
    """The first function or class a pickle (raw, or a torch zip's data.pkl) imports from outside DATA_MODULES,
    read with pickletools, which runs nothing; None if it imports none (or cannot be read that far)."""
    if data[:2] == b"PK":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                name = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                data = archive.read(name) if name else b""
        except (zipfile.BadZipFile, OSError, EOFError, ValueError):
            return None
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(data):
            name = (arg.replace(" ", ".") if op.name in ("GLOBAL", "INST") else
                    ".".join(strings[-2:]) if op.name == "STACK_GLOBAL" else None)
            if name is not None and name.split(".")[0] not in DATA_MODULES:
                return name
            if isinstance(arg, str):
                strings.append(arg)
    except Exception:  # a truncated or damaged stream: what was read so far imported nothing else
        return None
    return None


def _load_data(data: bytes, path: Path) -> Any:
    """``torch.load`` of ``data`` as data only; a pickle that imports code is ``NotData`` naming what it asked for
    (by the unpickler's refusal, or read with pickletools where it refused an opcode before reaching it)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the unpickler's notes on pickle protocols
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        named = re.search(r"GLOBAL ([\w.]+)", str(exc))
        code = named.group(1) if named else _imports(data)
        if code is None:
            raise
        raise NotData(f"checkpoint {path} names {code}: loading it would run code, so ista-nas refused it "
                      "(checkpoints are read as data only); do not load it elsewhere either, ask its sender for the "
                      "checkpoint.pt an ista-nas run wrote") from None


def load_checkpoint(path: str | Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Load a checkpoint onto the CPU after checking its checksum; an unreadable, truncated, altered or
    incomplete file raises a UserError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}; the run has not finished an epoch yet, start it again without "
                        "--resume")
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise unreadable(exc, "checkpoint", path, "give the checkpoint.pt of an ista-nas run") from None
    try:
        with fh:
            data = fh.read()
    except OSError as exc:
        raise unreadable(exc, "checkpoint", path, "give the checkpoint.pt of an ista-nas run") from None
    try:
        wrapped = _load_data(data, path)
    except NotData:
        raise
    except Exception as exc:  # truncated zip, pickle error, wrong file type...
        raise UserError(f"checkpoint {path} cannot be read ({type(exc).__name__}): it is damaged or not a "
                        "checkpoint; give the checkpoint.pt of an ista-nas run") from None
    if not isinstance(wrapped, dict) or wrapped.get("format") != FORMAT or not isinstance(wrapped.get("payload"),
                                                                                            bytes):
        raise UserError(f"{path} is not an ista-nas checkpoint (format {FORMAT}); give the checkpoint.pt of an "
                        "ista-nas run")
    if hashlib.sha256(wrapped["payload"]).hexdigest() != wrapped.get("sha256"):
        raise UserError(f"checkpoint {path} does not match its checksum (the file was altered or damaged); "
                        "its run can only start again, in a new --out")
    try:
        state = _load_data(wrapped["payload"], path)
    except NotData:
        raise
    except Exception as exc:
        raise UserError(f"checkpoint {path} holds a payload that cannot be read ({type(exc).__name__}); give the "
                        "checkpoint.pt of an ista-nas run") from None
    missing = [k for k in required if not isinstance(state, dict) or k not in state]
    if missing:
        config = state.get("config") if isinstance(state, dict) else None
        command = config.get("command") if isinstance(config, dict) else None  # the run's record (config.record)
        what = f"of an ista-nas {command:.20} run" if isinstance(command, str) else "of another command"
        raise UserError(f"checkpoint {path} is the checkpoint {what}: it holds no {', '.join(missing)}; give it to "
                        "the command that wrote it")
    return state


def load_latest_good(path: str | Path, required: tuple[str, ...] = ()) -> tuple[dict[str, Any], Path]:
    """The checkpoint at ``path``, or, when that one is missing or damaged, the previous one (with a warning
    naming the damaged file). Raises the error about ``path`` when neither is usable."""
    path = Path(path)
    try:
        return load_checkpoint(path, required), path
    except UserError as error:
        previous = previous_path(path)
        if isinstance(error, (NotPermitted, NotData)) or not previous.is_file():
            raise
        try:
            state = load_checkpoint(previous, required)
        except (NotPermitted, NotData):
            raise
        except UserError:
            raise error from None
        log.warning("%s; using the previous checkpoint %s (epoch %s) instead", error, previous, state.get("epoch"))
        return state, previous
