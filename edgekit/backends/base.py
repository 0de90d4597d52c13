"""The one contract every runtime module meets: values in, values out.

A backend knows nothing of the build pipeline. It gets a model, named example inputs, named
calibration samples, the quantization settings, its own typed options and a scratch folder, and
returns a `Compiled` value: the artifact, the same model in float in the same runtime (the baseline
for size and latency), the scheme it really used, and facts for the manifest. `open()` gives a
`Runner` that executes an artifact on named arrays and returns named arrays. Stages own the build
state; only they write the manifest.

Optional abilities are separate protocols a backend may implement (`Inspectable`, `KeepsFloat`),
checked with `isinstance` at run time, so a new backend is useful before it has them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

from edgekit.errors import ExitStatus

if TYPE_CHECKING:
    import numpy as np

    from edgekit.recipe import QuantizeConfig, Recipe, Scheme

Arrays = Mapping[str, "np.ndarray"]  # named tensors, each with a leading batch dimension


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """One thing wrong with a build request, found before anything heavy runs."""

    key: str  # where it is: "quantize.scheme", "options.abi", "dependency:torch-pruning"
    message: str
    hint: str | None = None
    status: ExitStatus = ExitStatus.CONFIG  # CONFIG, or MISSING_DEPENDENCY for an absent package

    def line(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


@dataclass(frozen=True, slots=True, kw_only=True)
class DynamicDim:
    """One axis of an input whose size may vary between `min` and `max` (inclusive) at run time."""

    axis: int
    min: int
    max: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TensorSpec:
    """One named input or output of an artifact, batch dimension included; `shape` is the example's."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name as the app must feed or read it: "float32", "int64", "int32"
    dynamic: tuple[DynamicDim, ...] = ()  # axes whose size may vary, with their range


