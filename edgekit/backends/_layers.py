"""Layers named by torch module path: what `quantize.keep_float` and per-layer diagnosis speak.

Every backend maps these paths onto its own graph (ONNX node scopes, the FX graph's
`nn_module_stack`, Core ML op names); the matching rules live here so all three agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from edgekit.errors import ConfigError, did_you_mean


def covered(module: str, paths: Sequence[str]) -> bool:
    """Return True when `module` is one of `paths` or a submodule of one ("features.3" covers "features.3.conv")."""
    return any(module == p or module.startswith(f"{p}.") for p in paths)


def check_layer_paths(requested: Sequence[str], known: Iterable[str], key: str) -> None:
    """Raise ConfigError when a requested path matches no layer of the model.

    Args:
        requested: Module paths from the recipe (e.g. `quantize.keep_float`).
        known: Module paths of the model's quantizable layers.
        key: The recipe key, named in the message.
    """
    layers = sorted(set(known))
    unknown = [p for p in requested if not any(covered(layer, [p]) for layer in layers)]
    if not unknown:
        return
    hint = did_you_mean(unknown[0], layers) or f"layers of this model: {', '.join(layers[:8])}"
    raise ConfigError(f"{key} names no layer of this model: {', '.join(unknown)}", hint=hint)


def module_path(node: Any) -> str:
    """Return the torch module path an FX node came from ("" for the top level), from `nn_module_stack`."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path, _kind = list(stack.values())[-1]
    return _clean(str(path))


def _clean(path: str) -> str:
    """Turn dynamo's "L['self'].features[3].conv" spellings into "features.3.conv"."""
    for prefix in ("L['self'].", "L__self__.", "L['self']"):
        if path.startswith(prefix):
            path = path[len(prefix) :]
    return path.replace("[", ".").replace("]", "").replace("'", "").strip(".")
