"""Rewrites of the 3-D ops of video networks (C3D, R(2+1)D, X3D-style) into 2-D ops that XNNPACK delegates.

Why: XNNPACK's partitioner has no 3-D convolution or 3-D pooling config (executorch 1.5.1,
`backends/xnnpack/partition/config/__init__.py` lists Conv2d-style `ConvolutionConfig`, `MaxPool2dConfig`,
`AvgPoolingConfig`, all 4-D), and ExecuTorch's portable kernels do not cover them either:
`aten::convolution.out` stops at "Expect input tensor to be 3-D or 4-D" (`kernels/portable/cpu/util/
kernel_ops_util.cpp`, `check_convolution_args`), and there is no `max_pool3d_with_indices.out` or
`avg_pool3d.out` kernel at all. A 5-D tensor is (N, C, T, H, W); every rewrite below folds T into the
batch or channel dimension and reuses the 2-D op, so the result is the same function.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the usual spelling
from torch import fx

from edgekit.rewrites._graph import Rewrite, arguments, call, constant, rank, value, weight

aten = torch.ops.aten
_CONV3D = (aten.conv3d.default, aten.conv3d.padding)


def _triple(values: Any) -> tuple[int, int, int]:
    values = [int(v) for v in (values if isinstance(values, Sequence) else [values])]
    return (values[0],) * 3 if len(values) == 1 else (values[0], values[1], values[2])


def _is_conv3d(node: fx.Node) -> bool:
    if node.target in _CONV3D:
        return rank(node.args[0]) == 5
    if node.target is aten.convolution.default:
        return rank(node.args[0]) == 5 and not arguments(node)["transposed"]
    return False


def _padding(padding: Any, kernel: Sequence[int], dilation: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """Return (before, after) per axis for int padding or for 'same' / 'valid' (torch pads 'same' extra after)."""
    if padding == "valid":
        return ((0, 0),) * 3
    if padding == "same":
        totals = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
        return tuple((t // 2, t - t // 2) for t in totals)
    return tuple((p, p) for p in _triple(padding))


# -- 3-D convolution -------------------------------------------------------------------------------


def conv3d_as_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    taps: int,
    stride: tuple[int, int, int],
    padding: tuple[tuple[int, int], ...],
    dilation: tuple[int, int, int],
    groups: int,
) -> torch.Tensor:
    """Compute conv3d(x) as one conv2d over frames whose temporal taps are stacked on the channel axis.

    Output frame t sums, over the taps k, the 2-D convolution of input frame t*stride + k*dilation with
    the kernel's slice k. Stacking those frames along channels (within each group) and the kernel's
    slices the same way makes that sum the channel reduction of a single conv2d, so int8 keeps one
    accumulator per output, as a quantized 3-D convolution would. `weight` is the kernel already stacked
    (O, taps*C/groups, kH, kW), or the 5-D kernel when it is not a constant.
    """
    n, c, t, h, w = x.shape
    (st, sh, sw), ((t0, t1), (h0, h1), (w0, w1)), (dt, dh, dw) = stride, padding, dilation
    if weight.dim() == 5:
        weight = weight.transpose(1, 2).flatten(1, 2)
    frames = x.transpose(1, 2)  # (N, T, C, H, W)
    if t0 or t1:
        frames = F.pad(frames, (0, 0, 0, 0, 0, 0, t0, t1))
    picked = temporal_taps(frames, taps, st, dt)
    if groups > 1:  # channels of each group stay together: [group][tap][channel]
        picked = [p.unflatten(2, (groups, c // groups)) for p in picked]
    stacked = torch.cat(picked, 3 if groups > 1 else 2) if taps > 1 else picked[0]
    stacked = stacked.reshape(-1, taps * c, h, w)
    if (h0, w0) != (h1, w1):  # asymmetric 'same' padding: conv2d pads both sides alike
        stacked, (h0, w0) = F.pad(stacked, (w0, w1, h0, h1)), (0, 0)
    y = F.conv2d(stacked, weight, bias, (sh, sw), (h0, w0), (dh, dw), groups)
    return y.unflatten(0, (n, -1)).transpose(1, 2)


def temporal_taps(frames: torch.Tensor, taps: int, stride: int, dilation: int) -> list[torch.Tensor]:
    """Return, for each tap k, frames k*dilation + stride*i of `frames` (N, T, C, H, W) for every output frame i."""
    n, length, c, h, w = frames.shape
    last = (taps - 1) * dilation  # where the last tap's frames start
    if not isinstance(length, int):  # a dynamic length: strided slices, bounded so export needs no new guard
        return [frames[:, k * dilation : (k * dilation - last) or None : stride] for k in range(taps)]
    if taps == 1 and stride == 1:
        return [frames]
    count = (length - last - 1) // stride + 1
    flat = frames.flatten(2)
    if stride > 1:  # unit-step slices only (XNNPACK slices no other step): keep the first of every `stride` frames
        flat = F.pad(flat, (0, 0, 0, stride - 1))  # zero frames, never kept, so the last window is whole
    windows = [flat[:, k * dilation : k * dilation + stride * count] for k in range(taps)]
    if stride > 1:
        windows = [window.reshape(n, count, stride * c * h * w)[:, :, : c * h * w] for window in windows]
    return [window.reshape(n, count, c, h, w) for window in windows]


def _replace_conv3d(module: fx.GraphModule, node: fx.Node) -> fx.Node | None:
    a = arguments(node)
    kernel = weight(module, a["weight"])
    shape = kernel.shape if kernel is not None else getattr(value(a["weight"]), "shape", None)
    if shape is None or len(shape) != 5:
        return None
    dilation = _triple(a["dilation"])
    padding = _padding(a["padding"], shape[2:], dilation)
    stacked: Any = a["weight"]
    if kernel is not None:  # a static weight, as XNNPACK wants: stack it now, not at run time
        stacked = constant(module, kernel.transpose(1, 2).flatten(1, 2), "conv3d_weight")
    return call(
        node, conv3d_as_conv2d, a["input"], stacked, a["bias"], int(shape[2]), _triple(a["stride"]), padding,
        dilation, int(a["groups"]),
    )  # fmt: skip


# -- batch norm on 5-D tensors ---------------------------------------------------------------------


def _batch_norm_parts(module: fx.GraphModule, node: fx.Node) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Return the per-channel (scale, shift) of an inference batch norm whose statistics are constants."""
    a = arguments(node)
    if a["training"]:
        return None
    mean, var = weight(module, a["running_mean"]), weight(module, a["running_var"])
    if mean is None or var is None:
        return None
    gamma = weight(module, a["weight"]) if a["weight"] is not None else torch.ones_like(mean)
    beta = weight(module, a["bias"]) if a["bias"] is not None else torch.zeros_like(mean)
    if gamma is None or beta is None:
        return None
    scale = gamma.double() / torch.sqrt(var.double() + float(a["eps"]))
    return scale, beta.double() - mean.double() * scale


