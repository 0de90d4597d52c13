"""Recipes: frozen, typed values that say how a build compresses, checks and packages a model.

Layers, lowest first: dataclass defaults < target defaults < recipe file < `--set key=value`.
Every layer is checked strictly: an unknown key is an error naming its path and the nearest key. Each number
field declares its allowed values next to it (`ranged(default, ge=..., lt=...)`); a float must also be finite
unless its range allows inf. `build_recipe` gathers every problem of the merged layers, then raises one
`ConfigError` that lists them all, so a user fixes everything in one go.
"""

from __future__ import annotations

import enum
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from edgekit.config import Range, check_ranges, parse_table, ranged, recipe_to_table
from edgekit.errors import ConfigError, InternalError, did_you_mean

__all__ = ["Range", "parse_table", "ranged", "recipe_to_table"]  # re-exported: recipes are their main users


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
    HISTOGRAM = "histogram"  # torchao HistogramObserver: the range minimising L2 quantization error (android)


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


@dataclass(frozen=True, slots=True, kw_only=True)
class QuantizeConfig:
    scheme: Scheme = Scheme.AUTO
    calibration_method: CalibrationMethod = CalibrationMethod.MINMAX
    per_channel: bool = True
    # Torch module paths left in float ("features.3" covers "features.3.conv.0"); the repair ladder adds to it.
    keep_float: tuple[str, ...] = ()
    # Torch module paths whose activations are quantized to 16 bits (ONNX Runtime QDQ only).
    int16_activations: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RepairConfig:
    """When the gate fails: diagnose per layer, then try the repair ladder, cheapest step first.

    The budget counts steps, not seconds, so a repaired build is reproducible.
    """

    enabled: bool = True  # --no-repair turns it off
    max_steps: int = ranged(8, ge=0)  # compiled-and-measured attempts after the first build
    max_float_layers: int = ranged(4, ge=0)  # layers the ladder may leave in float (or at 16 bits)
    diagnosis_samples: int = ranged(16, ge=1)  # evaluation samples used for per-layer diagnosis


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoveryConfig:
    mode: RecoveryMode = RecoveryMode.DISTILL
    steps: int = ranged(300, ge=0)
    # 0: recovery stops by `steps` only (reproducible). A positive budget also stops it after that many seconds
    # of wall-clock time, so a loaded machine trains less: the manifest then says the build is not reproducible.
    time_budget_s: float = ranged(0.0, ge=0)
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

    def cross_field_problems(self, path: str) -> list[str]:
        """n must be below m for n:m sparsity (checked after each field's own range)."""
        if self.method is PruneMethod.N_M and not self.n < self.m:
            return [f"'{path}.n' must be < '{path}.m' when {path}.method is \"n:m\", got n = {self.n}, m = {self.m}"]
        return []


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
    repair: RepairConfig = field(default_factory=RepairConfig)
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


def validate_recipe(recipe: Recipe) -> Recipe:
    """Check the ranges of a recipe made in code (e.g. with `dataclasses.replace`) and return it.

    Raises:
        ConfigError: Naming every out-of-range value at once.
    """
    check_ranges(recipe)
    return recipe


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
