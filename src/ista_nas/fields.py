"""The machinery of run settings, apart from the settings themselves (config.py has what every run has; each
plug-in declares its own beside its code): a setting's field (``setting``), a plug-in's group of settings
(``Settings``), a field's rule (``Rule`` and the common ones), the type test every reader of a stored setting
applies (``fits``), and the one precedence rule of presets (``resolve``)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .errors import UserError
from .limits import SEED_BOUND


@dataclass(frozen=True)
class Rule:
    """A constraint on one field's value: ``test(value)``, else the message: ``--flag must be {text}, got
    value``, or for a choice ``unknown --flag value; choose one of {text}``."""

    test: Callable[[Any], bool]
    text: str
    choices: Collection[str] = ()  # a choice among these (read when checked: a registry may grow)

    def message(self, flag: str, value: Any) -> str:
        if self.choices:
            return f"unknown {flag} {value!r}; choose one of {', '.join(self.choices)}"
        return f"{flag} must be {self.text}, got {value!r}"


def setting(default: Any, help: str, rule: Rule | None = None, symbol: str = "") -> Any:
    """A setting: its default (written here only), its help (the reason for the default), its rule and the
    paper's symbol for it. Every setting is also a command-line flag (``--batch-size`` for ``batch_size``)."""
    return field(default=default, metadata={"help": help, "rule": rule, "symbol": symbol})


class Settings:
    """A plug-in's own settings: a dataclass of ``setting`` fields that a method or a space lists in its
    ``settings`` and the command's config mixes in. ``why`` names them (a noun phrase) when a plug-in that does
    not list them refuses them; ``own_checks`` are their constraints, with the run's other settings."""

    why: ClassVar[str] = ""

    def own_checks(self) -> list[tuple[bool, str]]:
        return []


def at_least(n: int, why: str = "") -> Rule:
    return Rule(lambda v: v >= n, f"at least {n}" + (f" ({why})" if why else ""))


NONNEGATIVE = Rule(lambda v: v >= 0, ">= 0")
POSITIVE = Rule(lambda v: v > 0, "positive")
FRACTION = Rule(lambda v: 0 <= v < 1, "in [0, 1)")
SEED = Rule(lambda v: 0 <= v < SEED_BOUND, "in 0..2^63-1")


def one_of(choices: Collection[str]) -> Rule:
    return Rule(lambda v: v in choices, "", choices)


FLOAT32_MAX = 3.4028234663852886e38  # the tensors every setting ends up in are float32


def fits(value: Any, expected: type) -> bool:
    """Is ``value`` of a setting's type (an int serves a float setting; a bool is no number)?"""
    return isinstance(value, (int, float) if expected is float else expected) and \
        (expected is bool or not isinstance(value, bool))


def resolve(preset: str, tables: list[tuple[str, dict[str, dict[str, Any]]]], overrides: dict[str, Any]
            ) -> dict[str, Any]:
    """The values of ``preset``: each table's entry for it layered in order, then ``overrides``. ``tables``
    are (whose, presets by name), least specific first; the preset must be one the most specific non-empty
    table offers."""
    offered = [(whose, table) for whose, table in tables if table]
    whose, names = offered[-1]
    if preset not in names:
        raise UserError(f"unknown preset {preset!r}{' for ' + whose if whose else ''}; choose one of "
                        f"{', '.join(names)}")
    values: dict[str, Any] = {}
    for _, table in tables:
        values.update(table.get(preset, {}))
    return {**values, **overrides, "preset": preset}
