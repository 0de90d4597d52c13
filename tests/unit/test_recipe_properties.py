"""Properties of recipe loading, with strategies derived from the recipe dataclasses and their declared ranges."""

from __future__ import annotations

import dataclasses
import enum
import math
import tomllib
import typing
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekit.errors import ConfigError, ExitStatus
from edgekit.recipe import PruneConfig, PruneMethod, Range, Recipe, build_recipe, recipe_to_toml

# TOML strings cannot hold lone surrogates, so neither can a recipe read from a file.
TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=20)
BIG = 2**31  # keeps generated integers well inside TOML's 64-bit range
EXAMPLES = settings(max_examples=50, deadline=None)


def _numbers(kind: type, allowed: Range) -> st.SearchStrategy[Any]:
    """Return numbers of type `kind` that `allowed` accepts."""
    low = allowed.ge if allowed.ge is not None else allowed.gt
    high = allowed.le if allowed.le is not None else allowed.lt
    if kind is int:
        first = -BIG if low is None else (math.floor(low) + 1 if allowed.gt is not None else math.ceil(low))
        last = BIG if high is None else (math.ceil(high) - 1 if allowed.lt is not None else math.floor(high))
        return st.integers(min_value=int(first), max_value=int(last))
    return st.floats(
        min_value=low,
        max_value=high,
        exclude_min=allowed.gt is not None,
        exclude_max=allowed.lt is not None,
        allow_nan=False,
        allow_infinity=allowed.allow_inf,
    )


def _values(kind: Any, allowed: Range) -> st.SearchStrategy[Any]:
    if dataclasses.is_dataclass(kind):
        return _sections(typing.cast(type, kind))
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return st.sampled_from(list(kind))
    if typing.get_origin(kind) is dict:  # tables of the user's own keys (factory arguments, state names)
        keys = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True)
        return st.dictionaries(keys, st.one_of(st.integers(-1000, 1000), TEXT, st.booleans()), max_size=3)
    if typing.get_origin(kind) is tuple:
        (item_kind, _ellipsis) = typing.get_args(kind)
        items = _values(item_kind, allowed)
        sizes = allowed.lengths or range(5)
        return st.sampled_from(list(sizes)).flatmap(lambda n: st.lists(items, min_size=n, max_size=n).map(tuple))
    if kind is bool:
        return st.booleans()
    if kind is str:
        return TEXT
    return _numbers(kind, allowed)


def _sections(cls: type) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(cls)
    fields = {f.name: _values(hints[f.name], Range.of(f)) for f in dataclasses.fields(cls)}
    section = st.builds(cls, **fields)
    if cls is PruneConfig:  # the one cross-field rule
        section = section.filter(lambda p: p.method is not PruneMethod.N_M or p.n < p.m)
    return section


def _walk(cls: type, path: str = "") -> list[tuple[str, Any, Range]]:
    """Return (key path, type, range) of every field below `cls`, sections included, in field order."""
    hints = typing.get_type_hints(cls)
    found = []
    for spec in dataclasses.fields(cls):
        kind, key_path = hints[spec.name], f"{path}.{spec.name}" if path else spec.name
        found.append((key_path, kind, Range.of(spec)))
        if dataclasses.is_dataclass(kind):
            found += _walk(typing.cast(type, kind), key_path)
    return found


def _item(kind: Any) -> Any:
    return typing.get_args(kind)[0] if typing.get_origin(kind) is tuple else kind


SECTIONS: dict[str, type] = {"": Recipe} | {
    path: kind for path, kind, _ in _walk(Recipe) if dataclasses.is_dataclass(kind)
}
# Every number field (or tuple of numbers) that refuses something: a bound, or, for floats, NaN at least.
CHECKED = [
    (path, kind, allowed)
    for path, kind, allowed in _walk(Recipe)
    if _item(kind) is float or (_item(kind) is int and allowed.describe())
]


def _out_of_range(item: type, allowed: Range) -> st.SearchStrategy[Any]:
    """Return numbers of type `item` that `allowed` refuses."""
    bad: list[st.SearchStrategy[Any]] = []
    if item is int:
        if allowed.ge is not None:
            bad.append(st.integers(max_value=math.ceil(allowed.ge) - 1))
        if allowed.gt is not None:
            bad.append(st.integers(max_value=math.floor(allowed.gt)))
        if allowed.le is not None:
            bad.append(st.integers(min_value=math.floor(allowed.le) + 1))
        if allowed.lt is not None:
            bad.append(st.integers(min_value=math.ceil(allowed.lt)))
        return st.one_of(bad)
    finite = {"allow_nan": False, "allow_infinity": False}
    if allowed.ge is not None:
        bad.append(st.floats(max_value=allowed.ge, exclude_max=True, **finite))
    if allowed.gt is not None:
        bad.append(st.floats(max_value=allowed.gt, **finite))
    if allowed.le is not None:
        bad.append(st.floats(min_value=allowed.le, exclude_min=True, **finite))
    if allowed.lt is not None:
        bad.append(st.floats(min_value=allowed.lt, **finite))
    bad.append(st.just(math.nan))
    if not allowed.allow_inf:
        bad.append(st.sampled_from([math.inf, -math.inf]))
    return st.one_of(bad)


def _nest(path: str, value: Any) -> dict[str, Any]:
    table: dict[str, Any] = {}
    node = table
    *parents, leaf = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return table


def test_every_field_named_in_the_issue_is_range_checked() -> None:
    paths = {path for path, _, _ in CHECKED}

    assert {"latency.runs", "golden.samples", "data.evaluation_size", "gate.max_top1_drop", "prune.ratio"} <= paths


@EXAMPLES
@given(recipe=_sections(Recipe), header=TEXT)
def test_valid_recipes_round_trip_through_toml(recipe: Recipe, header: str) -> None:
    text = recipe_to_toml(recipe, header=header)

    assert build_recipe(tomllib.loads(text)) == recipe


@EXAMPLES
@given(data=st.data())
def test_unknown_keys_are_always_refused_with_their_path(data: st.DataObject) -> None:
    section = data.draw(st.sampled_from(sorted(SECTIONS)))
    known = {f.name for f in dataclasses.fields(SECTIONS[section])}
    key = data.draw(TEXT.filter(lambda k: k not in known))
    value = data.draw(st.one_of(st.integers(), st.floats(), TEXT, st.booleans()))
    key_path = f"{section}.{key}" if section else key

    with pytest.raises(ConfigError) as err:
        build_recipe({"latency": {"runs": 3}}, _nest(section, {key: value}) if section else {key: value})

    assert err.value.status == ExitStatus.CONFIG
    assert f"unknown recipe key '{key_path}'" in err.value.message


@EXAMPLES
@given(data=st.data())
def test_out_of_range_numbers_are_always_refused_with_their_path(data: st.DataObject) -> None:
    path, kind, allowed = data.draw(st.sampled_from(CHECKED))
    bad = data.draw(_out_of_range(_item(kind), allowed))
    value = [bad] * (allowed.lengths[-1] if allowed.lengths else 1) if _item(kind) is not kind else bad

    with pytest.raises(ConfigError) as err:
        build_recipe(_nest(path, value))

    assert err.value.status == ExitStatus.CONFIG
    assert f"'{path}" in err.value.message
