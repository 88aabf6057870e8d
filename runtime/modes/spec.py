"""What a mode is: :class:`ModeSpec` (graphs, typed parameters, presets honoured) and :class:`Param`,
and :func:`parse_params`, the one reader of ``--param KEY=VALUE`` strings of every command line.

Mode modules build their specs from these; the table in ``runtime/modes/__init__.py`` collects them.
Imports no mode and not the table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtime.errors import InputError
from runtime.stages import STAGES

__all__ = ["ModeSpec", "Param", "parse_params"]

_KINDS = ("float", "int", "bool", "str", "dict")
# Python's spellings of the JSON literals, accepted too (``--param reverse=True``)
_LITERALS = {"true": True, "false": False, "none": None, "null": None}


def parse_params(items: Iterable[str] | None) -> dict[str, Any]:
    """``["KEY=VALUE", ...]`` (the ``--param`` strings of ``avs segment`` / ``eval`` / benchmarks)
    -> ``{KEY: value}``.

    Each VALUE is read as JSON (numbers, ``true`` / ``false`` / ``null``, lists, objects); failing
    that, ``True`` / ``False`` / ``None`` in any letter case are the Python values; anything else is
    kept as the plain string (``grid=audio`` -> ``"audio"``). Key and value are stripped of
    surrounding blanks; a later KEY overrides an earlier one. Names and values are not checked here:
    the mode's :class:`Param` s do that (``ModeSpec.check_params``). Raises InputError for an item
    without ``=`` or with an empty KEY.
    """
    out: dict[str, Any] = {}
    for item in items or ():
        if not isinstance(item, str):
            raise InputError(f"--param expects KEY=VALUE strings, got {item!r}")
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise InputError(
                f"--param expects key=value (e.g. --param threshold=0.4), got {item!r}"
            )
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = _LITERALS.get(value.lower(), value)
    return out


@dataclass(frozen=True)
class Param:
    """A mode parameter: name, default, kind and allowed values.

    kind: "float", "int", "bool", "str" or "dict". low / high: bounds of numbers (inclusive unless
    ``open_low`` / ``open_high``). choices: the allowed strings. nullable: None is allowed (and means
    "from the preset or the dataset", as ``doc`` says).
    """

    name: str
    default: Any
    kind: str
    doc: str = ""
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    choices: tuple[str, ...] = ()
    nullable: bool = False

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"Param {self.name}: kind must be one of {_KINDS}, got {self.kind!r}")

    def _range(self) -> str:
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        return (
            f"{'(' if self.open_low or self.low is None else '['}{lo}, "
            f"{hi}{')' if self.open_high or self.high is None else ']'}"
        )

    def describe(self) -> str:
        """Type and range in words, e.g. ``float in (0, 1)`` or ``one of 's4', 'ms3'``."""
        if self.choices:
            what = "one of " + ", ".join(repr(c) for c in self.choices)
        elif self.kind in ("float", "int") and (self.low is not None or self.high is not None):
            what = f"{self.kind} in {self._range()}"
        else:
            what = self.kind
        return what + (" or None" if self.nullable else "")

    def _expected(self) -> str:
        if self.kind == "int" and self.low == 1 and self.high is None and not self.open_low:
            return "a positive int" + (" or None" if self.nullable else "")
        if (
            self.kind in ("float", "int")
            and not self.choices
            and (self.low is not None or self.high is not None)
        ):
            return f"in {self._range()} ({'an' if self.kind == 'int' else 'a'} {self.kind}{' or None' if self.nullable else ''})"
        return self.describe()

    def check(self, mode: str, value: Any) -> Any:
        """``value`` converted to the parameter's kind, or InputError saying what was expected."""
        if value is None:
            if self.nullable:
                return None
            raise InputError(f"mode {mode!r}: {self.name} must be {self._expected()}, got None")
        bad = InputError(f"mode {mode!r}: {self.name} must be {self._expected()}, got {value!r}")
        if self.kind == "bool":
            if not isinstance(value, (bool, np.bool_)):
                raise bad
            return bool(value)
        if self.kind == "str":
            if not isinstance(value, str) or (self.choices and value not in self.choices):
                raise bad
            return value
        if self.kind == "dict":
            if not isinstance(value, Mapping):
                raise bad
            return dict(value)
        if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, float, np.integer, np.floating)
        ):
            raise bad
        if self.kind == "int":
            if float(value) != int(value):
                raise bad
            value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise bad
        if self.low is not None and (value < self.low or (self.open_low and value == self.low)):
            raise bad
        if self.high is not None and (value > self.high or (self.open_high and value == self.high)):
            raise bad
        return value


@dataclass(frozen=True)
class ModeSpec:
    """A segmentation mode.

    name: the mode's name in ``segment(mode=...)``. graphs: the bundle graphs it runs. stages: the
    stages it uses (names of :data:`runtime.stages.STAGES`); run: the function
    ``run(stages, frames, audio, sample_rate, **params) -> list[FrameOutput]`` (stages: a
    :class:`runtime.stages.Stages` holding the declared stages; frames: uint8 [H, W, 3] RGB arrays;
    one :class:`runtime.result.FrameOutput` per frame).
    params: its parameters. presets: the preset constants it honours. score_kind: what its per-frame
    ``scores`` hold. optional_graphs: graphs it uses when present. doc: one line for tables.
    """

    name: str
    graphs: tuple[str, ...]
    stages: tuple[str, ...]
    run: Callable[..., list]
    params: tuple[Param, ...] = ()
    presets: tuple[str, ...] = ()
    score_kind: str = ""
    doc: str = ""
    optional_graphs: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown:
            raise ValueError(
                f"mode {self.name!r} declares unknown stages {unknown}; stages: {STAGES}"
            )
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise ValueError(f"mode {self.name!r} declares a parameter twice: {names}")

    @property
    def defaults(self) -> dict[str, Any]:
        """Parameter name -> default."""
        return {p.name: p.default for p in self.params}

    def check_params(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """All parameters: defaults overridden by ``given``, each checked; unknown names refused."""
        known = self.defaults
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise InputError(f"mode {self.name!r} takes parameters {sorted(known)}, not {unknown}")
        by_name = {p.name: p for p in self.params}
        return {
            k: by_name[k].check(self.name, given[k]) if k in given else v for k, v in known.items()
        }
