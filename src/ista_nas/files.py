"""What the tool promises about the user's files (docs/reliability.md), in the functions every command uses.

``read_text``: a file a user names (a table, a genotype, a run's config or metrics) is read only when it is a
regular file, up to a size bound; a device, FIFO or folder, or a file past the bound, is a UserError before a
byte is read. A UTF-8 byte-order mark (as spreadsheets write it) is dropped.

``claim_output``: an output path may hold nothing, or a file this tool wrote of the same kind, which it then
replaces. Each kind of output carries a mark inside its bytes (``MARKS``); a file without the mark (a user's
file, a run's checkpoint, config or metrics, another kind of output) is never replaced.

``parse_json``: JSON a user may have edited, parsed or refused in one line naming its source (not JSON, nested
deeper than Python's parser recurses, an integer past Python's digit limit).

``atomic_write_bytes``: every file is written to a temporary file beside it and renamed over it; a full disk, a
file-size limit or a read-only folder is one UserError naming the file, the temporary file is removed and the
file it would have replaced (a run's last good checkpoint) is left as it was. The temporary file's name is
random and it is created exclusively, without following links; ``refuse_link``: ista-nas makes no symbolic
links, so it writes through or over none (docs/reliability.md, trust boundaries).
"""

from __future__ import annotations

import errno
import gzip
import io
import json
import os
import stat
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import NotPermitted, UserError

MiB = 1 << 20
LIMITS = {"table": 512 * MiB, "json": 64 * MiB, "metrics": 512 * MiB}

# The mark each kind of output carries in its bytes. Plots: matplotlib's Creator metadata (PNG text chunk, SVG
# and PDF metadata); reports: a generator meta tag; TorchScript exports: the name of their metadata file inside
# the zip; ONNX exports: their metadata_props key as protobuf writes it; JSON outputs: a "written_by" entry.
MARKS = {
    "plot": b"ista-nas plot",
    "report": b'<meta name="generator" content="ista-nas report">',
    "torchscript": b"/extra/ista_nas.json",
    "onnx": b"\x0a\x08ista_nas\x12",
    "json": b'"written_by": "ista-nas',
}
PLOT_FORMATS = ("png", "svg", "pdf")
PLOT_METADATA = {"Creator": MARKS["plot"].decode()}


def _bound(limit: int) -> str:
    return f"{limit // MiB} MiB" if limit >= MiB else f"{limit} bytes"


def unreadable(exc: OSError, what: str, path: Path, fix: str) -> UserError:
    """The one line for a ``what`` at ``path`` that the system would not read: a permission the user can grant
    (not a damaged file: ``fix`` is for those), or the system's reason."""
    if isinstance(exc, PermissionError):
        return NotPermitted(f"cannot read {what} {path}: permission denied; make it readable (and the folders "
                            "above it searchable) for this user, then run the command again")
    return UserError(f"cannot read {what} {path}: {exc.strerror or exc}; {fix}")


def _regular(path: Path, what: str, fix: str) -> int:
    """The size of the regular file ``path``; a UserError for anything else."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise UserError(f"no {what} at {path}; {fix}") from None
    except OSError as exc:
        raise unreadable(exc, what, path, fix) from None
    if stat.S_ISDIR(info.st_mode):
        raise UserError(f"{what} {path} is a folder, not a file; {fix}")
    if not stat.S_ISREG(info.st_mode):
        raise UserError(f"{what} {path} is not a regular file (a device, FIFO or socket); {fix}")
    return info.st_size


def read_bytes(path: str | Path, what: str, limit: int, fix: str) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them (a UserError past it)."""
    path = Path(path).expanduser()
    size = _regular(path, what, fix)
    too_big = UserError(f"{what} {path} is larger than the {_bound(limit)} a {what} may have; {fix}")
    if size > limit:
        raise too_big
    try:
        with path.open("rb") as fh:
            data = fh.read(limit + 1)  # a file that grew since stat still stops at the bound
    except OSError as exc:
        raise unreadable(exc, what, path, fix) from None
    if len(data) > limit:
        raise too_big
    return data


def read_text(path: str | Path, what: str, limit: int, fix: str) -> str:
    """``read_bytes`` decoded as UTF-8 (a byte-order mark dropped; a ``.gz`` file decompressed, within the same
    bound); a UserError for other encodings."""
    data = read_bytes(path, what, limit, fix)
    if Path(path).suffix == ".gz":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as fh:
                data = fh.read(limit + 1)
        except (OSError, EOFError, zlib.error):
            raise UserError(f"{what} {Path(path)} is not a whole gzip file; {fix}") from None
        if len(data) > limit:
            raise UserError(f"{what} {Path(path)} decompresses to more than {_bound(limit)}; {fix}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{what} {Path(path)} is not UTF-8 text; {fix}") from None


def holds_mark(path: Path, mark: bytes, chunk: int = 4 * MiB) -> bool:
    """Whether the regular file ``path`` contains ``mark`` (read in chunks, whatever its size)."""
    tail = b""
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            if mark in tail + block:
                return True
            tail = block[-len(mark):]
    return False


def in_run(folder: Path) -> bool:
    """Is ``folder`` a run directory (``search``'s or ``train``'s: a config.json beside its metrics)?"""
    return (folder / "config.json").is_file() and (folder / "metrics.jsonl").is_file()


