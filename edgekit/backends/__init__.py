"""Backends: one module per runtime behind one small contract (`base.py`), found through an explicit registry.

A backend never registers itself on import. `REGISTRY` maps a name to "module:Class" and the module
is imported only when a build asks for that backend. Out-of-tree backends join through the
`edgekit.backends.v1` entry-point group with the same "module:Class" value. This package imports
nothing from the pipeline or the stages.
"""

from __future__ import annotations

import importlib

from edgekit.backends.base import (
    Backend,
    Compiled,
    Inspectable,
    IoContract,
    KeepsFloat,
    Problem,
    Runner,
    RunnerUnavailable,
    TensorSpec,
    installed_versions,
)
from edgekit.errors import ConfigError, InternalError, did_you_mean

REGISTRY: dict[str, str] = {
    "onnxruntime": "edgekit.backends.onnxruntime:OnnxRuntimeBackend",
    "executorch": "edgekit.backends.executorch:ExecuTorchBackend",
    "coreml": "edgekit.backends.coreml:CoreMLBackend",
}
ENTRY_POINT_GROUP = "edgekit.backends.v1"

__all__ = [
    "REGISTRY",
    "Backend",
    "Compiled",
    "Inspectable",
    "IoContract",
    "KeepsFloat",
    "Problem",
    "Runner",
    "RunnerUnavailable",
    "TensorSpec",
    "available_backends",
    "get_backend",
    "installed_versions",
]


def available_backends() -> list[str]:
    """Return the names of the built-in and entry-point backends."""
    from importlib.metadata import entry_points

    return sorted({*REGISTRY, *(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))})


def get_backend(name: str) -> Backend:
    """Import and instantiate the backend called `name`."""
    spec = REGISTRY.get(name) or _entry_point(name)
    if spec is None:
        raise ConfigError(f"unknown backend '{name}'", hint=did_you_mean(name, available_backends()))
    module_name, _, class_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InternalError(f"backend module {module_name} failed to import: {exc}") from exc
    backend: Backend = getattr(module, class_name)()
    return backend


def _entry_point(name: str) -> str | None:
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return str(ep.value)
    return None
