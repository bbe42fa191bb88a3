"""Benchmark tables: every architecture of a space with its trained accuracy (a tabular benchmark, exported),
read from a CSV file with a header or from JSON lines, and looked up by architecture.

A table has one column of architectures in their space's written form (``arch`` by default) and any numeric
columns (``test_acc`` by default: a table with CIFAR-10, CIFAR-100 and ImageNet16-120 columns serves all three).
Every row is checked when the table is read, so a bad table fails once, with the row and the fix, before a
search starts. Ranks count from 1 = best (the highest value); tied values share the best rank of their group.
"""

from __future__ import annotations

import csv
import io
import math
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError
from .files import LIMITS, parse_json, read_text
from .spaces import SPACES

DEFAULT_ARCH_COLUMN = "arch"
DEFAULT_METRIC = "test_acc"


@dataclass(frozen=True)
class Entry:
    """What a table says about one architecture."""

    arch: str
    value: float
    rank: int  # 1 = the table's best; tied values share their group's best rank
    size: int  # architectures in the table
    best: float
    mean: float

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, "value": self.value, "rank": self.rank, "of": self.size, "best": self.best,
                "mean": self.mean}


class Table:
    """A benchmark table: ``values`` by architecture (the space's canonical written form)."""

    def __init__(self, path: Path, space: Any, metric: str, values: dict[str, float]):
        self.path, self.space, self.metric, self.values = path, space, metric, values
        self.builtin = False  # the table that ships with the package for its space (builtin_table)
        ordered = sorted(values.values(), reverse=True)
        self._better = {}  # value -> how many architectures are strictly better
        for i, v in enumerate(ordered):
            self._better.setdefault(v, i)
        self.best = ordered[0]
        self.mean = statistics.fmean(ordered)

    def __len__(self) -> int:
        return len(self.values)

    def key(self, genotype: Any) -> str:
        if not isinstance(genotype, self.space.genotype_type):
            raise UserError(f"the benchmark table {self.path} lists architectures of --space {self.space.name}; "
                            f"{type(genotype).__name__} is another space's: give one of that space")
        return self.space.short(genotype)

    def get(self, genotype: Any) -> Entry | None:
        arch = self.key(genotype)
        if arch not in self.values:
            return None
        value = self.values[arch]
        return Entry(arch, value, self._better[value] + 1, len(self), self.best, self.mean)

    def lookup(self, genotype: Any) -> Entry:
        """The entry of ``genotype``; a UserError when the table lacks it."""
        entry = self.get(genotype)
        if entry is None:
            raise UserError(f"architecture {self.key(genotype)} is not in the benchmark table {self.path} "
                            f"({len(self)} architectures); give a table of the whole space")
        return entry


def _rows(path: Path, text: str) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """(columns, [(line number, row)]) of a CSV file with a header, or of JSON lines (one object a line)."""
    stripped = text.lstrip()
    if path.suffix.lower() in (".jsonl", ".ndjson") or (path.suffix.lower() != ".csv" and stripped.startswith("{")):
        rows, columns = [], {}
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            row = parse_json(line, f"{path} line {number}", "write one JSON object a line")
            if not isinstance(row, dict):
                raise UserError(f"{path} line {number} is not a JSON object; write one object a line, e.g. "
                                f"{{\"arch\": \"...\", \"test_acc\": 93.1}}")
            columns.update(dict.fromkeys(row))
            rows.append((number, row))
        return list(columns), rows
    if not text.endswith(("\n", "\r")):
        last = text.count("\n") + 1
        raise UserError(f"{path} line {last} has no line end: the file may be cut short inside a value; if the "
                        "table is whole, end it with a newline")
    # Leading lines that start with # are comments (a table's source and licence): read as blank lines, so every
    # line keeps its number, and skipped.
    lines = text.split("\n")
    comments = next(i for i, line in enumerate(lines) if not line.startswith("#"))  # the last line is "" (a line end)
    reader = csv.reader(io.StringIO("\n" * comments + "\n".join(lines[comments:])))
    for _ in range(comments):
        next(reader)
    columns = next(reader, [])
    if not any(c.strip() for c in columns):
        raise UserError(f"{path} line 1 is no header; a CSV table starts with its column names, e.g. "
                        f"{DEFAULT_ARCH_COLUMN},{DEFAULT_METRIC}")
    rows = []
    for fields in reader:
        if not fields:
            continue  # a blank line
        if len(fields) != len(columns):
            more = len(fields) > len(columns)
            raise UserError(f"{path} line {reader.line_num} has {len(fields)} fields, the header {len(columns)}; "
                            + ("quote values that hold commas" if more else
                               "the row is cut short (a truncated file?): restore the table or give the whole file"))
        rows.append((reader.line_num, dict(zip(columns, fields))))
    return columns, rows


# A number written whole: digits on both sides of a point (no "86." left by a cut), an optional exponent.
NUMBER = re.compile(r"\s*[+-]?(\d+(\.\d+)?|\.\d+)([eE][+-]?\d+)?\s*")


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and not NUMBER.fullmatch(value):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _parse_arch(text: Any) -> tuple[Any, Any] | None:
    """(space, genotype) of an architecture string in any space's written form; None if no space reads it."""
    if not isinstance(text, str):
        return None
    for space in SPACES.values():
        genotype = space.parse(text.strip())
        if genotype is not None:
            return space, genotype
    return None


