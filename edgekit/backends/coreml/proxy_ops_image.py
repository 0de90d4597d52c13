"""Stand-in kernels for the spatial MIL ops of segmenters and detectors (coremltools 9.0 semantics).

Transposed convolution, cropping, padding, upsampling, pixel (un)shuffle, instance norm and grid
resampling, each read from its definition in `coremltools/converters/mil/mil/ops/defs/iOS15..iOS17`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the PyTorch convention

from edgekit.backends.coreml.proxy_ops_base import Kernel, channel_shape, ints, param


def _conv_transpose(a: dict[str, Any], op: Any) -> torch.Tensor:
    """Return the full transposed convolution cropped by `pad` (or to `output_shape`), plus the bias.

    MIL pads each side on its own (`pad[2*i]` before, `pad[2*i+1]` after), where PyTorch pads both
    sides alike, so the full output is computed and cropped here.
    """
    x, w = a["x"], a["weight"]
    dims = w.ndim - 2
    strides = ints(a["strides"]) if a.get("strides") is not None else [1] * dims
    dilations = ints(a["dilations"]) if a.get("dilations") is not None else [1] * dims
    fn = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[dims - 1]
    y = fn(x, w, None, stride=strides, dilation=dilations, groups=int(param(a, op, "groups", 1)))
    pad_type = str(param(a, op, "pad_type", "valid"))
    pad = ints(a["pad"]) if pad_type == "custom" and a.get("pad") is not None else [0] * (2 * dims)
    if pad_type == "same":  # output = input * stride, the surplus split as TensorFlow does
        for i in range(dims):
            total = max(y.shape[2 + i] - x.shape[2 + i] * strides[i], 0)
            pad[2 * i : 2 * i + 2] = [total // 2, total - total // 2]
    sizes = [y.shape[2 + i] - pad[2 * i] - pad[2 * i + 1] for i in range(dims)]
    if a.get("output_shape") is not None:
        sizes = ints(a["output_shape"])[2:]
    for i in range(dims):
        available = y.shape[2 + i] - pad[2 * i]
        y = y.narrow(2 + i, pad[2 * i], min(sizes[i], available))
        if sizes[i] > available:  # an output_shape past the full output: zeros, as output_padding gives
            y = F.pad(y, [0, 0] * (dims - 1 - i) + [0, sizes[i] - available])
    return y + a["bias"].reshape(channel_shape(y)) if a.get("bias") is not None else y


def _crop(a: dict[str, Any], op: Any) -> torch.Tensor:
    x = a["x"]
    (top, bottom), (left, right) = ints(a["crop_height"]), ints(a["crop_width"])
    return x[..., top : x.shape[-2] - bottom, left : x.shape[-1] - right]


def _pad(a: dict[str, Any], op: Any) -> torch.Tensor:
    """Pad the last len(pad)/2 dimensions, first of them first (F.pad takes the last one first)."""
    x, pad = a["x"], ints(a["pad"])
    mode = str(param(a, op, "mode", "constant"))
    first = x.ndim - len(pad) // 2
    if mode == "constant":
        torch_pad = [p for i in reversed(range(len(pad) // 2)) for p in (pad[2 * i], pad[2 * i + 1])]
        return F.pad(x, torch_pad, value=float(param(a, op, "constant_val", 0.0)))
    # reflect / replicate through an index per dimension: works for any rank, unlike F.pad's modes
    for i in range(len(pad) // 2):
        before, after = pad[2 * i], pad[2 * i + 1]
        if before == 0 and after == 0:
            continue
        size = x.shape[first + i]
        index = torch.arange(-before, size + after)
        if mode == "reflect":  # mirror without repeating the edge: |1 2 3| -> 3 2 |1 2 3| 2 1
            index = index.abs()
            index = torch.where(index > size - 1, 2 * (size - 1) - index, index)
        else:  # replicate: repeat the edge value
            index = index.clamp(0, size - 1)
        x = x.index_select(first + i, index)
    return x


def _nearest_index(size: int, out: int) -> torch.Tensor:
    """Source rows of nearest-neighbour upsampling: floor(i * in / out), PyTorch's `nearest`."""
    return torch.tensor([min(math.floor(i * size / out), size - 1) for i in range(out)])


def _upsample_nearest(a: dict[str, Any], op: Any) -> torch.Tensor:
    x = a["x"]
    h, w = x.shape[-2:]
    out_h = math.floor(h * float(param(a, op, "scale_factor_height", 1)))
    out_w = math.floor(w * float(param(a, op, "scale_factor_width", 1)))
    return x.index_select(-2, _nearest_index(h, out_h)).index_select(-1, _nearest_index(w, out_w))


