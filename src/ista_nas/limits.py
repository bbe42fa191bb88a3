"""The one size rule: the bounds a size, a count or a seed from a flag or from a file someone else wrote is checked
against before anything is built, allocated or started, shared by every command (search, train, show, proxies,
bench, correlate, evaluate, export). ``spaces.check_network`` adds the memory a network of the checked size would
take on this machine.

Each bound is far beyond the published settings it cites and far below what would exhaust a machine: a value past
it is a mistake (a typo, a hand-edited or hostile file), refused in one line naming the flag and the bound.
"""

from __future__ import annotations

from typing import Any

from .errors import UserError

MAX_CHANNELS = 4_096  # initial channels C: the paper's widest network has 48
MAX_LAYERS = 2_000  # cells L, or cells per stage N: the paper's deepest network has 20
MAX_NODES = 64  # intermediate nodes of a DARTS cell, searched (--nodes) or read from a genotype: DARTS has 4
MAX_CLASSES = 100_000  # outputs of a network read from a checkpoint: ImageNet-21k has 21,841
MAX_WORKERS = 64  # DataLoader worker processes (--workers): each is a process with its own batches in memory
SEED_BOUND = 2**63  # seeds are 0 .. 2^63 - 1, what torch.manual_seed and numpy take
MAX_SHOWN = 1_000  # characters of an error line: a value echoed into it (a pasted 10 MB string) is cut


def check_count(flag: str, value: Any, least: int, most: int, why: str = "") -> int:
    """``value`` if it is an integer in ``least`` .. ``most``; else one UserError naming ``flag`` and the range."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{flag} must be an integer, got {shown(value)}")
    if not least <= value <= most:
        bound = f"at least {least:,}" if value < least else f"at most {most:,}" + (f" ({why})" if why else "")
        raise UserError(f"{flag} must be {bound}, got {shown(value)}")
    return value


def check_size(channels: Any, layers: Any, flags: tuple[str, str] = ("--channels", "--layers"),
               least_channels: int = 1) -> None:
    """A network's C and L (or N) within the rule's bounds."""
    check_count(flags[0], channels, least_channels, MAX_CHANNELS, "the paper's widest network has 48")
    check_count(flags[1], layers, 1, MAX_LAYERS, "the paper's deepest network has 20")


def check_seed(value: Any, flag: str = "--seed") -> int:
    return check_count(flag, value, 0, SEED_BOUND - 1)


def shown(value: Any, most: int = 60) -> str:
    """``repr(value)``, cut to ``most`` characters: how a message echoes a value it refuses."""
    text = repr(value) if not isinstance(value, (list, tuple, dict)) or len(value) < 1000 else \
        f"<{type(value).__name__} of {len(value):,} items>"
    return text if len(text) <= most else text[:most - 3] + "..."


def one_line(text: str, most: int = MAX_SHOWN) -> str:
    """``text`` as one error line: control characters (newlines of a pasted value) escaped, and cut in the middle
    to ``most`` characters, so a value echoed whole still leaves the problem (its start) and the fix (its end)."""
    def escaped(part: str) -> str:
        return "".join(c if c.isprintable() else repr(c)[1:-1] for c in part)

    if len(text) <= most:
        text = escaped(text)
        if len(text) <= most:
            return text
    cut = f" [... {len(text) - most:,} characters cut ...] "
    head = (most - len(cut)) * 2 // 3
    tail = most - len(cut) - head
    return escaped(text[:head])[:head] + cut + escaped(text[len(text) - tail:])[-tail:]
