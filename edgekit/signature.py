"""A model's named inputs and outputs, as apps will see them, and running a torch model on named arrays.

Inputs are named after forward()'s arguments (a one-input model's input is called `input`). Outputs
may be tensors, tuples, lists or dicts, nested: they are flattened in pytree order and named by
their path (`out`, `aux`, `logits`, `output_0`, `boxes_1`); a single tensor is `output`. Constant
non-tensor arguments (a sample rate) are bound once, from the recipe's `io.constants`.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from edgekit.errors import InputError

Arrays = Mapping[str, np.ndarray]
SINGLE_INPUT, SINGLE_OUTPUT = "input", "output"
# A one-input model's argument name says nothing when it is one of these: the input is then called `input`.
GENERIC_NAMES = frozenset({"x", "input", "inputs", "inp", "args", "data", "tensor", "sample", "batch", "arg0_1"})


def input_names(module: Any, count: int, program: Any = None) -> list[str]:
    """Return names for `count` positional inputs: the exported signature's, forward()'s, or input_<i>.

    A one-input model's input keeps a meaningful argument name (`input_ids`, `audio`); a generic one
    (`x`, `input`) becomes `input`.
    """
    names: list[str] = []
    if program is not None:
        from torch.export.graph_signature import InputKind

        names = [s.arg.name for s in program.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]
    if len(names) != count:
        try:
            params = list(inspect.signature(module.forward).parameters.values())
            names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][:count]
        except (TypeError, ValueError):  # TorchScript and builtins may have no Python signature
            names = []
    if len(names) != count or len(set(names)) != count:
        names = [f"input_{i}" for i in range(count)]
    if count == 1 and (names[0] in GENERIC_NAMES or re.fullmatch(r"input_\d+", names[0])):
        return [SINGLE_INPUT]
    return [_identifier(n) for n in names]


def flatten_outputs(out: Any) -> list[tuple[str, Any]]:
    """Flatten a model's output into (name, tensor) pairs in pytree order; non-tensors are an InputError."""
    import torch
    from torch.utils._pytree import tree_flatten_with_path

    if isinstance(out, torch.Tensor):
        return [(SINGLE_OUTPUT, out)]
    leaves, _ = tree_flatten_with_path(out)
    named = []
    for path, leaf in leaves:
        name = _path_name(path)
        if not isinstance(leaf, torch.Tensor):
            raise InputError(
                f"the model returns a {type(leaf).__name__} at output '{name}'; edgekit handles tensor outputs",
                hint="return tensors (in tuples, lists or dicts) from forward()",
            )
        named.append((name, leaf))
    names = [n for n, _ in named]
    if len(set(names)) != len(names):
        named = [(f"output_{i}", t) for i, (_, t) in enumerate(named)]
    return named


def flat_module(module: Any, constants: Mapping[str, Any] | None = None) -> Any:
    """Return an nn.Module taking positional tensors and returning a flat tuple of its output tensors."""
    import torch

    class FlatOutputs(torch.nn.Module):
        """Calls the user's model with its constant arguments and flattens what it returns."""

        def __init__(self) -> None:
            super().__init__()
            self.model = module
            self.constants = dict(constants or {})

        def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return tuple(t for _, t in flatten_outputs(self.model(*inputs, **self.constants)))

    wrapper = FlatOutputs()
    wrapper.training = False  # not .eval(): it recurses, and exported GraphModules refuse train()/eval()
    return wrapper


def run_torch(
    module: Any, inputs: Arrays, names: list[str], batch: int = 1, output_names: list[str] | None = None
) -> dict[str, np.ndarray]:
    """Run `module` over named inputs (in `names` order) in batches of `batch`; return every output by name.

    `output_names` names the flattened outputs by position (a wrapped model returns a plain tuple).
    """
    import torch

    count = min(len(a) for a in inputs.values())
    collected: dict[str, list[np.ndarray]] = {}
    with torch.no_grad():
        for start in range(0, count, batch):
            args = [torch.from_numpy(np.ascontiguousarray(inputs[n][start : start + batch])) for n in names]
            flat = flatten_outputs(module(*args))
            if output_names is not None:
                flat = [(name, tensor) for name, (_, tensor) in zip(output_names, flat, strict=True)]
            for name, tensor in flat:
                collected.setdefault(name, []).append(tensor.detach().numpy())
    return {name: np.concatenate(parts) for name, parts in collected.items()}


def _path_name(path: tuple[Any, ...]) -> str:
    parts = []
    for i, key in enumerate(path):
        for attr in ("key", "idx", "name"):
            if hasattr(key, attr):
                value = getattr(key, attr)
                parts.append(f"output_{value}" if i == 0 and attr == "idx" else str(value))
                break
    return _identifier("_".join(parts) or SINGLE_OUTPUT)


def _identifier(name: str) -> str:
    """Return `name` as a valid tensor name for ONNX, Core ML and ExecuTorch apps (letters, digits, _)."""
    clean = re.sub(r"\W", "_", name)
    return clean if clean and not clean[0].isdigit() else f"t_{clean}"
