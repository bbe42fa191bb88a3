"""The DARTS cell space's genotype: the discrete architecture a search of that space returns (other spaces
define theirs in their own module; ``spaces.load_genotype`` reads any of them).

A genotype lists, for each intermediate node of the normal and the reduction cell, the two chosen
(op, predecessor) pairs, in DARTS's ``Genotype`` layout. Predecessors 0 and 1 are the cell's two inputs,
k >= 2 is intermediate node k - 2. In ISTA-NAS both pairs of a node may use the same predecessor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError
from .files import atomic_write_bytes
from .limits import MAX_NODES
from .ops import PRIMITIVES

Pair = tuple[str, int]
FLAVOURS = ("standard", "one-stage")  # one-stage: a BN after every parameter-free op (pools, identity skip)
KEYS = ("normal", "normal_concat", "reduce", "reduce_concat", "flavour")


@dataclass(frozen=True)
class Genotype:
    normal: tuple[Pair, ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[Pair, ...]
    reduce_concat: tuple[int, ...]
    flavour: str = "standard"

    @property
    def steps(self) -> int:
        return len(self.normal) // 2

    def to_dict(self) -> dict[str, Any]:
        return {
            "normal": [[op, pred] for op, pred in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [[op, pred] for op, pred in self.reduce],
            "reduce_concat": list(self.reduce_concat),
            "flavour": self.flavour,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "genotype") -> "Genotype":
        """Build and validate a genotype; any problem raises a UserError naming ``source`` and the field."""
        if not isinstance(data, dict):
            raise UserError(f"{source}: expected a JSON object with keys normal, normal_concat, reduce, reduce_concat")
        missing = [k for k in ("normal", "normal_concat", "reduce", "reduce_concat") if k not in data]
        if missing:
            raise UserError(f"{source}: missing key(s) {', '.join(missing)}; a genotype needs normal, normal_concat, "
                            "reduce and reduce_concat")
        unknown = sorted(set(data) - set(KEYS))
        if unknown:
            raise UserError(f"{source}: unknown key(s) {', '.join(map(repr, unknown))}; a genotype has "
                            f"{', '.join(KEYS)}")
        for key in ("normal", "reduce"):
            if isinstance(data[key], (list, tuple)) and len(data[key]) > 2 * MAX_NODES:
                raise UserError(f"{source}: {key} has {len(data[key]) // 2:,} nodes; a cell has at most {MAX_NODES} "
                                "(DARTS has 4)")
        flavour = data.get("flavour", "standard")
        if flavour not in FLAVOURS:
            raise UserError(f"{source}: unknown flavour {flavour!r}; choose one of {', '.join(FLAVOURS)}")
        normal = _pairs(data["normal"], f"{source}: normal")
        reduce = _pairs(data["reduce"], f"{source}: reduce")
        if len(normal) != len(reduce):
            raise UserError(f"{source}: normal has {len(normal) // 2} nodes but reduce has {len(reduce) // 2}; "
                            "both cells need the same number of nodes")
        steps = len(normal) // 2
        return cls(normal, _concat(data["normal_concat"], steps, f"{source}: normal_concat"),
                   reduce, _concat(data["reduce_concat"], steps, f"{source}: reduce_concat"), flavour)


def _pairs(value: Any, where: str) -> tuple[Pair, ...]:
    if not isinstance(value, (list, tuple)) or not value or len(value) % 2:
        raise UserError(f"{where}: expected a non-empty list of [op, predecessor] pairs, two per node")
    pairs = []
    for k, item in enumerate(value):
        node = k // 2
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise UserError(f"{where}[{k}]: expected [op, predecessor], got {item!r}")
        op, pred = item
        if op not in PRIMITIVES:
            raise UserError(f"{where}[{k}]: unknown op {op!r}; choose one of {', '.join(PRIMITIVES)}")
        if isinstance(pred, bool) or not isinstance(pred, int) or not 0 <= pred < node + 2:
            raise UserError(f"{where}[{k}]: predecessor {pred!r} is out of range for node {node}; "
                            f"it must be an integer in 0..{node + 1}")
        pairs.append((op, pred))
    return tuple(pairs)


def _concat(value: Any, steps: int, where: str) -> tuple[int, ...]:
    valid = range(2, steps + 2)
    if (not isinstance(value, (list, tuple)) or not value
            or any(isinstance(v, bool) or not isinstance(v, int) or v not in valid for v in value)
            or len(set(value)) != len(value)):
        raise UserError(f"{where}: expected distinct node indices in {valid.start}..{valid.stop - 1}, got {value!r}")
    return tuple(value)


def save_genotype(genotype: Genotype, path: str | Path) -> None:
    text = json.dumps(genotype.to_dict(), indent=2) + "\n"
    atomic_write_bytes(path, text.encode())
