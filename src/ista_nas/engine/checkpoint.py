"""Atomic checkpoint files: written to a temporary file in the same folder, then renamed over the target."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError

FORMAT = 1


def atomic_write_bytes(path: str | Path, write) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file to ``path`` (atomic on POSIX)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2) + "\n"))


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    atomic_write_bytes(path, lambda tmp: torch.save({"format": FORMAT, **state}, tmp))


def load_checkpoint(path: str | Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Load a checkpoint onto the CPU; an unreadable or incomplete file raises a UserError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}; the run has not finished an epoch yet, start it again without "
                        "--resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated zip, pickle error, wrong file type...
        raise UserError(f"checkpoint {path} is corrupt or not a checkpoint ({type(exc).__name__}); "
                        "delete it and start the run again") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path} is not an ista-nas checkpoint (format {FORMAT}); delete it and start again")
    missing = [k for k in required if k not in state]
    if missing:
        raise UserError(f"checkpoint {path} lacks {', '.join(missing)}; delete it and start the run again")
    return state