BUILTIN = Path(__file__).parent / "data"  # the tables that ship with the package (a space's builtin_table)


def builtin_table(space: Any, metric: str | None = None) -> Table:
    """The table that ships with ``space`` (its ``builtin_table``), read for ``metric`` (default: its first)."""
    if space.builtin_table is None:
        raise UserError(f"no benchmark table ships for --space {space.name}; give one with --benchmark FILE")
    name, metrics = space.builtin_table
    metric = metric or metrics[0]
    if metric not in metrics:
        raise UserError(f"the built-in {space.name} table has no metric {metric!r}; choose --metric "
                        f"{' | '.join(metrics)}, or give your own table with --benchmark FILE")
    table = load_table(BUILTIN / name, DEFAULT_ARCH_COLUMN, metric)
    table.builtin = True
    return table


NO_TABLE = "none"  # --benchmark none: no table, not even a space's built-in one


def table_for(space: Any, benchmark: str | None, arch_column: str = DEFAULT_ARCH_COLUMN,
              metric: str | None = None) -> Table | None:
    """The table a command of ``space`` reads: ``benchmark`` FILE; else (None or "") the space's built-in table
    if one ships, else None; ``none``: None. ``metric`` None or "": the table's default column (a file's
    ``test_acc``, a built-in table's first metric)."""
    if benchmark == NO_TABLE:
        return None
    if benchmark:
        return _read_once(Path(benchmark).expanduser(), (benchmark, arch_column, metric),
                          lambda: load_table(benchmark, arch_column, metric or DEFAULT_METRIC))
    if space.builtin_table is None:
        return None
    return _read_once(BUILTIN / space.builtin_table[0], (space.name, metric), lambda: builtin_table(space, metric))


_READ: dict[tuple[Any, ...], Table] = {}  # the tables this process read, by file version and reading


def _read_once(path: Path, reading: tuple[Any, ...], read: Callable[[], Table]) -> Table:
    """``read()``, or the table it returned before for the same file unchanged (same inode, size and modification
    time) read the same way: a search checks its table when its settings are validated and records with it
    afterwards, from one reading. A file that cannot be stat'ed is read (and refused) every time."""
    try:
        stat = path.stat()
    except OSError:
        return read()
    key = (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns, *reading)
    if key not in _READ:
        if len(_READ) >= 4:
            _READ.pop(next(iter(_READ)))
        _READ[key] = read()
    return _READ[key]


def load_table(path: str | Path, arch_column: str = DEFAULT_ARCH_COLUMN, metric: str = DEFAULT_METRIC,
               kind: str = "benchmark table", flags: tuple[str, str, str] = ("--benchmark", "--arch-column", "--metric")
               ) -> Table:
    """Read and check a benchmark table; every problem is a UserError naming the row and the fix. ``kind`` and
    ``flags`` (the file's, the architecture column's and the value column's) name them in the messages (a latency
    table: ``hardware``)."""
    file_flag, arch_flag, metric_flag = flags
    path = Path(path).expanduser()
    text = read_text(path, kind, LIMITS["table"], f"give a CSV or JSON-lines file to {file_flag}")
    if not text.strip():
        raise UserError(f"{kind} {path} is empty; give a CSV file with a header line, or JSON lines")
    columns, rows = _rows(path, text)
    for name, flag in ((arch_column, arch_flag), (metric, metric_flag)):
        if name not in columns:
            raise UserError(f"{kind} {path} has no column {name!r} (it has {', '.join(map(repr, columns))}); "
                            f"name the column with {flag}")
    if not rows:
        raise UserError(f"{kind} {path} has no rows; give a table with one architecture a row")
    values: dict[str, float] = {}
    first_line: dict[str, int] = {}
    space = None
    for number, row in rows:
        written = row.get(arch_column)
        try:
            parsed = _parse_arch(written)
        except UserError as exc:
            raise UserError(f"{path} line {number}: {exc}") from None
        if parsed is None:
            examples = " or ".join(repr(s.example) for s in SPACES.values() if s.example)
            raise UserError(f"{path} line {number}: {written!r} in column {arch_column!r} is no architecture string; "
                            f"write architectures like {examples}")
        row_space, genotype = parsed
        if space is None:
            space = row_space
        elif row_space is not space:
            raise UserError(f"{path} line {number} is an architecture of --space {row_space.name}, the rows before "
                            f"it of --space {space.name}; give one space's table")
        value = _number(row.get(metric))
        if value is None:
            raise UserError(f"{path} line {number}: {metric} = {row.get(metric)!r} is not a finite number written "
                            f"whole (such as 93.12); every row needs a numeric {metric_flag} column")
        key = space.short(genotype)
        if key in values:
            raise UserError(f"{path} line {number} repeats architecture {key} of line {first_line[key]}; keep one "
                            "row per architecture")
        values[key], first_line[key] = value, number
    return Table(path, space, metric, values)