def _is_batch_norm_5d(node: fx.Node) -> bool:
    return node.target is aten.batch_norm.default and rank(node.args[0]) == 5


def _folds_into_conv(node: fx.Node) -> bool:
    source = node.args[0]
    return _is_batch_norm_5d(node) and isinstance(source, fx.Node) and _is_conv3d(source) and len(source.users) == 1


def _replace_conv_batch_norm(module: fx.GraphModule, node: fx.Node) -> fx.Node | None:
    """Fold an inference batch norm into the 3-D convolution before it (new constants; the model is untouched)."""
    conv = node.args[0]
    assert isinstance(conv, fx.Node)
    parts = _batch_norm_parts(module, node)
    a = arguments(conv)
    kernel = weight(module, a["weight"])
    bias = weight(module, a["bias"]) if a["bias"] is not None else None
    if parts is None or kernel is None or (a["bias"] is not None and bias is None):
        return None
    scale, shift = parts
    folded = (kernel.double() * scale.reshape(-1, 1, 1, 1, 1)).to(kernel.dtype)
    new_bias = (shift + scale * (bias.double() if bias is not None else 0.0)).to(kernel.dtype)
    args = {**a, "weight": constant(module, folded, "conv3d_bn_weight"), "bias": constant(module, new_bias, "bias")}
    target = conv.target
    assert callable(target)
    new = module.graph.call_function(target, tuple(args[arg.name] for arg in target._schema.arguments))  # type: ignore[attr-defined]
    new.meta.update(conv.meta)
    return new


