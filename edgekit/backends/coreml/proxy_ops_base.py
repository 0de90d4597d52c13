"""What every kernel of the Core ML stand-in shares: value conversion and reading an op's parameters.

A kernel takes the operation's inputs by name (tensors, or raw values for strings) and the MIL op
itself, and returns a tensor or a tuple of tensors. Inputs the program leaves out take the default
that coremltools 9.0 documents for the op, passed here as `default`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the PyTorch convention

from edgekit.backends.coreml._private import is_fp16

Kernel = Callable[[dict[str, Any], Any], Any]


def as_tensor(value: Any) -> torch.Tensor:
    """Return a MIL value as a tensor (fp16 and fp64 as fp32); strings stay as they are."""
    array = np.asarray(value)
    if array.dtype == np.float16 or array.dtype == np.float64:
        array = array.astype(np.float32)
    if array.dtype.kind == "U" or array.dtype == object:
        return value  # strings (modes, pad types) stay as they are
    return torch.from_numpy(np.ascontiguousarray(array))


def round_to(value: Any, dtype: Any) -> Any:
    """Round a float tensor to half precision when the MIL variable is fp16 (it stays stored as fp32)."""
    if torch.is_tensor(value) and value.is_floating_point() and is_fp16(dtype):
        return value.to(torch.float16).to(torch.float32)
    return value


def ints(value: Any) -> list[int]:
    """Return a MIL integer tensor or list as a flat list of Python ints."""
    return [int(v) for v in np.asarray(value.numpy() if torch.is_tensor(value) else value).reshape(-1)]


def param(a: dict[str, Any], op: Any, name: str, default: Any = None) -> Any:
    """Return an op's scalar parameter as a Python value, or `default` when the program leaves it out."""
    value = a.get(name)
    if value is None:
        return default
    if torch.is_tensor(value) and value.ndim == 0:
        return value.item()
    return value


def axes_of(a: dict[str, Any], name: str = "axes") -> list[int]:
    """Return the `axes` of a reduction, all of them when the program leaves it out (MIL's default)."""
    return ints(a[name]) if a.get(name) is not None else list(range(a["x"].ndim))


def spatial_pad(
    x: torch.Tensor,
    op: Any,
    a: dict[str, Any],
    kernel: list[int],
    strides: list[int],
    dilations: list[int],
    fill: float = 0.0,
) -> torch.Tensor:
    """Apply the `pad_type` / `pad` of a conv or pool op to the spatial dimensions of `x`."""
    pad_type = str(param(a, op, "pad_type", "valid"))
    dims = len(kernel)
    if pad_type == "custom":
        pad = ints(a["pad"])
    elif pad_type in ("same", "same_lower"):
        pad = []
        for size, k, s, d in zip(x.shape[-dims:], kernel, strides, dilations, strict=True):
            total = max((int(np.ceil(size / s)) - 1) * s + (k - 1) * d + 1 - size, 0)
            small, large = total // 2, total - total // 2
            pad += [large, small] if pad_type == "same_lower" else [small, large]
    else:
        pad = [0] * (2 * dims)
    torch_pad: list[int] = []
    for i in reversed(range(dims)):  # F.pad takes the last dimension first
        torch_pad += [pad[2 * i], pad[2 * i + 1]]
    return F.pad(x, torch_pad, value=fill) if any(torch_pad) else x


def unary(fn: Callable[[torch.Tensor], torch.Tensor]) -> Kernel:
    """Return the kernel of an op with one input `x` and no parameters."""
    return lambda a, op: fn(a["x"])


def binary(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Kernel:
    """Return the kernel of an op with inputs `x` and `y` (broadcast)."""
    return lambda a, op: fn(a["x"], a["y"])


def reduce(fn: Callable[..., torch.Tensor]) -> Kernel:
    """Return the kernel of a reduction over `axes` (all by default), keeping them if `keep_dims`."""

    def run(a: dict[str, Any], op: Any) -> torch.Tensor:
        return fn(a["x"], dim=axes_of(a), keepdim=bool(param(a, op, "keep_dims", False)))

    return run


def channel_shape(x: torch.Tensor) -> list[int]:
    """Return the shape that broadcasts a per-channel vector over `x` laid out as [N, C, ...]."""
    return [1, -1] + [1] * (x.ndim - 2)
