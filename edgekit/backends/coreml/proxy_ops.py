"""The kernels of the Core ML stand-in: one PyTorch function per MIL operation, in `OPS`.

Each kernel takes the operation's inputs by name (tensors, or raw values for strings) and the MIL op
itself (for its parameters), and returns a tensor or a tuple of tensors. This module holds the core
kernels (convolution, pooling, linear algebra, normalization, shape ops, quantization) and merges the
tables of proxy_ops_math.py, proxy_ops_image.py and proxy_ops_rnn.py into `OPS`. Each kernel of those
three is tested against a PyTorch module the converter maps to its op (tests/backends/coreml/test_proxy_ops.py);
the core ones run in every Core ML backend test.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the PyTorch convention

from edgekit.backends.coreml import proxy_ops_image, proxy_ops_math, proxy_ops_rnn
from edgekit.backends.coreml.proxy_ops_base import (
    Kernel,
    as_tensor,
    binary,
    ints,
    param,
    reduce,
    round_to,
    spatial_pad,
    unary,
)

__all__ = ["OPS", "as_tensor", "round_to"]


def _conv(a: dict[str, Any], op: Any) -> torch.Tensor:
    x, w = a["x"], a["weight"]
    dims = w.ndim - 2
    strides = ints(a["strides"]) if a.get("strides") is not None else [1] * dims
    dilations = ints(a["dilations"]) if a.get("dilations") is not None else [1] * dims
    x = spatial_pad(x, op, a, list(w.shape[2:]), strides, dilations)
    fn = (F.conv1d, F.conv2d, F.conv3d)[dims - 1]
    return fn(x, w, a.get("bias"), stride=strides, dilation=dilations, groups=int(param(a, op, "groups", 1)))


def _pool(kind: str) -> Kernel:
    def run(a: dict[str, Any], op: Any) -> torch.Tensor:
        kernel, strides = ints(a["kernel_sizes"]), ints(a["strides"])
        dims, ceil = len(kernel), bool(param(a, op, "ceil_mode", False))
        if kind == "max":
            x = spatial_pad(a["x"], op, a, kernel, strides, [1] * dims, fill=float("-inf"))
            return (F.max_pool1d, F.max_pool2d, F.max_pool3d)[dims - 1](x, kernel, strides, ceil_mode=ceil)
        x = spatial_pad(a["x"], op, a, kernel, strides, [1] * dims)
        ones = spatial_pad(torch.ones_like(a["x"][:1, :1]), op, a, kernel, strides, [1] * dims)
        pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[dims - 1]
        total = pool(x, kernel, strides, ceil_mode=ceil)
        if bool(param(a, op, "exclude_padding_from_average", False)):
            total = total / pool(ones, kernel, strides, ceil_mode=ceil)
        return total

    return run


def _gelu(a: dict[str, Any], op: Any) -> torch.Tensor:
    mode = str(param(a, op, "mode", "EXACT"))
    if mode == "SIGMOID_APPROXIMATION":
        return a["x"] * torch.sigmoid(1.702 * a["x"])
    return F.gelu(a["x"], approximate="tanh" if mode == "TANH_APPROXIMATION" else "none")


def _layer_norm(a: dict[str, Any], op: Any) -> torch.Tensor:
    x = a["x"]
    axes = ints(a["axes"]) if a.get("axes") is not None else list(range(x.ndim))
    mean = x.mean(dim=axes, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=axes, keepdim=True)
    y = (x - mean) / torch.sqrt(var + float(param(a, op, "epsilon", 1e-5)))
    if a.get("gamma") is not None:
        y = y * a["gamma"]
    return y + a["beta"] if a.get("beta") is not None else y


def _batch_norm(a: dict[str, Any], op: Any) -> torch.Tensor:
    shape = [1, -1] + [1] * (a["x"].ndim - 2)
    y = (a["x"] - a["mean"].reshape(shape)) / torch.sqrt(
        a["variance"].reshape(shape) + float(param(a, op, "epsilon", 1e-5))
    )
    if a.get("gamma") is not None:
        y = y * a["gamma"].reshape(shape)
    return y + a["beta"].reshape(shape) if a.get("beta") is not None else y


def _slice(a: dict[str, Any], op: Any) -> torch.Tensor:
    x = a["x"]
    begin, end = ints(a["begin"]), ints(a["end"])
    stride = ints(a["stride"]) if a.get("stride") is not None else [1] * x.ndim
    begin_mask = ints(a["begin_mask"]) if a.get("begin_mask") is not None else [0] * x.ndim
    end_mask = ints(a["end_mask"]) if a.get("end_mask") is not None else [0] * x.ndim
    squeeze = ints(a["squeeze_mask"]) if a.get("squeeze_mask") is not None else [0] * x.ndim
    index: list[int | slice] = []
    for i in range(x.ndim):
        if squeeze[i]:
            index.append(begin[i])
            continue
        index.append(slice(None if begin_mask[i] else begin[i], None if end_mask[i] else end[i], stride[i]))
    return x[tuple(index)]


def _split(a: dict[str, Any], op: Any) -> tuple[torch.Tensor, ...]:
    axis = int(param(a, op, "axis"))
    if a.get("split_sizes") is not None:
        return torch.split(a["x"], ints(a["split_sizes"]), dim=axis)
    return torch.chunk(a["x"], int(param(a, op, "num_splits")), dim=axis)


def _quantize(a: dict[str, Any], op: Any) -> torch.Tensor:
    x, scale, axis = a["input"], a["scale"], param(a, op, "axis")
    zero = a.get("zero_point")
    shape = [1] * x.ndim
    if scale.ndim > 0 and axis is not None:
        shape[int(axis)] = -1
    q = torch.round(x / scale.reshape(shape)) + (zero.reshape(shape).float() if zero is not None else 0.0)
    dtype = str(param(a, op, "output_dtype", "int8"))
    lo, hi = (-128, 127) if dtype == "int8" else (0, 255)
    return torch.clamp(q, lo, hi)  # kept as float holding integers: exact for 8 bits


def _dequantize(a: dict[str, Any], op: Any) -> torch.Tensor:
    x, scale, axis = a["input"].float(), a["scale"], param(a, op, "axis")
    zero = a.get("zero_point")
    shape = [1] * x.ndim
    if scale.ndim > 0 and axis is not None:
        shape[int(axis)] = -1
    return (x - (zero.reshape(shape).float() if zero is not None else 0.0)) * scale.reshape(shape)


def _cast(a: dict[str, Any], op: Any) -> torch.Tensor:
    dtype = str(param(a, op, "dtype"))
    mapping = {
        "fp32": torch.float32,
        "fp16": torch.float32,
        "int32": torch.int32,
        "int16": torch.int16,
        "uint16": torch.int32,  # shape arithmetic of dynamic axes; torch's uint16 supports few ops, int32 holds it
        "int8": torch.int8,
        "uint8": torch.uint8,
        "bool": torch.bool,
    }
    return a["x"].to(mapping[dtype])


def _matmul(a: dict[str, Any], op: Any) -> torch.Tensor:
    x, y = a["x"], a["y"]
    if bool(param(a, op, "transpose_x", False)):
        x = x.transpose(-1, -2)
    if bool(param(a, op, "transpose_y", False)):
        y = y.transpose(-1, -2)
    return torch.matmul(x, y)


def _gather(a: dict[str, Any], op: Any) -> torch.Tensor:
    axis = int(param(a, op, "axis", 0))
    indices = a["indices"].long()
    indices = torch.where(indices < 0, indices + a["x"].shape[axis], indices)
    return torch.index_select(a["x"], axis, indices.reshape(-1)).reshape(
        *a["x"].shape[:axis], *indices.shape, *a["x"].shape[axis + 1 :]
    )


def _expand_shape(x: torch.Tensor, axes: list[int]) -> list[int]:
    rank = x.ndim + len(axes)
    axes = sorted(a % rank for a in axes)
    shape = list(x.shape)
    for axis in axes:
        shape.insert(axis, 1)
    return shape


_CORE: dict[str, Kernel] = {
    "conv": _conv,
    "linear": lambda a, op: F.linear(a["x"], a["weight"], a.get("bias")),
    "matmul": _matmul,
    "max_pool": _pool("max"),
    "avg_pool": _pool("avg"),
    "reduce_mean": reduce(torch.mean),
    "reduce_sum": reduce(torch.sum),
    "reduce_max": reduce(torch.amax),
    "reduce_min": reduce(torch.amin),
    "relu": unary(torch.relu),
    "relu6": unary(lambda x: torch.clamp(x, 0.0, 6.0)),
    "sigmoid": unary(torch.sigmoid),
    # hardswish / hardsigmoid (mobilenet_v3) arrive as these two
    "sigmoid_hard": lambda a, op: torch.clamp(
        float(param(a, op, "alpha", 0.2)) * a["x"] + float(param(a, op, "beta", 0.5)), 0.0, 1.0
    ),
    "thresholded_relu": lambda a, op: torch.where(
        a["x"] > float(param(a, op, "alpha", 1.0)), a["x"], torch.zeros_like(a["x"])
    ),
    "tanh": unary(torch.tanh),
    "silu": unary(F.silu),
    "exp": unary(torch.exp),
    "sqrt": unary(torch.sqrt),
    "rsqrt": lambda a, op: torch.rsqrt(a["x"] + float(param(a, op, "epsilon", 1e-12))),
    "erf": unary(torch.erf),
    "square": unary(torch.square),
    "abs": unary(torch.abs),
    "identity": unary(lambda x: x),
    "clip": lambda a, op: torch.clamp(a["x"], float(param(a, op, "alpha")), float(param(a, op, "beta"))),
    "gelu": _gelu,
    "softmax": lambda a, op: torch.softmax(a["x"], dim=int(param(a, op, "axis", -1))),
    "layer_norm": _layer_norm,
    "batch_norm": _batch_norm,
    "add": binary(torch.add),
    "sub": binary(torch.sub),
    "mul": binary(torch.mul),
    "real_div": binary(torch.div),
    "pow": binary(torch.pow),
    "maximum": binary(torch.maximum),
    "minimum": binary(torch.minimum),
    "greater": binary(torch.gt),
    "greater_equal": binary(torch.ge),
    "less": binary(torch.lt),
    "less_equal": binary(torch.le),
    "equal": binary(torch.eq),
    "select": lambda a, op: torch.where(a["cond"].bool(), a["a"], a["b"]),
    "reshape": lambda a, op: a["x"].reshape(ints(a["shape"])),
    "transpose": lambda a, op: a["x"].permute(ints(a["perm"])),
    "squeeze": lambda a, op: a["x"].squeeze(tuple(ints(a["axes"]))) if a.get("axes") is not None else a["x"].squeeze(),
    "expand_dims": lambda a, op: a["x"].reshape(_expand_shape(a["x"], ints(a["axes"]))),
    "concat": lambda a, op: torch.cat(a["values"], dim=int(param(a, op, "axis"))),
    "split": _split,
    "slice_by_index": _slice,
    "gather": _gather,
    "cast": _cast,
    "quantize": _quantize,
    "dequantize": _dequantize,
}


OPS: dict[str, Kernel] = {**_CORE, **proxy_ops_math.OPS, **proxy_ops_image.OPS, **proxy_ops_rnn.OPS}