def batch_norm_affine(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Compute an inference batch norm as x * scale + shift with per-channel constants."""
    return x * scale + shift


def _replace_batch_norm(module: fx.GraphModule, node: fx.Node) -> fx.Node | None:
    parts = _batch_norm_parts(module, node)
    dtype = getattr(value(node), "dtype", torch.float32)
    if parts is None:
        return None
    scale, shift = (constant(module, p.to(dtype).reshape(-1, 1, 1, 1), "batch_norm") for p in parts)
    return call(node, batch_norm_affine, node.args[0], scale, shift)


# -- 3-D pooling -----------------------------------------------------------------------------------


def max_pool3d_as_max_pool2d(
    x: torch.Tensor,
    kernel: tuple[int, int, int],
    stride: tuple[int, int, int],
    padding: tuple[int, int, int],
    dilation: tuple[int, int, int],
    ceil_mode: bool,
) -> torch.Tensor:
    """Compute max_pool3d as a 2-D pool over (H, W) with T folded into channels, then one over T.

    A max over a 3-D box is the max over time of the max over each frame's 2-D window, and padding
    and ceil_mode act on each axis apart, so the two 2-D pools give the same result.
    """
    n, c, t, h, w = x.shape
    if kernel[1:] != (1, 1) or stride[1:] != (1, 1) or padding[1:] != (0, 0):
        y = F.max_pool2d(x.reshape(n, c * t, h, w), kernel[1:], stride[1:], padding[1:], dilation[1:], ceil_mode)
        h, w = y.shape[-2:]
        x = y.reshape(n, c, t, h, w)
    if kernel[0] == 1 and stride[0] == 1 and padding[0] == 0:
        return x
    z = F.max_pool2d(
        x.reshape(n, c, t, h * w), (kernel[0], 1), (stride[0], 1), (padding[0], 0), (dilation[0], 1), ceil_mode
    )
    return z.reshape(n, c, -1, h, w)


def _replace_max_pool3d(module: fx.GraphModule, node: fx.Node) -> fx.Node | None:
    a = arguments(node)
    kernel = _triple(a["kernel_size"])
    stride = _triple(a["stride"]) if a["stride"] else kernel
    args = (kernel, stride, _triple(a["padding"]), _triple(a["dilation"]), bool(a["ceil_mode"]))
    return call(node, max_pool3d_as_max_pool2d, a["self"], *args)


def avg_pool3d_as_avg_pool2d(
    x: torch.Tensor,
    kernel: tuple[int, int, int],
    stride: tuple[int, int, int],
    padding: tuple[int, int, int],
    ceil_mode: bool,
    count_include_pad: bool,
) -> torch.Tensor:
    """Compute avg_pool3d as an average over (H, W) windows, then over T windows.

    The divisor of a 3-D window (padded or clipped by ceil_mode, padding counted or not) is the product
    of its per-axis sizes, so averaging axis by axis gives the same result.
    """
    n, c, t, h, w = x.shape
    if kernel[1:] != (1, 1) or stride[1:] != (1, 1) or padding[1:] != (0, 0):
        y = F.avg_pool2d(x.reshape(n, c * t, h, w), kernel[1:], stride[1:], padding[1:], ceil_mode, count_include_pad)
        h, w = y.shape[-2:]
        x = y.reshape(n, c, t, h, w)
    if kernel[0] == 1 and stride[0] == 1 and padding[0] == 0:
        return x
    z = F.avg_pool2d(x.reshape(n, c, t, h * w), (kernel[0], 1), (stride[0], 1), (padding[0], 0), ceil_mode,
                     count_include_pad)  # fmt: skip
    return z.reshape(n, c, -1, h, w)


def _replace_avg_pool3d(module: fx.GraphModule, node: fx.Node) -> fx.Node | None:
    a = arguments(node)
    if a.get("divisor_override") is not None:  # one fixed divisor does not split per axis
        return None
    kernel = _triple(a["kernel_size"])
    stride = _triple(a["stride"]) if a["stride"] else kernel
    args = (kernel, stride, _triple(a["padding"]), bool(a["ceil_mode"]), bool(a["count_include_pad"]))
    return call(node, avg_pool3d_as_avg_pool2d, a["self"], *args)


def _adaptive_axis(x: torch.Tensor, axis: int, out: int) -> torch.Tensor:
    """Adaptive-average a 4-D tensor along axis 2 or 3 to `out` positions (PyTorch's window rule)."""
    size = x.shape[axis]
    if out == size:
        return x
    if size % out == 0:  # equal windows: one avg_pool2d
        k = size // out
        return F.avg_pool2d(x, (k, 1) if axis == 2 else (1, k))
    starts = [(i * size) // out for i in range(out)]
    ends = [math.ceil((i + 1) * size / out) for i in range(out)]
    return torch.cat([x.narrow(axis, s, e - s).mean(axis, keepdim=True) for s, e in zip(starts, ends, strict=True)],
                     axis)  # fmt: skip


def adaptive_avg_pool3d_as_2d(x: torch.Tensor, output_size: tuple[int, int, int]) -> torch.Tensor:
    """Compute adaptive_avg_pool3d with 4-D average pools and means: (H, W) with T on channels, then T.

    Every tensor stays at rank 4 or less, the most a Core ML op or an XNNPACK pool takes.
    """
    n, c, t, h, w = x.shape
    ot, oh, ow = output_size
    y = _adaptive_axis(_adaptive_axis(x.reshape(n, c * t, h, w), 2, oh), 3, ow)
    y = _adaptive_axis(y.reshape(n, c, t, oh * ow), 2, ot)
    return y.reshape(n, c, ot, oh, ow)


def _is_adaptive_avg_pool3d(node: fx.Node) -> bool:
    return node.target in (aten.adaptive_avg_pool3d.default, aten._adaptive_avg_pool3d.default)


def _replace_adaptive_avg_pool3d(module: fx.GraphModule, node: fx.Node) -> fx.Node | None:
    source = value(node.args[0])
    if source is None or source.dim() != 5 or not all(isinstance(s, int) for s in source.shape[2:]):
        return None  # window bounds need static T, H, W
    return call(node, adaptive_avg_pool3d_as_2d, node.args[0], _triple(node.args[1]))


FOLD_BATCH_NORM_INTO_CONV3D = Rewrite(
    name="fold_batch_norm_into_conv3d",
    why="an inference BatchNorm3d after a Conv3d becomes the convolution's weights and bias, so the 2-D form "
    "stays one delegated convolution",
    matches=_folds_into_conv,
    replace=_replace_conv_batch_norm,
)
CONV3D_AS_CONV2D = Rewrite(
    name="conv3d_as_conv2d",
    why="XNNPACK takes no 3-D convolution and ExecuTorch's portable convolution kernel accepts only 3-D or 4-D "
    "inputs: the temporal taps are stacked on channels of one 2-D convolution",
    matches=_is_conv3d,
    replace=_replace_conv3d,
)
BATCH_NORM_5D_AS_AFFINE = Rewrite(
    name="batch_norm_5d_as_affine",
    why="a BatchNorm3d with no convolution to fold into: x * scale + shift, per-channel constants",
    matches=_is_batch_norm_5d,
    replace=_replace_batch_norm,
)
MAX_POOL3D_AS_MAX_POOL2D = Rewrite(
    name="max_pool3d_as_max_pool2d",
    why="ExecuTorch has no max_pool3d kernel and XNNPACK no 3-D pooling: a 2-D pool per frame, then one over time",
    matches=lambda n: n.target is aten.max_pool3d.default,
    replace=_replace_max_pool3d,
)
AVG_POOL3D_AS_AVG_POOL2D = Rewrite(
    name="avg_pool3d_as_avg_pool2d",
    why="ExecuTorch has no avg_pool3d kernel and XNNPACK no 3-D pooling: a 2-D pool per frame, then one over time",
    matches=lambda n: n.target is aten.avg_pool3d.default,
    replace=_replace_avg_pool3d,
)
ADAPTIVE_AVG_POOL3D_AS_2D = Rewrite(
    name="adaptive_avg_pool3d_as_2d",
    why="coremltools 9.0 has no adaptive_avg_pool3d converter and XNNPACK no 3-D pooling: 4-D average pools "
    "over (H, W), then over T",
    matches=_is_adaptive_avg_pool3d,
    replace=_replace_adaptive_avg_pool3d,
)
