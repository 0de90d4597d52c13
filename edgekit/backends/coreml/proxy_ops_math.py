"""Stand-in kernels for elementwise math, activations, reductions and indexing MIL ops (coremltools 9.0).

Each kernel follows the op's definition in `coremltools/converters/mil/mil/ops/defs/iOS15..iOS17`,
including the places where that differs from the PyTorch function the converter mapped to it: `log`
and `inverse` add their `epsilon` (the converter gives `torch.reciprocal` an epsilon of 1e-4), and
the iOS17 `scatter` defaults to mode "add".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the PyTorch convention

from edgekit.backends.coreml.proxy_ops_base import Kernel, axes_of, binary, channel_shape, ints, param, reduce, unary


def _epsilon_unary(fn: Any, default: float) -> Kernel:
    return lambda a, op: fn(a["x"] + float(param(a, op, "epsilon", default)))


def _arg(fn: Any) -> Kernel:
    def run(a: dict[str, Any], op: Any) -> torch.Tensor:
        axis, keep = int(param(a, op, "axis", -1)), bool(param(a, op, "keep_dims", False))
        return fn(a["x"], dim=axis, keepdim=keep).to(torch.int32)

    return run


def _prelu(a: dict[str, Any], op: Any) -> torch.Tensor:
    x, alpha = a["x"], a["alpha"].reshape(channel_shape(a["x"]))
    return torch.where(x > 0, x, alpha * x)


def _cumsum(a: dict[str, Any], op: Any) -> torch.Tensor:
    x, axis = a["x"], int(param(a, op, "axis", 0))
    reverse = bool(param(a, op, "reverse", False))
    if reverse:
        x = x.flip(axis)
    y = torch.cumsum(x, dim=axis)
    if bool(param(a, op, "exclusive", False)):  # shift by one along the axis, starting from 0
        y = torch.cat([torch.zeros_like(y.narrow(axis, 0, 1)), y.narrow(axis, 0, y.shape[axis] - 1)], dim=axis)
    return y.flip(axis) if reverse else y


def _band_part(a: dict[str, Any], op: Any) -> torch.Tensor:
    x = a["x"]
    lower, upper = int(param(a, op, "lower", -1)), int(param(a, op, "upper", -1))
    rows = torch.arange(x.shape[-2]).reshape(-1, 1)
    cols = torch.arange(x.shape[-1]).reshape(1, -1)
    keep = ((lower < 0) | (rows - cols <= lower)) & ((upper < 0) | (cols - rows <= upper))
    return torch.where(keep, x, torch.zeros_like(x))


def _positive(indices: torch.Tensor, size: int) -> torch.Tensor:
    indices = indices.long()
    return torch.where(indices < 0, indices + size, indices)


def _gather_along_axis(a: dict[str, Any], op: Any) -> torch.Tensor:
    axis = int(param(a, op, "axis", 0))
    return torch.gather(a["x"], axis, _positive(a["indices"], a["x"].shape[axis]))


def _gather_nd(a: dict[str, Any], op: Any) -> torch.Tensor:
    x, indices = a["x"], a["indices"].long()
    batch = int(param(a, op, "batch_dims", 0))
    if batch:
        return torch.stack([_gather_nd({"x": xi, "indices": ii}, op) for xi, ii in zip(x, indices, strict=True)])
    depth = indices.shape[-1]
    flat = indices.reshape(-1, depth)
    picked = x[tuple(_positive(flat[:, i], x.shape[i]) for i in range(depth))]
    return picked.reshape(*indices.shape[:-1], *x.shape[depth:])


_COMBINE: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "update": lambda old, new: new,
    "add": torch.add,
    "sub": torch.sub,
    "mul": torch.mul,
    "div": torch.div,
    "max": torch.maximum,
    "min": torch.minimum,
}


def _scatter(a: dict[str, Any], op: Any) -> torch.Tensor:
    data, axis = a["data"], int(param(a, op, "axis", 0))
    combine = _COMBINE[str(param(a, op, "mode", "add"))]  # iOS15/17 default to "add", not "update"
    out, updates = data.clone(), a["updates"].to(data.dtype)
    for k, i in enumerate(_positive(a["indices"].reshape(-1), data.shape[axis]).tolist()):
        target = out.select(axis, i)  # one index at a time, so that repeated indices accumulate
        target.copy_(combine(target, updates.select(axis, k)))
    return out


def _scatter_nd(a: dict[str, Any], op: Any) -> torch.Tensor:
    data, indices = a["data"], a["indices"].long()
    combine = _COMBINE[str(param(a, op, "mode", "add"))]
    depth = indices.shape[-1]
    flat = indices.reshape(-1, depth)
    out = data.clone()
    updates = a["updates"].to(data.dtype).reshape(flat.shape[0], *data.shape[depth:])
    for k in range(flat.shape[0]):
        at = tuple(int(_positive(flat[k, i], data.shape[i])) for i in range(depth))
        out[at] = combine(out[at], updates[k])
    return out


def _scatter_along_axis(a: dict[str, Any], op: Any) -> torch.Tensor:
    data, axis = a["data"], int(param(a, op, "axis", 0))
    mode = str(param(a, op, "mode", "add"))
    index, updates = _positive(a["indices"], data.shape[axis]), a["updates"].to(data.dtype)
    if mode == "update":
        return data.scatter(axis, index, updates)
    if mode in ("sub", "div"):  # x - u = x + (-u), x / u = x * (1 / u)
        updates, mode = (-updates, "add") if mode == "sub" else (1.0 / updates, "mul")
    reduce_mode = {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}[mode]
    return data.scatter_reduce(axis, index, updates, reduce_mode)


def _topk(a: dict[str, Any], op: Any) -> tuple[torch.Tensor, ...]:
    x, axis = a["x"], int(param(a, op, "axis", -1))
    k = int(param(a, op, "k", 1))
    k = x.shape[axis] if k == -1 else k  # iOS17: -1 selects every element
    values, indices = torch.topk(x, k, dim=axis, largest=not bool(param(a, op, "ascending", False)), sorted=True)
    if not bool(param(a, op, "return_indices", True)):
        return (values,)
    return values, indices.to(torch.int32)


def _argsort(a: dict[str, Any], op: Any) -> torch.Tensor:
    descending = not bool(param(a, op, "ascending", False))
    return torch.argsort(a["x"], dim=int(param(a, op, "axis", -1)), descending=descending, stable=True).to(torch.int32)


def _tile(a: dict[str, Any], op: Any) -> torch.Tensor:
    return a["x"].repeat(ints(a["reps"]))


def _reverse(a: dict[str, Any], op: Any) -> torch.Tensor:
    return a["x"].flip(axes_of(a))


OPS: dict[str, Kernel] = {
    "floor": unary(torch.floor),
    "ceil": unary(torch.ceil),
    "round": unary(torch.round),  # half to even: MIL's "0.5 is rounded to 0"
    "sign": unary(torch.sign),
    "sin": unary(torch.sin),
    "cos": unary(torch.cos),
    "tan": unary(torch.tan),
    "asin": unary(torch.asin),
    "acos": unary(torch.acos),
    "atan": unary(torch.atan),
    "sinh": unary(torch.sinh),
    "cosh": unary(torch.cosh),
    "atanh": unary(torch.atanh),
    "exp2": unary(torch.exp2),
    "log": _epsilon_unary(torch.log, 1e-45),
    "inverse": _epsilon_unary(torch.reciprocal, 1e-4),
    "logical_not": unary(torch.logical_not),
    "threshold": lambda a, op: torch.clamp(a["x"], min=float(param(a, op, "alpha"))),
    "linear_activation": lambda a, op: a["x"] * float(param(a, op, "alpha")) + float(param(a, op, "beta")),
    "leaky_relu": lambda a, op: F.leaky_relu(a["x"], float(param(a, op, "alpha"))),
    "elu": lambda a, op: F.elu(a["x"], float(param(a, op, "alpha"))),
    "prelu": _prelu,
    "softplus": unary(F.softplus),  # log(1 + e^x) everywhere: MIL has no threshold
    "floor_div": binary(lambda x, y: torch.div(x, y, rounding_mode="floor")),
    "not_equal": binary(torch.ne),
    "logical_and": binary(torch.logical_and),
    "logical_or": binary(torch.logical_or),
    "logical_xor": binary(torch.logical_xor),
    "reduce_argmax": _arg(torch.argmax),
    "reduce_argmin": _arg(torch.argmin),
    "reduce_l2_norm": reduce(lambda x, dim, keepdim: torch.sqrt(torch.sum(x * x, dim=dim, keepdim=keepdim))),
    "reduce_log_sum_exp": reduce(torch.logsumexp),
    "cumsum": _cumsum,
    "band_part": _band_part,
    "tile": _tile,
    "stack": lambda a, op: torch.stack(a["values"], dim=int(param(a, op, "axis"))),
    "reverse": _reverse,
    "gather_along_axis": _gather_along_axis,
    "gather_nd": _gather_nd,
    "scatter": _scatter,
    "scatter_along_axis": _scatter_along_axis,
    "scatter_nd": _scatter_nd,
    "topk": _topk,
    "argsort": _argsort,
    "non_zero": lambda a, op: torch.nonzero(a["x"]).to(torch.int32),
}
