"""Recipes: frozen, typed values that say how a build compresses, checks and packages a model.

Layers, lowest first: dataclass defaults < target defaults < recipe file < `--set key=value`.
Every layer is checked strictly: an unknown key is an error naming its path and the nearest key. Each number
field declares its allowed values next to it (`ranged(default, ge=..., lt=...)`); a float must also be finite
unless its range allows inf. `build_recipe` gathers every problem of the merged layers, then raises one
`ConfigError` that lists them all, so a user fixes everything in one go.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import operator
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import tomli_w

from edgekit.errors import ConfigError, InternalError, did_you_mean


class Scheme(enum.StrEnum):
    """How weights and activations are stored in the artifact."""

    AUTO = "auto"  # the backend chooses by what the model contains, and says which
    INT8_STATIC = "int8-static"  # int8 weights and activations, calibrated
    INT8_DYNAMIC = "int8-dynamic"  # int8 weights, activations quantized at run time
    W8 = "w8"  # int8 weights only (Core ML)
    W8A8 = "w8a8"  # int8 weights and activations (Core ML, iOS 17+)
    FP16 = "fp16"
    FP32 = "fp32"


class CalibrationMethod(enum.StrEnum):
    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"


class PruneMethod(enum.StrEnum):
    STRUCTURED = "structured"  # whole channels removed: smaller and faster
    UNSTRUCTURED = "unstructured"  # single weights zeroed, stored sparse (Core ML)
    N_M = "n:m"  # n of every m weights zeroed, stored sparse (Core ML)


class Importance(enum.StrEnum):
    L1 = "l1"
    L2 = "l2"
    TAYLOR = "taylor"


class RecoveryMode(enum.StrEnum):
    NONE = "none"
    DISTILL = "distill"  # learn the float model's outputs on the calibration inputs
    FINETUNE = "finetune"  # cross-entropy on labelled calibration samples


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


@dataclass(frozen=True, slots=True, kw_only=True)
class QuantizeConfig:
    scheme: Scheme = Scheme.AUTO
    calibration_method: CalibrationMethod = CalibrationMethod.MINMAX
    per_channel: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoveryConfig:
    mode: RecoveryMode = RecoveryMode.DISTILL
    steps: int = ranged(300, ge=0)
    time_budget_s: float = ranged(120.0, ge=0)
    learning_rate: float = ranged(1e-3, gt=0)
    batch_size: int = ranged(32, ge=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class PruneConfig:
    ratio: float = ranged(0.0, ge=0, lt=1)  # 0 disables pruning
    method: PruneMethod = PruneMethod.STRUCTURED
    importance: Importance = Importance.L1
    global_pruning: bool = False
    keep_layers: tuple[str, ...] = ()  # module names never pruned; the last Linear is always kept
    n: int = ranged(2, ge=1)  # for method = "n:m", where n < m as well
    m: int = ranged(4, ge=2)
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)


@dataclass(frozen=True, slots=True, kw_only=True)
class DataConfig:
    calibration_size: int = ranged(128, ge=1)
    evaluation_size: int = ranged(512, ge=1)
    seed: int = ranged(0, ge=0)
    synthetic_samples: int = ranged(32, ge=2)  # used only when no --data is given


@dataclass(frozen=True, slots=True, kw_only=True)
class Preprocessing:
    """What an app must do to a raw image before the model sees it: (x * scale - mean) / std."""

    layout: str = "NCHW"
    color: str = "rgb"  # rgb | grayscale
    resize: tuple[int, ...] = ranged((), ge=1, lengths=(0, 2))  # (height, width); empty keeps the size
    scale: float = ranged(1.0 / 255.0, gt=0)
    mean: tuple[float, ...] = ()  # any finite numbers
    std: tuple[float, ...] = ranged((), gt=0)


@dataclass(frozen=True, slots=True, kw_only=True)
class InputConfig:
    shape: tuple[int, ...] = ranged((), ge=1)  # empty: taken from the model (.pt2) or the data
    dtype: str = "float32"


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelConfig:
    """How to make the model: factory arguments, weight names, constant forward() arguments."""

    factory_args: dict[str, Any] = field(default_factory=dict)  # keyword arguments of a MODULE:FACTORY
    strip_prefix: str = ""  # stripped from every weight name ("module." for DataParallel checkpoints)
    constants: dict[str, Any] = field(default_factory=dict)  # non-tensor forward() arguments, e.g. {sr = 16000}


@dataclass(frozen=True, slots=True, kw_only=True)
class IoConfig:
    """The io contract beyond what the model says: state carried between steps."""

    state: dict[str, Any] = field(default_factory=dict)  # output name -> the input it feeds at the next step
    dynamic: dict[str, Any] = field(
        default_factory=dict
    )  # input name -> "axis:min..max", e.g. {input_ids = "1:1..128"}


class GateOp(enum.StrEnum):
    AT_LEAST = ">="
    AT_MOST = "<="


@dataclass(frozen=True, slots=True, kw_only=True)
class GateRule:
    """One rule of the gate: `metric` on `output` (empty: the first output) compared with `value`."""

    metric: str
    output: str = ""
    op: GateOp = GateOp.AT_LEAST
    value: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class GateConfig:
    max_top1_drop: float = ranged(1.0, ge=0, le=100)  # percentage points, used when labels exist
    min_sqnr_db: float = 20.0  # any finite dB value; used when there are no labels
    # Rules replace the two defaults above when given: [[gate.rules]] metric = "mean_iou", op = ">=", value = 90
    rules: tuple[GateRule, ...] = ()
    # Fewer evaluation samples than this cannot pass: the status is "inconclusive" (exit 8).
    min_evaluation_size: int = ranged(30, ge=1)
    custom_metrics: tuple[str, ...] = ()  # "file.py:function" called with (float, artifact, labels) on evaluation


@dataclass(frozen=True, slots=True, kw_only=True)
class LatencyConfig:
    enabled: bool = True
    warmup: int = ranged(10, ge=0)
    runs: int = ranged(50, ge=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class GoldenConfig:
    samples: int = ranged(4, ge=0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Recipe:
    name: str = "custom"
    description: str = ""
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    data: DataConfig = field(default_factory=DataConfig)
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    input: InputConfig = field(default_factory=InputConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    io: IoConfig = field(default_factory=IoConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    golden: GoldenConfig = field(default_factory=GoldenConfig)


def available_recipes() -> dict[str, Path]:
    """Return the bundled recipes by name."""
    return {p.stem: p for p in sorted(data_dir("recipes").glob("*.toml"))}


def data_dir(name: str) -> Path:
    """Return the folder of bundled TOML data: inside the wheel, or the repo's top level when editable."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "_data" / name, package.parent / name):
        if candidate.is_dir():
            return candidate
    raise InternalError(f"bundled '{name}' folder is missing from the installation")


