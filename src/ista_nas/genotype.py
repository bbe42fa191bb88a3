"""Genotypes: the discrete architecture a search returns, for the DARTS cell space (``Genotype``) and for
NAS-Bench-201 (``Nb201Arch``, the benchmark's architecture string).

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
    Path(path).write_text(json.dumps(genotype.to_dict(), indent=2) + "\n")


NB201_OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NB201_NODES = 4
# The cell's edges (to, from) in the string's order: 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2.
NB201_EDGES: tuple[tuple[int, int], ...] = tuple((j, i) for j in range(1, NB201_NODES) for i in range(j))
NB201_EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


@dataclass(frozen=True)
class Nb201Arch:
    """A NAS-Bench-201 cell: one op name per edge, in NB201_EDGES order."""

    ops: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> "Nb201Arch":
        """An architecture string, checked: 3 nodes, node j with j inputs ``op~i`` for i = 0..j-1."""
        if not isinstance(text, str):
            raise UserError(f"a NAS-Bench-201 architecture is a string like {NB201_EXAMPLE!r}, got "
                            f"{type(text).__name__}")
        nodes = text.split("+")
        if len(nodes) != NB201_NODES - 1:
            raise UserError(f"architecture {text!r} has {len(nodes)} nodes separated by '+', NAS-Bench-201 cells have "
                            f"{NB201_NODES - 1}; e.g. {NB201_EXAMPLE!r}")
        ops = []
        for j, node in enumerate(nodes, start=1):
            if len(node) < 2 or not node.startswith("|") or not node.endswith("|"):
                raise UserError(f"node {j} of {text!r} must be written |op~i|...|, got {node!r}")
            entries = node[1:-1].split("|")
            if len(entries) != j:
                raise UserError(f"node {j} of {text!r} needs {j} input(s) (op~0 ... op~{j - 1}), got {len(entries)}")
            for i, entry in enumerate(entries):
                op, sep, src = entry.partition("~")
                if not sep or src != str(i):
                    raise UserError(f"input {i + 1} of node {j} in {text!r} must read node {i} as 'op~{i}', got "
                                    f"{entry!r}")
                if op not in NB201_OPS:
                    raise UserError(f"unknown op {op!r} in {text!r}; NAS-Bench-201 ops are {', '.join(NB201_OPS)}")
                ops.append(op)
        return cls(tuple(ops))

    def __str__(self) -> str:
        parts, k = [], 0
        for j in range(1, NB201_NODES):
            parts.append("|" + "|".join(f"{self.ops[k + i]}~{i}" for i in range(j)) + "|")
            k += j
        return "+".join(parts)

    def to_dict(self) -> dict[str, str]:
        return {"arch": str(self)}

    @classmethod
    def from_dict(cls, data: object, source: str = "architecture") -> "Nb201Arch":
        if not isinstance(data, dict) or set(data) != {"arch"}:
            raise UserError(f"{source}: a NAS-Bench-201 genotype is {{\"arch\": \"{NB201_EXAMPLE}\"}}")
        return cls.parse(data["arch"])


AnyGenotype = Genotype | Nb201Arch


def load_genotype(path: str | Path) -> AnyGenotype:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise UserError(f"cannot read genotype file {path}: {exc.strerror}; check the path") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); "
                        "write a genotype as a JSON object") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a text file (not UTF-8); write a genotype as a JSON object") from None
    if isinstance(data, dict) and "arch" in data:
        return Nb201Arch.from_dict(data, source=str(path))
    return Genotype.from_dict(data, source=str(path))
