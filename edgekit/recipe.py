"""Recipes: frozen, typed values that say how a build compresses, checks and packages a model.

Layers, lowest first: dataclass defaults < target defaults < recipe file < `--set key=value`.
Every layer is checked strictly: an unknown key is an error naming its path and the nearest key.
"""

from __future__ import annotations

import dataclasses
import enum
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import ConfigError, InternalError, did_you_mean


class Scheme(str, enum.Enum):
    """How weights and activations are stored in the artifact."""

    AUTO = "auto"  # the backend chooses by what the model contains, and says which
    INT8_STATIC = "int8-static"  # int8 weights and activations, calibrated
    INT8_DYNAMIC = "int8-dynamic"  # int8 weights, activations quantized at run time
    W8 = "w8"  # int8 weights only (Core ML)
    W8A8 = "w8a8"  # int8 weights and activations (Core ML, iOS 17+)
    FP16 = "fp16"
    FP32 = "fp32"


class CalibrationMethod(str, enum.Enum):
    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"


class PruneMethod(str, enum.Enum):
    STRUCTURED = "structured"  # whole channels removed: smaller and faster
    UNSTRUCTURED = "unstructured"  # single weights zeroed, stored sparse (Core ML)
    N_M = "n:m"  # n of every m weights zeroed, stored sparse (Core ML)


class Importance(str, enum.Enum):
    L1 = "l1"
    L2 = "l2"
    TAYLOR = "taylor"


class RecoveryMode(str, enum.Enum):
    NONE = "none"
    DISTILL = "distill"  # learn the float model's outputs on the calibration inputs
    FINETUNE = "finetune"  # cross-entropy on labelled calibration samples


@dataclass(frozen=True, slots=True, kw_only=True)
class QuantizeConfig:
    scheme: Scheme = Scheme.AUTO
    calibration_method: CalibrationMethod = CalibrationMethod.MINMAX
    per_channel: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoveryConfig:
    mode: RecoveryMode = RecoveryMode.DISTILL
    steps: int = 300
    time_budget_s: float = 120.0
    learning_rate: float = 1e-3
    batch_size: int = 32


@dataclass(frozen=True, slots=True, kw_only=True)
class PruneConfig:
    ratio: float = 0.0  # 0 disables pruning
    method: PruneMethod = PruneMethod.STRUCTURED
    importance: Importance = Importance.L1
    global_pruning: bool = False
    keep_layers: tuple[str, ...] = ()  # module names never pruned; the last Linear is always kept
    n: int = 2  # for method = "n:m"
    m: int = 4
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)


@dataclass(frozen=True, slots=True, kw_only=True)
class DataConfig:
    calibration_size: int = 128
    evaluation_size: int = 512
    seed: int = 0
    synthetic_samples: int = 32  # used only when no --data is given


@dataclass(frozen=True, slots=True, kw_only=True)
class Preprocessing:
    """What an app must do to a raw image before the model sees it: (x * scale - mean) / std."""

    layout: str = "NCHW"
    color: str = "rgb"  # rgb | grayscale
    resize: tuple[int, ...] = ()  # (height, width); empty keeps the size
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class InputConfig:
    shape: tuple[int, ...] = ()  # empty: taken from the model (.pt2) or the data
    dtype: str = "float32"


@dataclass(frozen=True, slots=True, kw_only=True)
class GateConfig:
    max_top1_drop: float = 1.0  # percentage points, used when labels exist
    min_sqnr_db: float = 20.0  # used when there are no labels


@dataclass(frozen=True, slots=True, kw_only=True)
class LatencyConfig:
    enabled: bool = True
    warmup: int = 10
    runs: int = 50


@dataclass(frozen=True, slots=True, kw_only=True)
class GoldenConfig:
    samples: int = 4


@dataclass(frozen=True, slots=True, kw_only=True)
class Recipe:
    name: str = "custom"
    description: str = ""
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    data: DataConfig = field(default_factory=DataConfig)
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    input: InputConfig = field(default_factory=InputConfig)
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
    """Validate the merged layers strictly into a `Recipe`."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = merge(merged, layer)
    return _from_table(Recipe, merged, path="")


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
            table[f.name] = list(value)
        else:
            table[f.name] = value
    return table


def _from_table(cls: type, table: Any, path: str) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"'{path or 'recipe'}' must be a table, got {table!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values: dict[str, Any] = {}
    for key, raw in table.items():
        key_path = f"{path}.{key}" if path else key
        if key not in names:
            raise ConfigError(
                f"unknown recipe key '{key_path}'", hint=did_you_mean(key, names) or f"known keys: {', '.join(names)}"
            )
        values[key] = _coerce(hints[key], raw, key_path)
    return cls(**values)


def _coerce(kind: Any, raw: Any, path: str) -> Any:
    if dataclasses.is_dataclass(kind):
        return _from_table(kind, raw, path)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        choices = [m.value for m in kind]
        if raw not in choices:
            hint = did_you_mean(str(raw), choices) or f"one of: {', '.join(choices)}"
            raise ConfigError(f"'{path}' cannot be {raw!r}", hint=hint)
        return kind(raw)
    origin = typing.get_origin(kind)
    if origin is tuple:
        if not isinstance(raw, list | tuple):
            raise ConfigError(f"'{path}' must be a list, got {raw!r}")
        (item_kind, _ellipsis) = typing.get_args(kind)
        return tuple(_coerce(item_kind, item, f"{path}[{i}]") for i, item in enumerate(raw))
    if origin in (types.UnionType, typing.Union):
        raise InternalError(f"recipe field '{path}' has a union type, which the loader does not support")
    if kind is float and isinstance(raw, int | float) and not isinstance(raw, bool):
        return float(raw)
    if kind is int and isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if kind in (bool, str) and isinstance(raw, kind):
        return raw
    raise ConfigError(f"'{path}' must be {kind.__name__}, got {raw!r}")