def read_recipe_file(name_or_path: str) -> dict[str, Any]:
    """Read a bundled recipe by name, or a recipe TOML by path, as a raw table."""
    path = Path(name_or_path)
    if not (path.suffix == ".toml" and path.is_file()):
        known = available_recipes()
        if name_or_path not in known:
            raise ConfigError(
                f"unknown recipe '{name_or_path}'",
                hint=did_you_mean(name_or_path, list(known)) or "see `edgekit recipes`",
            )
        path = known[name_or_path]
    try:
        table = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"recipe {path} is not valid TOML: {exc}") from exc
    table.setdefault("name", path.stem)
    return table


def parse_overrides(assignments: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """Turn `key.path=value` strings into a nested table; values are TOML, else plain strings."""
    table: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got '{assignment}'", hint="e.g. --set prune.ratio=0.3")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        node = table
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return table


def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """Merge two nested tables; values in `top` win."""
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def build_recipe(*layers: dict[str, Any]) -> Recipe:
    """Validate the merged layers strictly into a `Recipe`.

    Raises:
        ConfigError: Naming every unknown key, wrong type and out-of-range value at once.
    """
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = merge(merged, layer)
    return parse_table(Recipe, merged)


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


def validate_recipe(recipe: Recipe) -> Recipe:
    """Check the ranges of a recipe made in code (e.g. with `dataclasses.replace`) and return it.

    Raises:
        ConfigError: Naming every out-of-range value at once.
    """
    _raise_all(_range_problems(recipe, ""))
    return recipe


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


def recipe_to_toml(recipe: Recipe, header: str = "") -> str:
    """Return `recipe` as TOML text that `build_recipe(tomllib.loads(text))` reads back to an equal recipe.

    Args:
        recipe: The recipe to write.
        header: Text placed on top as comment lines; a line that does not start with '#' gets '# ' in front.
            Control characters, which TOML forbids in comments, are written as escapes (e.g. '\\x08').
    """
    lines = ["".join(_comment_char(c) for c in line) for line in header.splitlines()]
    comments = [line if line.startswith("#") else f"# {line}".rstrip() for line in lines]
    return "".join(f"{line}\n" for line in comments) + tomli_w.dumps(recipe_to_table(recipe))


def _comment_char(char: str) -> str:
    return f"\\x{ord(char):02x}" if (char < " " and char != "\t") or char == "\x7f" else char


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


def _prune_rules(prune: PruneConfig, path: str) -> list[str]:
    if prune.method is PruneMethod.N_M and not prune.n < prune.m:
        return [f"'{path}.n' must be < '{path}.m' when {path}.method is \"n:m\", got n = {prune.n}, m = {prune.m}"]
    return []


# Rules that involve more than one field of a section, checked after each field's own range.
_CROSS_FIELD_RULES: dict[type, Callable[[Any, str], list[str]]] = {PruneConfig: _prune_rules}


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
    rule = _CROSS_FIELD_RULES.get(type(section))
    if rule is not None:
        found += [_Problem(message) for message in rule(section, path)]
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
