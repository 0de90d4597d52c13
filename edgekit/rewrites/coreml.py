"""Rewrites for ops that real models emit and coremltools 9.0 has no converter for.

coremltools converts an exported program node by node and refuses a node whose op has no entry in
its registry (`converters/mil/frontend/torch/internal_graph.py`: "Unsupported fx node ..., kind ...";
the TorchScript frontend fails the same way in `ops.py`, "PyTorch convert function for op ... not
implemented"). In coremltools 9.0 that registry has `new_zeros`, `new_full` and `new_empty` but no
`new_ones`; `alias_copy` but no `alias`; `zeros_like` but no `zero`; and no `adaptive_avg_pool3d` (see `video.py`).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import fx

from edgekit.rewrites._graph import META_KEY, Rewrite, Rewritten, applied_rewrites, arguments, call, value

aten = torch.ops.aten
# Ops that only rename a value: in a functional graph each equals its input.
NOOPS = (aten.alias.default, aten.alias_copy.default, aten.detach.default, aten.detach_copy.default)


def full_of_ones(size: Any, dtype: torch.dtype) -> torch.Tensor:
    """Return `torch.full(size, 1)`: what `x.new_ones(size)` makes (coremltools converts `full`)."""
    return torch.full(size, 1, dtype=dtype)


def _replace_new_ones(module: fx.GraphModule, node: fx.Node) -> fx.Node | None:
    made = value(node)
    if made is None or made.device.type != "cpu" or made.layout is not torch.strided:
        return None
    return call(node, full_of_ones, arguments(node)["size"], made.dtype)


def zeros_of(source: torch.Tensor) -> torch.Tensor:
    """Return `torch.zeros_like(source)`: what the functional form of `x.zero_()` makes."""
    return torch.zeros_like(source)


def _replace_alias(module: fx.GraphModule, node: fx.Node) -> fx.Node | None:
    source = node.args[0]
    return source if isinstance(source, fx.Node) else None


NEW_ONES_AS_FULL = Rewrite(
    name="new_ones_as_full",
    why="coremltools 9.0 has no new_ones converter (sentence transformers' attention masks): torch.full(size, 1)",
    matches=lambda n: n.target is aten.new_ones.default,
    replace=_replace_new_ones,
)
ZERO_AS_ZEROS_LIKE = Rewrite(
    name="zero_as_zeros_like",
    why="coremltools 9.0 has no zero converter (the functional `x.zero_()` of Swin V2's qkv bias): zeros_like",
    matches=lambda n: n.target is aten.zero.default,
    replace=lambda module, node: call(node, zeros_of, node.args[0]),
)
ALIAS_REMOVED = Rewrite(
    name="alias_removed",
    why="coremltools 9.0 has no alias converter (windowed-attention ViTs); an alias equals its input",
    matches=lambda n: n.target is aten.alias.default,
    replace=_replace_alias,
)


def drop_noops(program: torch.export.ExportedProgram) -> Rewritten:
    """Return the program without alias/detach nodes, which the core ATen decomposition leaves behind.

    Works on the lifted graph, without tracing again, so a decomposed program stays decomposed. A
    graph output that was such a node names the node's input instead.
    """
    if not any(n.op == "call_function" and n.target in NOOPS for n in program.graph.nodes):
        return Rewritten(program=program)
    module = copy.deepcopy(program.graph_module)
    signature = copy.deepcopy(program.graph_signature)
    count = 0
    for node in list(module.graph.nodes):
        if node.op != "call_function" or node.target not in NOOPS or not isinstance(node.args[0], fx.Node):
            continue
        source = node.args[0]
        node.replace_all_uses_with(source)
        for spec in signature.output_specs:
            if getattr(spec.arg, "name", None) == node.name:
                spec.arg.name = source.name  # type: ignore[union-attr]
        module.graph.erase_node(node)
        count += 1
    module.recompile()
    applied = {
        "name": "noops_removed",
        "nodes": count,
        "why": "alias/detach left by run_decompositions() equal their input",
    }
    new = program._update(module, signature)
    new.graph_module.meta[META_KEY] = [*applied_rewrites(program), applied]
    return Rewritten(program=new, applied=(applied,))
