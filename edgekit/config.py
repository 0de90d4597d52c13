"""Typed tables: read TOML strictly into frozen dataclasses, with each number's range declared on its field.

Recipes and every backend's `Options` use this. An unknown key is an error naming its path and the
nearest key; each number field declares its allowed values next to it (`ranged(default, ge=..., lt=...)`);
a float must also be finite unless its range allows inf. A dataclass may add rules across its fields
with a `cross_field_problems(path) -> list[str]` method. Every problem is gathered, then one
`ConfigError` lists them all.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import operator
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from edgekit.errors import ConfigError, InternalError, did_you_mean

_T = TypeVar("_T")
_RANGE = "edgekit.range"  # the field metadata key `ranged` writes and `Range.of` reads


@dataclass(frozen=True, slots=True, kw_only=True)
class Range:
    """The values a number field accepts; for a tuple field, each item's values and the tuple's lengths.

    Attributes:
        ge: Lowest value allowed, if any.
        gt: Values must be greater than this, if set.
        le: Highest value allowed, if any.
        lt: Values must be lower than this, if set.
        allow_inf: Accept +/-inf in a float field (NaN is never accepted).
        lengths: Lengths a tuple field may have; empty means any length.
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    allow_inf: bool = False
    lengths: tuple[int, ...] = ()

    @staticmethod
    def of(spec: dataclasses.Field[Any]) -> Range:
        """Return the range declared on a dataclass field; without one, any finite number."""
        declared = spec.metadata.get(_RANGE)
        return declared if isinstance(declared, Range) else Range()

    def describe(self) -> str:
        """Return the bounds in words, e.g. '>= 0 and < 1' (empty when unbounded)."""
        return " and ".join(f"{op} {bound:g}" for op, _, bound in self._bounds())

    def contains(self, value: float) -> bool:
        """Return whether a single number lies within the bounds (finiteness aside)."""
        return all(check(value, bound) for _, check, bound in self._bounds())

    def _bounds(self) -> list[tuple[str, Callable[[Any, Any], bool], float]]:
        ops = ((">=", operator.ge), (">", operator.gt), ("<=", operator.le), ("<", operator.lt))
        bounds = (self.ge, self.gt, self.le, self.lt)
        return [(op, check, bound) for (op, check), bound in zip(ops, bounds, strict=True) if bound is not None]

    def problems(self, path: str, value: Any) -> list[str]:
        """Return one message per way `value` (a number or a tuple of them) at `path` is out of range."""
        if isinstance(value, tuple):
            found = []
            if self.lengths and len(value) not in self.lengths:
                allowed = " or ".join("empty" if n == 0 else f"{n} items long" for n in self.lengths)
                found.append(f"'{path}' must be {allowed}, got {list(value)!r}")
            for i, item in enumerate(value):
                found += self.problems(f"{path}[{i}]", item)
            return found
        if isinstance(value, bool) or not isinstance(value, int | float):
            return []
        finite_only = isinstance(value, float) and not self.allow_inf
        bad_float = isinstance(value, float) and (math.isnan(value) or (finite_only and math.isinf(value)))
        if not bad_float and self.contains(value):
            return []
        wanted = " ".join(part for part in ("a finite number" if finite_only else "", self.describe()) if part)
        return [f"'{path}' must be {wanted or 'a number'}, got {value!r}"]


def ranged(
    default: _T,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    allow_inf: bool = False,
    lengths: tuple[int, ...] = (),
) -> _T:
    """Declare a dataclass field with its default and the `Range` of values it accepts."""
    allowed = Range(ge=ge, gt=gt, le=le, lt=lt, allow_inf=allow_inf, lengths=lengths)
    return field(default=default, metadata={_RANGE: allowed})


def parse_table(cls: type[_T], table: Any, path: str = "", *, what: str = "recipe") -> _T:
    """Read a TOML table strictly into the frozen dataclass `cls`, checking each field's type and `Range`.

    Args:
        cls: A dataclass whose fields all have defaults, e.g. `Recipe` or a backend's `Options`.
        table: The raw table.
        path: Key path of the table, put in front of every key named in a message (e.g. "options").
        what: What the keys are called in messages: "unknown {what} key 'path.key'".

    Raises:
        ConfigError: Naming every unknown key, wrong type and out-of-range value at once.
    """
    problems: list[_Problem] = []
    parsed = _from_table(cls, table, path, problems, what)
    _raise_all(problems + _range_problems(parsed, path))
    return typing.cast(_T, parsed)


