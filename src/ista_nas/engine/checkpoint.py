"""Atomic, checksummed checkpoint files: written to a temporary file in the same folder, then renamed over the
target; the file replaced is kept as the previous checkpoint, the fallback when the latest one is damaged."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import NotPermitted, UserError
from ..files import atomic_write_bytes, unreadable

log = logging.getLogger(__name__)
FORMAT = 2  # {"format", "sha256", "config", "epoch", "payload": torch.save bytes of the state}


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2) + "\n"))


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

    def write(tmp: Path) -> None:
        tmp.write_bytes(data.getbuffer())
        if path.exists():  # only once the new checkpoint is whole on disk
            os.replace(path, previous_path(path))

    atomic_write_bytes(path, write, "; --resume continues from the last checkpoint written")


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
            wrapped = torch.load(fh, map_location="cpu", weights_only=False)
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
    state = torch.load(io.BytesIO(wrapped["payload"]), map_location="cpu", weights_only=False)
    missing = [k for k in required if not isinstance(state, dict) or k not in state]
    if missing:
        config = state.get("config") if isinstance(state, dict) else None
        what = (f"of a {config.get('method', 'two-stage')} search" if isinstance(config, dict) and "method" in config
                else "of another command")
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
        if isinstance(error, NotPermitted) or not previous.is_file():
            raise
        try:
            state = load_checkpoint(previous, required)
        except NotPermitted:
            raise
        except UserError:
            raise error from None
        log.warning("%s; using the previous checkpoint %s (epoch %s) instead", error, previous, state.get("epoch"))
        return state, previous