def export_dynamic_shapes(io: IoContract) -> tuple[dict[int, Any] | None, ...] | None:
    """Return torch.export `dynamic_shapes` for the contract's inputs (None when every shape is static)."""
    if not any(t.dynamic for t in io.inputs):
        return None
    from torch.export import Dim

    return tuple(
        {d.axis: Dim(f"{t.name}_{d.axis}", min=d.min, max=d.max) for d in t.dynamic} if t.dynamic else None
        for t in io.inputs
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class IoContract:
    """The named inputs and outputs of an artifact, in order."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]


@dataclass(frozen=True, slots=True, kw_only=True)
class Compiled:
    """What `compile()` returns: files in the work folder and facts about them."""

    artifact: Path  # the file or folder that ships (model.onnx, model.pte, model.mlpackage)
    float_reference: Path | None  # the same model (pruned, not quantized) in float, same runtime and format
    scheme: Scheme  # the scheme really used: never "auto"
    facts: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))  # manifest sections
    runtime: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))  # what an app needs to run it
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Runner:
    """Runs named arrays through an artifact, or through a labelled host-side stand-in for it.

    `mode` is "runtime" when the artifact itself runs in its own runtime and "proxy" when a host-side
    model that applies the same compression stands in; `reason` says why a proxy was used, and
    `checked_with` names what ran (runtime and version, or the proxy).
    """

    run: Callable[[Arrays], dict[str, np.ndarray]]
    mode: Literal["runtime", "proxy"]
    checked_with: str
    reason: str = ""


class RunnerUnavailable(Exception):  # noqa: N818 - a state, not an error: the artifact stays valid
    """No runtime and no stand-in can execute this artifact on this host; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Backend(Protocol):
    """What every runtime module provides. `edgekit/backends/onnxruntime.py` is the smallest example."""

    name: ClassVar[str]
    artifact_name: ClassVar[str]  # "model.onnx", "model.pte", "model.mlpackage"
    extra: ClassVar[str]  # the pip extra that installs it: pip install 'edgekit-deploy[extra]'
    schemes: ClassVar[tuple[Scheme, ...]]  # every scheme it can build; a target may offer fewer
    stores_sparse_weights: ClassVar[bool]  # whether zeroed weights make its artifact smaller
    Options: ClassVar[type]  # a frozen dataclass: the target's [options], every default in one place

    def versions(self) -> dict[str, str]:
        """Return the installed toolchain and runtime versions that shape this backend's artifacts."""
        ...

    def check(self, recipe: Recipe, options: Any) -> list[Problem]:
        """Return every problem with this recipe and these options, missing packages included."""
        ...

    def compile(
        self,
        model: Any,
        io: IoContract,
        example_inputs: Arrays,
        calibration: Arrays,
        quantize: QuantizeConfig,
        options: Any,
        workdir: Path,
        *,
        sparse_weights: bool = False,
        metadata: Mapping[str, Any] | None = None,
    ) -> Compiled:
        """Quantize and export `model` into `workdir` (each backend in its own order)."""
        ...

    def open(self, artifact: Path, io: IoContract, options: Any) -> Runner:
        """Return a runner for `artifact`; raise RunnerUnavailable when nothing here can run it."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerError:
    """How much quantization hurts one layer, named the way the user knows it."""

    module: str  # torch module path: "features.3.conv.0"
    native: tuple[str, ...]  # the runtime's own node names for it
    op: str  # "conv", "linear", "lstm", ...
    sqnr_db: float  # SQNR of the layer's own output, quantized vs float, on the diagnosis samples


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerReport:
    """Per-layer errors, most sensitive first, and the tool that measured them."""

    tool: str  # "onnxruntime.quantization.qdq_loss_debug", "torchao PT2E graph", "Core ML proxy intermediates"
    layers: tuple[LayerError, ...]
    notes: tuple[str, ...] = ()


@runtime_checkable
class Inspectable(Protocol):
    """Optional: measure each layer's own quantization error, with the runtime's tools where they exist."""

    def layer_errors(
        self,
        compiled: Compiled,
        model: Any,
        io: IoContract,
        calibration: Arrays,
        samples: Arrays,
        quantize: QuantizeConfig,
        options: Any,
        workdir: Path,
    ) -> LayerReport:
        """Return every quantized layer's output SQNR on `samples`, sorted worst first.

        `compiled` is what `compile()` built with `quantize` from `model` and `calibration`.
        """
        ...


@runtime_checkable
class KeepsFloat(Protocol):
    """Optional: `compile()` honours `quantize.keep_float` (torch module paths left in float).

    `sixteen_bit_activations` says whether it also honours `quantize.int16_activations`. A backend
    without this ability refuses both in `check()`. Unknown module paths are a ConfigError naming them.
    """

    keeps_float: ClassVar[bool]
    sixteen_bit_activations: ClassVar[bool]


def require_scheme(scheme: Scheme, offered: tuple[Scheme, ...], backend: str) -> None:
    """Raise ConfigError when `compile()` is asked for a scheme this backend cannot build."""
    from edgekit.errors import ConfigError

    if scheme not in offered:
        allowed = ", ".join(s.value for s in offered)
        raise ConfigError(f"the {backend} backend cannot build scheme '{scheme.value}'", hint=f"use one of: {allowed}")


def missing_modules(modules: Sequence[str], extra: str, what: str) -> list[Problem]:
    """Return a MISSING_DEPENDENCY problem for each module that cannot be imported."""
    import importlib.util

    problems = []
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            problems.append(
                Problem(
                    key=f"dependency:{module}",
                    message=f"{what} needs '{module}', which is not installed",
                    hint=f"pip install 'edgekit-deploy[{extra}]'",
                    status=ExitStatus.MISSING_DEPENDENCY,
                )
            )
    return problems


def installed_versions(*distributions: str) -> dict[str, str]:
    """Return the installed version of each distribution, or "not installed"."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for dist in distributions:
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            found[dist] = "not installed"
    return found


def weights_fingerprint(model: Any) -> str:
    """Hash a model's weights and buffers, so that an in-place change (pruning) is not taken for the same model.

    Backends key their caches of float exports by it: repair steps compile the same model many times.
    """
    import hashlib

    import torch

    digest = hashlib.blake2b(digest_size=16)
    state = model.state_dict() if hasattr(model, "state_dict") else {}
    for name, tensor in state.items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
