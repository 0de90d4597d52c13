"""Backends: one module per runtime behind one small protocol, found through an explicit registry.

A backend never registers itself on import. The registry below maps a name to "module:Class" and
imports the module only when a build asks for that backend. Out-of-tree backends can be added
through the `edgekit.backends.v1` entry-point group with the same "module:Class" value.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from edgekit.errors import ConfigError, InternalError, did_you_mean

if TYPE_CHECKING:
    import numpy as np

    from edgekit.pipeline import BuildContext, BuildState

REGISTRY: dict[str, str] = {
    "onnxruntime": "edgekit.backends.onnxruntime:OnnxRuntimeBackend",
    "executorch": "edgekit.backends.executorch:ExecuTorchBackend",
    "coreml": "edgekit.backends.coreml:CoreMLBackend",
}
ENTRY_POINT_GROUP = "edgekit.backends.v1"


@dataclass(frozen=True, slots=True, kw_only=True)
class Runner:
    """Runs one batch of inputs through an artifact (or its host-side stand-in) and returns outputs.

    `mode` is "runtime" when the artifact itself runs in its own runtime, and "proxy" when a host-side
    model that applies the same compression stands in for it; `reason` says why a proxy was used.
    """

    run: Callable[[np.ndarray], np.ndarray]
    mode: Literal["runtime", "proxy"]
    reason: str = ""


class Backend(Protocol):
    """What every runtime module provides. See onnxruntime.py for a complete example."""

    name: str
    artifact_name: str  # "model.onnx", "model.pte", "model.mlpackage"
    stage_order: tuple[str, str]  # ("export", "quantize") or ("quantize", "export")
    extra: str  # the pip extra that installs this backend: pip install 'edgekit-deploy[extra]'

    def check_installed(self) -> None:
        """Raise MissingDependencyError naming the pip extra when the runtime is absent."""

    def check_options(self, options: dict[str, Any]) -> None:
        """Raise ConfigError for an unknown or invalid target option."""

    def versions(self) -> dict[str, str]:
        """Return the toolchain and runtime versions that matter for this artifact."""

    def quantize(self, state: BuildState, ctx: BuildContext) -> BuildState:
        """Compress per ctx.recipe.quantize; record what was quantized in state.facts['quantize']."""

    def export(self, state: BuildState, ctx: BuildContext) -> BuildState:
        """Write state.artifact (and state.reference_artifact, the float model, when it can)."""

    def runner(self, state: BuildState, ctx: BuildContext) -> Runner:
        """Return a runner for the artifact: the real runtime when present, else a labelled proxy."""

    def reference_runner(self, state: BuildState, ctx: BuildContext) -> Runner | None:
        """Return a runner for state.reference_artifact in the same runtime, or None."""

    def runtime_contract(self, state: BuildState, ctx: BuildContext) -> dict[str, Any]:
        """Return what an app must use to run the artifact (runtime, version, opset, delegate...)."""


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


def get_backend(name: str) -> Backend:
    """Import and instantiate the backend called `name`."""
    spec = REGISTRY.get(name) or _entry_point(name)
    if spec is None:
        raise ConfigError(f"unknown backend '{name}'", hint=did_you_mean(name, list(REGISTRY)))
    module_name, _, class_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InternalError(f"backend module {module_name} failed to import: {exc}") from exc
    return getattr(module, class_name)()


def _entry_point(name: str) -> str | None:
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.value
    return None
