"""The artifact's manifest: a typed, versioned record of what the artifact is and how it was checked.

`Manifest` is frozen dataclasses all the way down for the parts apps and pipelines read (target,
artifact, io, accuracy, golden, size); backend-specific facts (quantize, export, prune, runtime)
stay plain tables. `to_json`/`from_json` round-trip it, and `schema/manifest.schema.json` (shipped
in the package, and in the repo for app authors) describes the JSON.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edgekit.backends.base import TensorSpec
from edgekit.errors import InputError
from edgekit.hashing import sha256_of

SCHEMA_VERSION = 2
MANIFEST = "manifest.json"
# What varies between two builds of the same inputs lives here, beside the manifest, outside `files` and bundles:
# the time of the build, host latency and stage timings. `report.html` shows them, so it stays outside too.
MEASURED = "measured.json"
MEASURED_FIELDS = ("created", "latency", "build")
REPORT = "report.html"
OUTSIDE_REPRODUCIBLE = (MEASURED, REPORT)
SCHEMA_PATH = Path(__file__).resolve().parent / "schema" / "manifest.schema.json"
Status = Literal["passed", "failed", "proxy", "skipped", "inconclusive"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetRecord:
    name: str
    description: str
    backend: str
    device: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ArtifactRecord:
    file: str  # model.onnx, model.pte, model.mlpackage
    format: str  # the backend that made it


@dataclass(frozen=True, slots=True, kw_only=True)
class IoRecord:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    preprocessing: dict[str, Any] = field(default_factory=dict)
    labels: tuple[str, ...] = ()
    state: dict[str, str] = field(default_factory=dict)  # output -> the input it feeds at the next step


@dataclass(frozen=True, slots=True, kw_only=True)
class Gate:
    rule: str
    value: float | None
    passed: bool | None  # None: not decided (no real data)
    rules: tuple[dict[str, Any], ...] = ()  # each rule: metric, output, op, threshold, value, passed


@dataclass(frozen=True, slots=True, kw_only=True)
class Accuracy:
    status: Status
    reason: str = ""
    checked_with: str = ""
    metrics: dict[str, float] = field(default_factory=dict)  # the first output's, and custom metrics
    outputs: dict[str, dict[str, float]] = field(default_factory=dict)  # every output's metrics
    gate: Gate | None = None
    sequence: dict[str, Any] = field(default_factory=dict)  # stateful models: steps run closed loop
    evidence: dict[str, Any] = field(default_factory=dict)  # intervals, flipped samples, per-class drops


@dataclass(frozen=True, slots=True, kw_only=True)
class Golden:
    count: int
    atol: float = 0.0
    rtol: float = 0.0
    samples: tuple[dict[str, dict[str, str]], ...] = ()  # each: {"inputs": {name: path}, "outputs": {name: path}}
    produced_by: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Size:
    artifact_bytes: int
    float_reference_bytes: int | None = None
    artifact_over_float: float | None = None
    pruned_float_bytes: int | None = None  # a pruned build: the pruned model in float (the comparison is unpruned)


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """Everything an app, a pipeline or a person needs to know about one artifact."""

    schema_version: int = SCHEMA_VERSION
    name: str
    created: str = ""  # UTC time of the build (measured.json)
    target: TargetRecord
    artifact: ArtifactRecord
    edgekit: dict[str, str]
    toolchain: dict[str, str]
    source_model: dict[str, Any]
    recipe: dict[str, Any]
    io: IoRecord
    runtime: dict[str, Any]  # what an app needs: runtime, version, delegate, options as resolved
    data: dict[str, Any]
    prune: dict[str, Any]
    quantize: dict[str, Any]
    export: dict[str, Any]
    accuracy: Accuracy
    latency: dict[str, Any] = field(default_factory=dict)  # host latency (measured.json)
    size: Size
    golden: Golden
    warnings: tuple[str, ...] = ()
    diagnosis: dict[str, Any] = field(default_factory=dict)  # per-layer error when the gate failed (repair ran)
    repair: dict[str, Any] = field(default_factory=dict)  # every repair step tried, measured, and the one kept
    build: dict[str, Any] = field(default_factory=dict)  # seconds by stage (measured.json)
    reproducibility: dict[str, Any] = field(default_factory=dict)  # whether the same inputs give the same bytes
    files: dict[str, str] = field(default_factory=dict)  # sha256 of every file but the manifest and measured facts

    def to_json(self, *, measured: bool = True) -> dict[str, Any]:
        """Return plain JSON values (tuples become lists); `measured=False` leaves out MEASURED_FIELDS,
        which is what manifest.json holds."""
        table = _plain(dataclasses.asdict(self))
        return table if measured else {k: v for k, v in table.items() if k not in MEASURED_FIELDS}

    def measured_json(self) -> dict[str, Any]:
        """Return what measured.json holds: the facts that differ between two builds of the same inputs."""
        table = _plain(dataclasses.asdict(self))
        return {"schema_version": self.schema_version, **{k: table[k] for k in MEASURED_FIELDS}}

    @classmethod
    def from_json(cls, table: dict[str, Any]) -> Manifest:
        """Build a Manifest from parsed JSON; raise InputError naming what does not fit."""
        return _build(cls, table, "manifest")

    @property
    def inconclusive(self) -> bool:
        return self.accuracy.status == "inconclusive"

    @property
    def gate_failed(self) -> bool:
        return self.accuracy.gate is not None and self.accuracy.gate.passed is False


def write_manifest(folder: Path, manifest: Manifest) -> Manifest:
    """Hash every file in `folder`, write manifest.json and measured.json, and return the manifest with its hashes.

    manifest.json holds no measured fact, so two builds of the same inputs write the same bytes; the
    measured facts go to measured.json (not hashed, not bundled).
    """
    manifest = dataclasses.replace(manifest, files=file_hashes(folder))
    for name, table in ((MANIFEST, manifest.to_json(measured=False)), (MEASURED, manifest.measured_json())):
        text = json.dumps(table, indent=2, allow_nan=False)
        (folder / name).write_text(text + "\n", encoding="utf-8")
    return manifest


def read_manifest(folder: Path) -> Manifest:
    """Read and check an artifact folder's manifest; raise InputError when it is not one."""
    path = folder / MANIFEST
    if not path.is_file():
        raise InputError(f"'{folder}' is not an edgekit artifact (no {MANIFEST})")
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(table, dict):
        raise InputError(f"{path} is not a JSON object")
    version = table.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise InputError(
            f"{path} has schema version {version!r}; this edgekit reads up to {SCHEMA_VERSION}", hint="upgrade edgekit"
        )
    if version < SCHEMA_VERSION:
        raise InputError(
            (f"{path} has schema version {version}, older than {SCHEMA_VERSION}"), hint=("rebuild the artifact")
        )
    return _with_measured(Manifest.from_json(table), folder / MEASURED)