def recipe_to_table(recipe: Any) -> dict[str, Any]:
    """Turn a recipe (or one of its sections) back into plain TOML-ready values."""
    table: dict[str, Any] = {}
    for f in dataclasses.fields(recipe):
        value = getattr(recipe, f.name)
        if dataclasses.is_dataclass(value):
            table[f.name] = recipe_to_table(value)
        elif isinstance(value, enum.Enum):
            table[f.name] = value.value
        elif isinstance(value, tuple):
            table[f.name] = [recipe_to_table(v) if dataclasses.is_dataclass(v) else v for v in value]
        else:
            table[f.name] = value
    return table


def check_ranges(section: Any, path: str = "") -> None:
    """Raise one ConfigError naming every out-of-range value below a dataclass made in code."""
    _raise_all(_range_problems(section, path))


class _Problem(NamedTuple):
    message: str
    hint: str | None = None


def _raise_all(problems: list[_Problem]) -> None:
    """Raise one ConfigError for all problems: the first in full, then the rest in brackets."""
    if not problems:
        return
    first, *rest = problems
    message = first.message
    if rest:
        others = "; ".join(p.message + (f" ({p.hint})" if p.hint else "") for p in rest)
        message = f"{message} (and {len(rest)} more: {others})"
    raise ConfigError(message, hint=first.hint)


def _range_problems(section: Any, path: str) -> list[_Problem]:
    """Return every out-of-range value and broken cross-field rule below `section`, in field order."""
    found: list[_Problem] = []
    for spec in dataclasses.fields(section):
        value = getattr(section, spec.name)
        key_path = f"{path}.{spec.name}" if path else spec.name
        if dataclasses.is_dataclass(value):
            found += _range_problems(value, key_path)
        else:
            found += [_Problem(message) for message in Range.of(spec).problems(key_path, value)]
    rule = getattr(section, "cross_field_problems", None)
    if callable(rule):
        found += [_Problem(message) for message in rule(path)]
    return found


# Marks a value that failed its check: the field keeps its default while the other problems are gathered.
_INVALID: Any = object()


def _from_table(cls: type, table: Any, path: str, problems: list[_Problem], what: str) -> Any:
    if not isinstance(table, dict):
        problems.append(_Problem(f"'{path or what}' must be a table, got {table!r}"))
        return cls()
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values: dict[str, Any] = {}
    for key, raw in table.items():
        key_path = f"{path}.{key}" if path else key
        if key not in names:
            hint = did_you_mean(key, names) or f"known keys: {', '.join(names)}"
            problems.append(_Problem(f"unknown {what} key '{key_path}'", hint))
            continue
        value = _coerce(hints[key], raw, key_path, problems, what)
        if value is not _INVALID:
            values[key] = value
    return cls(**values)


def _coerce(kind: Any, raw: Any, path: str, problems: list[_Problem], what: str) -> Any:
    """Return `raw` as a `kind`, or record a problem and return `_INVALID`."""
    if dataclasses.is_dataclass(kind):
        return _from_table(typing.cast(type, kind), raw, path, problems, what)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        choices = [m.value for m in kind]
        if raw in choices:
            return kind(raw)
        hint = did_you_mean(str(raw), choices) or f"one of: {', '.join(choices)}"
        problems.append(_Problem(f"'{path}' cannot be {raw!r}", hint))
        return _INVALID
    origin = typing.get_origin(kind)
    if origin is dict:  # a table of plain values (factory arguments, state names): keys are the user's
        if not isinstance(raw, dict) or not all(isinstance(k, str) for k in raw):
            problems.append(_Problem(f"'{path}' must be a table, got {raw!r}"))
            return _INVALID
        return dict(raw)
    if origin is tuple:
        if not isinstance(raw, list | tuple):
            problems.append(_Problem(f"'{path}' must be a list, got {raw!r}"))
            return _INVALID
        (item_kind, _ellipsis) = typing.get_args(kind)
        items = [_coerce(item_kind, item, f"{path}[{i}]", problems, what) for i, item in enumerate(raw)]
        return _INVALID if any(item is _INVALID for item in items) else tuple(items)
    if origin in (types.UnionType, typing.Union):
        raise InternalError(f"recipe field '{path}' has a union type, which the loader does not support")
    if kind is float and isinstance(raw, int | float) and not isinstance(raw, bool):
        return float(raw)
    if kind is int and isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if kind in (bool, str) and isinstance(raw, kind):
        return raw
    problems.append(_Problem(f"'{path}' must be {kind.__name__}, got {raw!r}"))
    return _INVALID