def claim_output(path: str | Path, kind: str, flag: str, run_owned: bool = False) -> Path:
    """``path`` if this command may write its output of ``kind`` there: nothing is there yet, or a file of the
    same kind this tool wrote (which the write replaces), unless it is a run's own (a file inside a run
    directory: only the run itself, ``run_owned``, or ``report`` for report.html, replace those). Its folder must
    exist. A UserError otherwise."""
    path = Path(path).expanduser()
    if not path.parent.is_dir():
        raise UserError(f"{flag} {path}: folder {path.parent} does not exist; create it or choose another path")
    if not (path.exists() or path.is_symlink()):
        return path
    try:
        info = path.lstat()
    except OSError as exc:
        raise UserError(f"{flag} {path}: {exc.strerror}; choose another path") from None
    if stat.S_ISLNK(info.st_mode):
        refuse_link(path, flag)
    if stat.S_ISDIR(info.st_mode):
        raise UserError(f"{flag} {path} is a folder; give a file path")
    ours = stat.S_ISREG(info.st_mode) and holds_mark(path, MARKS[kind])
    if ours and not run_owned and kind != "report" and in_run(path.parent):
        raise UserError(f"{flag} {path} is a file of the run in {path.parent}, which ista-nas leaves to that run; "
                        "choose a path outside the run directory")
    if not ours:
        raise UserError(f"{flag} {path} exists and was not written by ista-nas as a {kind} file; ista-nas never "
                        "overwrites a file it did not write: choose another path")
    return path


def claim_plot(path: str | Path, flag: str) -> Path:
    """``claim_output`` for a plot, whose format the suffix names (one of PLOT_FORMATS)."""
    path = Path(path).expanduser()
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in PLOT_FORMATS:
        raise UserError(f"{flag} {path}: unknown plot format {suffix or '(no suffix)'!r}; end the name with "
                        f"{', '.join('.' + f for f in PLOT_FORMATS)}")
    return claim_output(path, "plot", flag)


def claim_folder(path: str | Path, flag: str) -> Path:
    """A folder for outputs: ``path`` if it is one or can be made (the files in it are claimed one by one)."""
    path = Path(path).expanduser()
    refuse_link(path, flag)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} exists and is not a folder; choose another folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {flag} {path}: {exc.strerror}; choose another folder") from None
    return path


def refuse_link(path: Path, what: str) -> None:
    """A UserError when ``path`` is a symbolic link: ista-nas makes none, so one where it writes was planted or
    left by someone else, and it writes nothing through or over it."""
    if path.is_symlink():
        raise UserError(f"{what} {path} is a symbolic link, which ista-nas did not make and does not write through; "
                        "replace it with a real folder or file, or choose another path")


def open_own(path: Path, flags: int) -> int:
    """``os.open(path, flags)`` of a file ista-nas keeps in place (a run's lock, its metrics): never through a
    link (``O_NOFOLLOW``), and only a regular file with no other name (a hard link would write a file outside the
    run). A UserError for a link; an OSError as ``os.open`` raises it."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            refuse_link(path, "file")
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        os.close(fd)
        raise UserError(f"{path} is not a file of its own (a device, or a hard link to another file), which ista-nas "
                        "did not make and does not write to; remove it or choose another path")
    return fd


def _file_mode() -> int:
    """The mode a plain ``open`` would give a new file (0666 less the umask), for files made by ``mkstemp``."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: str | Path, data: bytes | bytearray | memoryview, hint: str = "",
                       before_rename: Callable[[], object] | None = None) -> None:
    """Write ``data`` to a new temporary file beside ``path`` and rename it to ``path`` (atomic on POSIX), calling
    ``before_rename`` once the data is whole on disk. The temporary file has a random name and is created with
    ``O_EXCL | O_NOFOLLOW`` (``tempfile.mkstemp``), so no link planted in the folder is written through, and a
    ``path`` that is a symbolic link is refused (``refuse_link``). An OSError (a full disk, a file-size limit, a
    read-only folder) is one UserError naming ``path``, with ``hint`` after the fix; the temporary file never
    stays."""
    path = Path(path)
    refuse_link(path, "output")
    tmp = None
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        tmp = Path(name)
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fd, _file_mode())
            fh.write(data)
        if before_rename is not None:
            before_rename()
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}; free some space or make the folder writable, "
                        f"then run the command again{hint}") from None
    finally:
        if tmp is not None:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass  # a folder that refuses the unlink refused the file too


def parse_json(text: str, source: str, fix: str) -> Any:
    """``json.loads(text)``; anything that is not JSON Python can hold is one UserError naming ``source``."""
    try:
        return json.loads(text)
    except RecursionError:
        raise UserError(f"{source} is nested too deeply (a hand-edited or damaged file); {fix}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{source} is not JSON ({exc.msg} at line {exc.lineno}); {fix}") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise UserError(f"{source} holds a value Python cannot read ({str(exc).split(';')[0]}); {fix}") from None


def read_json(path: str | Path, what: str, fix: str, limit: int = LIMITS["json"]) -> Any:
    """The JSON content of the regular file ``path`` (``read_text``'s checks, then ``parse_json``'s)."""
    return parse_json(read_text(path, what, limit, fix), f"{what} {path}", fix)