def _with_measured(manifest: Manifest, path: Path) -> Manifest:
    """Return `manifest` with the facts of measured.json, when it is there and readable (it is not hashed:
    those facts are informational, and nothing is checked against them)."""
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return manifest
    if not isinstance(table, dict):
        return manifest
    found = {k: table[k] for k in MEASURED_FIELDS if isinstance(table.get(k), str if k == "created" else dict)}
    return dataclasses.replace(manifest, **found)


def file_hashes(folder: Path) -> dict[str, str]:
    """Hash every top-level entry and golden file except the manifest and what is outside reproducibility."""
    hashes: dict[str, str] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name in (MANIFEST, *OUTSIDE_REPRODUCIBLE):
            continue
        if entry.is_dir() and entry.suffix != ".mlpackage":
            for file in sorted(p for p in entry.rglob("*") if p.is_file()):
                hashes[file.relative_to(folder).as_posix()] = sha256_of(file)
        else:
            hashes[entry.name] = sha256_of(entry)
    return hashes


def check_files(folder: Path, manifest: Manifest) -> list[str]:
    """Return a line for every file that is missing, differs from the manifest, or is not in it."""
    problems = []
    for name, expected in manifest.files.items():
        path = folder / name
        if not path.exists():
            problems.append(f"{name}: missing")
        elif sha256_of(path) != expected:
            problems.append(f"{name}: sha256 differs from the manifest")
    problems += [f"{name}: not listed in the manifest" for name in file_hashes(folder) if name not in manifest.files]
    return problems


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def _plain(value: Any) -> Any:
    """Return JSON values: tuples as lists, non-finite floats as "inf", "-inf" or "nan" (JSON has none)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str | int | float | bool | type(None)):
        return value
    return _plain(_json_default(value))


def _json_default(value: Any) -> Any:
    """Make mapping proxies, paths and numpy scalars JSON-ready."""
    if hasattr(value, "items"):
        return dict(value.items())
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, str):  # a StrEnum
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _build(kind: Any, value: Any, path: str) -> Any:
    """Turn parsed JSON into `kind` (a dataclass, tuple, optional, dict or scalar), checking as it goes."""
    origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        if not isinstance(value, dict):
            raise InputError(f"{path} must be an object, got {type(value).__name__}")
        hints = typing.get_type_hints(kind)
        names = {f.name for f in dataclasses.fields(kind)}
        required = {
            f.name
            for f in dataclasses.fields(kind)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        missing = sorted(required - set(value))
        if missing:
            raise InputError(f"{path} lacks {', '.join(missing)}", hint="the manifest is damaged: rebuild the artifact")
        return kind(**{k: _build(hints[k], v, f"{path}.{k}") for k, v in value.items() if k in names})
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in typing.get_args(kind):
            return None
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        return _build(options[0], value, path)
    if origin is tuple:
        if not isinstance(value, list):
            raise InputError(f"{path} must be a list")
        item = typing.get_args(kind)[0]
        return tuple(_build(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is Literal:
        if value not in typing.get_args(kind):
            raise InputError(f"{path} cannot be {value!r}")
        return value
    if origin is dict or kind is dict:
        if not isinstance(value, dict):
            raise InputError(f"{path} must be an object")
        return value
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind is float and value in ("inf", "-inf", "nan"):
        return float(value)
    if kind in (int, str, bool) and isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    if kind is Any:
        return value
    raise InputError(f"{path} must be {getattr(kind, '__name__', kind)}, got {value!r}")
