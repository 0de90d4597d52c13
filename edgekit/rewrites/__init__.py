"""Graph rewrites that let a model run where a delegate or converter lacks one of its ops, in one place.

Each rewrite replaces nodes of a `torch.export` program with other ops computing the same function
(tested against torch in tests/rewrites), says which runtime lacks what, and is reported in the build
facts (`export.rewrites`). `apply` returns a new program and never touches the user's model.

- `EXECUTORCH`: 3-D convolutions, pools and batch norms of video networks as 2-D ops (`video.py`),
  applied in `edgekit.backends._executorch_lower.export_program`, before quantization and lowering.
- `COREML`: `new_ones`, `zero`, `alias` and `adaptive_avg_pool3d`, which coremltools 9.0 cannot convert
  (`coreml.py`), applied in `edgekit.backends.coreml.convert.convert`; `drop_noops` cleans the core
  ATen graph of its retry.

When an op is still out of reach, `first_unsupported` finds the first such node and `unsupported_error`
names the op, the node and the user's module path and file:line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from edgekit.errors import ExportError
from edgekit.rewrites._graph import Rewrite, Rewritten, applied_rewrites, apply, describe, op_label, rank
from edgekit.rewrites.coreml import ALIAS_REMOVED, NEW_ONES_AS_FULL, ZERO_AS_ZEROS_LIKE, drop_noops
from edgekit.rewrites.video import (
    ADAPTIVE_AVG_POOL3D_AS_2D,
    AVG_POOL3D_AS_AVG_POOL2D,
    BATCH_NORM_5D_AS_AFFINE,
    CONV3D_AS_CONV2D,
    FOLD_BATCH_NORM_INTO_CONV3D,
    MAX_POOL3D_AS_MAX_POOL2D,
)

if TYPE_CHECKING:
    from torch import fx

__all__ = [
    "COREML",
    "EXECUTORCH",
    "EXECUTORCH_LIMITS",
    "Limit",
    "Rewrite",
    "Rewritten",
    "applied_rewrites",
    "apply",
    "describe",
    "drop_noops",
    "first_unsupported",
    "op_label",
    "unsupported_error",
]

EXECUTORCH = (
    FOLD_BATCH_NORM_INTO_CONV3D,  # before CONV3D_AS_CONV2D, which would hide the conv from it
    CONV3D_AS_CONV2D,
    BATCH_NORM_5D_AS_AFFINE,
    MAX_POOL3D_AS_MAX_POOL2D,
    AVG_POOL3D_AS_AVG_POOL2D,
    ADAPTIVE_AVG_POOL3D_AS_2D,
)
COREML = (NEW_ONES_AS_FULL, ZERO_AS_ZEROS_LIKE, ALIAS_REMOVED, ADAPTIVE_AVG_POOL3D_AS_2D)

aten = torch.ops.aten
_CONVOLUTIONS = (
    aten.conv3d.default,
    aten.conv3d.padding,
    aten.conv_transpose3d.input,
    aten.convolution.default,
    aten._convolution.default,
)
_POOLS_3D = (
    aten.max_pool3d.default,
    aten.max_pool3d_with_indices.default,
    aten.avg_pool3d.default,
    aten.adaptive_max_pool3d.default,
    aten.adaptive_avg_pool3d.default,
    aten._adaptive_avg_pool3d.default,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Limit:
    """Nodes a runtime cannot run once the rewrites are done, why, and what the user can do."""

    matches: Callable[[fx.Node], bool]
    why: str
    hint: str


EXECUTORCH_LIMITS = (
    Limit(
        matches=lambda n: n.target in _CONVOLUTIONS and rank(n.args[0]) == 5,
        why="XNNPACK takes no 3-D convolution and ExecuTorch's portable convolution kernel accepts only 3-D or 4-D "
        "inputs (edgekit rewrites a 3-D convolution into 2-D ones, but not a transposed one)",
        hint="replace the layer with 2-D ops (e.g. nn.Upsample + nn.Conv3d for a ConvTranspose3d), or build for "
        "rpi: ONNX Runtime runs 3-D convolutions",
    ),
    Limit(
        matches=lambda n: n.target in _POOLS_3D,
        why="ExecuTorch has no kernel for this 3-D pool and XNNPACK no 3-D pooling (edgekit rewrites max, average "
        "and adaptive-average 3-D pools without indices, divisor_override or dynamic sizes)",
        hint="use nn.MaxPool3d / nn.AvgPool3d / nn.AdaptiveAvgPool3d without those options, or build for rpi",
    ),
)


def first_unsupported(program: torch.export.ExportedProgram, limits: tuple[Limit, ...]) -> tuple[fx.Node, Limit] | None:
    """Return the first node (in execution order) that a limit matches, with that limit; None when all can run."""
    for node in program.graph.nodes:
        if node.op == "call_function":
            for limit in limits:
                if limit.matches(node):
                    return node, limit
    return None


def unsupported_error(runtime: str, node: fx.Node, why: str, hint: str) -> ExportError:
    """Return the exit-6 error naming the op, the node and where in the user's model it comes from."""
    return ExportError(
        f"{runtime} cannot run {op_label(node.target)} (node '{node.name}', {describe(node)}): {why}", hint=hint
    )
