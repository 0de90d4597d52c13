"""The kernels of the Core ML stand-in: one PyTorch function per MIL operation, in `OPS`.

Each kernel takes the operation's inputs by name (tensors, or raw values for strings) and the MIL op
itself (for its parameters), and returns a tensor or a tuple of tensors. Every kernel is tested
against the PyTorch function the converter mapped to it (tests/backends/coreml/test_proxy_ops.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the PyTorch convention

from edgekit.backends.coreml._private import is_fp16


def as_tensor(value: Any) -> torch.Tensor:
    array = np.asarray(value)
    if array.dtype == np.float16 or array.dtype == np.float64:
        array = array.astype(np.float32)
    if array.dtype.kind == "U" or array.dtype == object:
        return value  # strings (modes, pad types) stay as they are
    return torch.from_numpy(np.ascontiguousarray(array))


def round_to(value: Any, dtype: Any) -> Any:
    if torch.is_tensor(value) and value.is_floating_point() and is_fp16(dtype):
        return value.to(torch.float16).to(torch.float32)
    return value


def _ints(value: Any) -> list[int]:
    return [int(v) for v in np.asarray(value.numpy() if torch.is_tensor(value) else value).reshape(-1)]


def _param(a: dict[str, Any], op: Any, name: str, default: Any = None) -> Any:
    value = a.get(name)
    if value is None:
        return default
    if torch.is_tensor(value) and value.ndim == 0:
        return value.item()
    return value


def _spatial_pad(
    x: torch.Tensor,
    op: Any,
    a: dict[str, Any],
    kernel: list[int],
    strides: list[int],
    dilations: list[int],
    fill: float = 0.0,
) -> torch.Tensor:
    pad_type = str(_param(a, op, "pad_type", "valid"))
    dims = len(kernel)
    if pad_type == "custom":
        pad = _ints(a["pad"])
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


def _conv(a: dict[str, Any], op: Any) -> torch.Tensor:
    x, w = a["x"], a["weight"]
    dims = w.ndim - 2
    strides = _ints(a["strides"]) if a.get("strides") is not None else [1] * dims
    dilations = _ints(a["dilations"]) if a.get("dilations") is not None else [1] * dims
    x = _spatial_pad(x, op, a, list(w.shape[2:]), strides, dilations)
    fn = (F.conv1d, F.conv2d, F.conv3d)[dims - 1]
    return fn(x, w, a.get("bias"), stride=strides, dilation=dilations, groups=int(_param(a, op, "groups", 1)))


def _pool(kind: str) -> Callable[[dict[str, Any], Any], torch.Tensor]:
    def run(a: dict[str, Any], op: Any) -> torch.Tensor:
        kernel, strides = _ints(a["kernel_sizes"]), _ints(a["strides"])
        dims, ceil = len(kernel), bool(_param(a, op, "ceil_mode", False))
        if kind == "max":
            x = _spatial_pad(a["x"], op, a, kernel, strides, [1] * dims, fill=float("-inf"))
            return (F.max_pool1d, F.max_pool2d, F.max_pool3d)[dims - 1](x, kernel, strides, ceil_mode=ceil)
        x = _spatial_pad(a["x"], op, a, kernel, strides, [1] * dims)
        ones = _spatial_pad(torch.ones_like(a["x"][:1, :1]), op, a, kernel, strides, [1] * dims)
        pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[dims - 1]
        total = pool(x, kernel, strides, ceil_mode=ceil)
        if bool(_param(a, op, "exclude_padding_from_average", False)):
            total = total / pool(ones, kernel, strides, ceil_mode=ceil)
        return total

    return run


def _reduce(fn: Callable[..., torch.Tensor]) -> Callable[[dict[str, Any], Any], torch.Tensor]:
    def run(a: dict[str, Any], op: Any) -> torch.Tensor:
        axes = _ints(a["axes"]) if a.get("axes") is not None else list(range(a["x"].ndim))
        return fn(a["x"], dim=axes, keepdim=bool(_param(a, op, "keep_dims", False)))

    return run


def _gelu(a: dict[str, Any], op: Any) -> torch.Tensor:
    mode = str(_param(a, op, "mode", "EXACT"))
    if mode == "SIGMOID_APPROXIMATION":
        return a["x"] * torch.sigmoid(1.702 * a["x"])
    return F.gelu(a["x"], approximate="tanh" if mode == "TANH_APPROXIMATION" else "none")


def _layer_norm(a: dict[str, Any], op: Any) -> torch.Tensor:
    x = a["x"]
    axes = _ints(a["axes"]) if a.get("axes") is not None else list(range(x.ndim))
    mean = x.mean(dim=axes, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=axes, keepdim=True)
    y = (x - mean) / torch.sqrt(var + float(_param(a, op, "epsilon", 1e-5)))
    if a.get("gamma") is not None:
        y = y * a["gamma"]
    return y + a["beta"] if a.get("beta") is not None else y


def _batch_norm(a: dict[str, Any], op: Any) -> torch.Tensor:
    shape = [1, -1] + [1] * (a["x"].ndim - 2)
    y = (a["x"] - a["mean"].reshape(shape)) / torch.sqrt(
        a["variance"].reshape(shape) + float(_param(a, op, "epsilon", 1e-5))
    )
    if a.get("gamma") is not None:
        y = y * a["gamma"].reshape(shape)
    return y + a["beta"].reshape(shape) if a.get("beta") is not None else y


def _slice(a: dict[str, Any], op: Any) -> torch.Tensor:
    x = a["x"]
    begin, end = _ints(a["begin"]), _ints(a["end"])
    stride = _ints(a["stride"]) if a.get("stride") is not None else [1] * x.ndim
    begin_mask = _ints(a["begin_mask"]) if a.get("begin_mask") is not None else [0] * x.ndim
    end_mask = _ints(a["end_mask"]) if a.get("end_mask") is not None else [0] * x.ndim
    squeeze = _ints(a["squeeze_mask"]) if a.get("squeeze_mask") is not None else [0] * x.ndim
    index = []
    for i in range(x.ndim):
        if squeeze[i]:
            index.append(begin[i])
            continue
        index.append(slice(None if begin_mask[i] else begin[i], None if end_mask[i] else end[i], stride[i]))
    return x[tuple(index)]


def _split(a: dict[str, Any], op: Any) -> tuple[torch.Tensor, ...]:
    axis = int(_param(a, op, "axis"))
    if a.get("split_sizes") is not None:
        return torch.split(a["x"], _ints(a["split_sizes"]), dim=axis)
    return torch.chunk(a["x"], int(_param(a, op, "num_splits")), dim=axis)


def _quantize(a: dict[str, Any], op: Any) -> torch.Tensor:
    x, scale, axis = a["input"], a["scale"], _param(a, op, "axis")
    zero = a.get("zero_point")
    shape = [1] * x.ndim
    if scale.ndim > 0 and axis is not None:
        shape[int(axis)] = -1
    q = torch.round(x / scale.reshape(shape)) + (zero.reshape(shape).float() if zero is not None else 0.0)
    dtype = str(_param(a, op, "output_dtype", "int8"))
    lo, hi = (-128, 127) if dtype == "int8" else (0, 255)
    return torch.clamp(q, lo, hi)  # kept as float holding integers: exact for 8 bits


def _dequantize(a: dict[str, Any], op: Any) -> torch.Tensor:
    x, scale, axis = a["input"].float(), a["scale"], _param(a, op, "axis")
    zero = a.get("zero_point")
    shape = [1] * x.ndim
    if scale.ndim > 0 and axis is not None:
        shape[int(axis)] = -1
    return (x - (zero.reshape(shape).float() if zero is not None else 0.0)) * scale.reshape(shape)


def _cast(a: dict[str, Any], op: Any) -> torch.Tensor:
    dtype = str(_param(a, op, "dtype"))
    mapping = {
        "fp32": torch.float32,
        "fp16": torch.float32,
        "int32": torch.int32,
        "int16": torch.int16,
        "int8": torch.int8,
        "uint8": torch.uint8,
        "bool": torch.bool,
    }
    return a["x"].to(mapping[dtype])


def _binary(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable[[dict[str, Any], Any], torch.Tensor]:
    return lambda a, op: fn(a["x"], a["y"])


def _unary(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[dict[str, Any], Any], torch.Tensor]:
    return lambda a, op: fn(a["x"])


def _matmul(a: dict[str, Any], op: Any) -> torch.Tensor:
    x, y = a["x"], a["y"]
    if bool(_param(a, op, "transpose_x", False)):
        x = x.transpose(-1, -2)
    if bool(_param(a, op, "transpose_y", False)):
        y = y.transpose(-1, -2)
    return torch.matmul(x, y)


def _gather(a: dict[str, Any], op: Any) -> torch.Tensor:
    axis = int(_param(a, op, "axis", 0))
    indices = a["indices"].long()
    indices = torch.where(indices < 0, indices + a["x"].shape[axis], indices)
    return torch.index_select(a["x"], axis, indices.reshape(-1)).reshape(
        *a["x"].shape[:axis], *indices.shape, *a["x"].shape[axis + 1 :]
    )


OPS: dict[str, Callable[[dict[str, Any], Any], Any]] = {
    "conv": _conv,
    "linear": lambda a, op: F.linear(a["x"], a["weight"], a.get("bias")),
    "matmul": _matmul,
    "max_pool": _pool("max"),
    "avg_pool": _pool("avg"),
    "reduce_mean": _reduce(torch.mean),
    "reduce_sum": _reduce(torch.sum),
    "reduce_max": _reduce(torch.amax),
    "reduce_min": _reduce(torch.amin),
    "relu": _unary(torch.relu),
    "relu6": _unary(lambda x: torch.clamp(x, 0.0, 6.0)),
    "sigmoid": _unary(torch.sigmoid),
    # hardswish / hardsigmoid (mobilenet_v3) arrive as these two
    "sigmoid_hard": lambda a, op: torch.clamp(
        float(_param(a, op, "alpha", 0.2)) * a["x"] + float(_param(a, op, "beta", 0.5)), 0.0, 1.0
    ),
    "thresholded_relu": lambda a, op: torch.where(
        a["x"] > float(_param(a, op, "alpha", 1.0)), a["x"], torch.zeros_like(a["x"])
    ),
    "tanh": _unary(torch.tanh),
    "silu": _unary(F.silu),
    "exp": _unary(torch.exp),
    "sqrt": _unary(torch.sqrt),
    "rsqrt": lambda a, op: torch.rsqrt(a["x"] + float(_param(a, op, "epsilon", 1e-12))),
    "erf": _unary(torch.erf),
    "square": _unary(torch.square),
    "abs": _unary(torch.abs),
    "identity": _unary(lambda x: x),
    "clip": lambda a, op: torch.clamp(a["x"], float(_param(a, op, "alpha")), float(_param(a, op, "beta"))),
    "gelu": _gelu,
    "softmax": lambda a, op: torch.softmax(a["x"], dim=int(_param(a, op, "axis", -1))),
    "layer_norm": _layer_norm,
    "batch_norm": _batch_norm,
    "add": _binary(torch.add),
    "sub": _binary(torch.sub),
    "mul": _binary(torch.mul),
    "real_div": _binary(torch.div),
    "pow": _binary(torch.pow),
    "maximum": _binary(torch.maximum),
    "minimum": _binary(torch.minimum),
    "greater": _binary(torch.gt),
    "greater_equal": _binary(torch.ge),
    "less": _binary(torch.lt),
    "less_equal": _binary(torch.le),
    "equal": _binary(torch.eq),
    "select": lambda a, op: torch.where(a["cond"].bool(), a["a"], a["b"]),
    "reshape": lambda a, op: a["x"].reshape(_ints(a["shape"])),
    "transpose": lambda a, op: a["x"].permute(_ints(a["perm"])),
    "squeeze": lambda a, op: a["x"].squeeze(tuple(_ints(a["axes"]))) if a.get("axes") is not None else a["x"].squeeze(),
    "expand_dims": lambda a, op: a["x"].reshape(_expand_shape(a["x"], _ints(a["axes"]))),
    "concat": lambda a, op: torch.cat(a["values"], dim=int(_param(a, op, "axis"))),
    "split": _split,
    "slice_by_index": _slice,
    "gather": _gather,
    "cast": _cast,
    "quantize": _quantize,
    "dequantize": _dequantize,
}


def _expand_shape(x: torch.Tensor, axes: list[int]) -> list[int]:
    rank = x.ndim + len(axes)
    axes = sorted(a % rank for a in axes)
    shape = list(x.shape)
    for axis in axes:
        shape.insert(axis, 1)
    return shape