def _linear_1d(x: torch.Tensor, dim: int, out: int, align_corners: bool, half_pixel_centers: bool) -> torch.Tensor:
    """Resample one dimension by linear interpolation on the grid the upsample_bilinear docstring gives."""
    size = x.shape[dim]
    i = torch.arange(out, dtype=torch.float64)
    if align_corners:
        grid = i * ((size - 1) / (out - 1)) if out > 1 else torch.zeros(out, dtype=torch.float64)
    elif half_pixel_centers:
        grid = (i + 0.5) * (size / out) - 0.5
    else:
        grid = i * (size / out)
    grid = grid.clamp(0, size - 1)
    low = grid.floor().long()
    high = (low + 1).clamp(max=size - 1)
    shape = [1] * x.ndim
    shape[dim] = out
    weight = (grid - low).to(x.dtype).reshape(shape)
    return x.index_select(dim, low) * (1 - weight) + x.index_select(dim, high) * weight


def _upsample_bilinear(a: dict[str, Any], op: Any) -> torch.Tensor:
    """Upsample by the scale factors; the grid is recomputed from the output size (MIL's definition)."""
    x = a["x"]
    align_corners = bool(param(a, op, "align_corners", True))
    half_pixel = bool(param(a, op, "half_pixel_centers", not align_corners))  # iOS16 input, default !align
    out_h = math.floor(x.shape[-2] * float(param(a, op, "scale_factor_height", 1)))
    out_w = math.floor(x.shape[-1] * float(param(a, op, "scale_factor_width", 1)))
    x = _linear_1d(x, x.ndim - 2, out_h, align_corners, half_pixel)
    return _linear_1d(x, x.ndim - 1, out_w, align_corners, half_pixel)


def _instance_norm(a: dict[str, Any], op: Any) -> torch.Tensor:
    x = a["x"]
    axes = list(range(2, x.ndim))
    mean = x.mean(dim=axes, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=axes, keepdim=True)
    y = (x - mean) / torch.sqrt(var + float(param(a, op, "epsilon", 1e-5)))
    if a.get("gamma") is not None:
        y = y * a["gamma"].reshape(channel_shape(x))
    return y + a["beta"].reshape(channel_shape(x)) if a.get("beta") is not None else y


# MIL (padding_mode, align_corners) -> F.grid_sample padding_mode: PyTorch's "reflection" reflects
# about the corner pixel centres with align_corners (MIL "reflection") and about their edges without
# it (MIL "symmetric"), which is how the converter maps them.
_GRID_PADDING = {
    ("constant", True): "zeros",
    ("constant", False): "zeros",
    ("border", True): "border",
    ("border", False): "border",
    ("reflection", True): "reflection",
    ("symmetric", False): "reflection",
}


def _resample(a: dict[str, Any], op: Any) -> torch.Tensor:
    x, grid = a["x"], a["coordinates"].to(a["x"].dtype)
    align_corners = bool(param(a, op, "align_corners", False))
    mode = str(param(a, op, "coordinates_mode", "normalized_minus_one_to_one"))
    size = torch.tensor([x.shape[-1], x.shape[-2]], dtype=x.dtype)  # coordinates are (x, y) = (w, h)
    if mode == "normalized_zero_to_one":
        grid = grid * 2 - 1
    elif mode == "unnormalized":  # pixel centres 0 .. W-1 map to -1 .. 1 (align_corners) or inside it
        grid = grid * 2 / (size - 1) - 1 if align_corners else (grid * 2 + 1) / size - 1
    padding = _GRID_PADDING.get((str(param(a, op, "padding_mode", "constant")), align_corners))
    if padding is None:
        raise NotImplementedError(f"resample padding_mode {param(a, op, 'padding_mode')} with {align_corners=}")
    sampling = str(param(a, op, "sampling_mode", "bilinear"))
    value = float(param(a, op, "padding_value", 0.0)) if padding == "zeros" else 0.0
    # a constant other than 0: sample x - value with zeros outside, then add the value back
    y = F.grid_sample(x - value, grid, mode=sampling, padding_mode=padding, align_corners=align_corners)
    return y + value


OPS: dict[str, Kernel] = {
    "conv_transpose": _conv_transpose,
    "crop": _crop,
    "pad": _pad,
    "upsample_nearest_neighbor": _upsample_nearest,
    "upsample_bilinear": _upsample_bilinear,
    "pixel_shuffle": lambda a, op: F.pixel_shuffle(a["x"], int(param(a, op, "upscale_factor"))),
    "pixel_unshuffle": lambda a, op: F.pixel_unshuffle(a["x"], int(param(a, op, "downscale_factor"))),
    "instance_norm": _instance_norm,
    "resample": _resample,
}
