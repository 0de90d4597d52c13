"""The machinery behind every rewrite: match nodes, splice in a replacement, re-export, say where a node came from.

A rewrite works on the self-contained module of a program (`ExportedProgram.module()`, parameters as
`get_attr`), so a replacement can read weights and register new ones (a 3-D kernel stacked into a
2-D one) instead of reshaping them at run time, where XNNPACK wants static weights. Each matched node
becomes a call to a plain Python function that computes the same value with other ops; `torch.export`
then traces the edited module again, which turns those calls into ATen ops that inherit the replaced
node's `nn_module_stack` and `stack_trace` (export preserves node metadata while it re-traces a
GraphModule). Dynamic dimensions of the inputs are declared again with the ranges the program had.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import fx

META_KEY = "edgekit.rewrites"  # graph_module.meta key holding what `apply` did to a program
# Frames under these paths are library code; the user's own file:line is the deepest frame outside them.
_LIBRARY = ("site-packages", "dist-packages", "/torch/", "/executorch/", "/torchao/", "/coremltools/")
_EDGEKIT = str(Path(__file__).resolve().parents[1])
_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)\n\s*(.*)')

Replace = Callable[[fx.GraphModule, fx.Node], "fx.Node | None"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Rewrite:
    """One graph rewrite: which nodes it takes, what it puts in their place, and why it exists.

    Attributes:
        name: short id written into the build facts ("conv3d_as_conv2d").
        why: which runtime lacks what, in one line (the manifest and the docs quote it).
        matches: a cheap test on a node of the program; runs on every node.
        replace: inserts the replacement before the node and returns the node carrying its value,
            or None to leave this node alone (a case the rewrite does not cover).
    """

    name: str
    why: str
    matches: Callable[[fx.Node], bool]
    replace: Replace


@dataclass(frozen=True, slots=True, kw_only=True)
class Rewritten:
    """A program after rewriting (a new one when anything changed) and what was rewritten, in order."""

    program: torch.export.ExportedProgram
    applied: tuple[dict[str, Any], ...] = ()  # {"name", "nodes", "why"}, one per rewrite that changed something


def apply(program: torch.export.ExportedProgram, rewrites: Sequence[Rewrite]) -> Rewritten:
    """Return a new program with every node a rewrite matches replaced; `program` itself is not touched.

    When no rewrite matches, the same program comes back (no re-export). The result's
    `graph_module.meta[META_KEY]` holds `applied`, so code that only has the program can report it.
    """
    if not any(r.matches(n) for r in rewrites for n in program.graph.nodes if n.op == "call_function"):
        return Rewritten(program=program)
    module = program.module(check_guards=False)  # new GraphModule; shares (never writes) the weights
    applied: list[dict[str, Any]] = []
    for rewrite in rewrites:
        count = 0
        for node in list(module.graph.nodes):
            if node.op != "call_function" or not rewrite.matches(node):
                continue
            with module.graph.inserting_before(node):
                value = rewrite.replace(module, node)
            if value is None:
                continue
            node.replace_all_uses_with(value)
            module.graph.erase_node(node)
            count += 1
        if count:
            module.graph.eliminate_dead_code()
            applied.append({"name": rewrite.name, "nodes": count, "why": rewrite.why})
    if not applied:
        return Rewritten(program=program)
    module.graph.lint()
    module.recompile()
    try:
        rewritten = reexport(module, program)
    except Exception as exc:  # the model exported before the rewrite, so this is edgekit's bug
        from edgekit.errors import InternalError, first_line

        names = ", ".join(str(a["name"]) for a in applied)
        raise InternalError(f"exporting again after the rewrites {names} failed: {first_line(exc)}") from exc
    rewritten.graph_module.meta[META_KEY] = [*applied_rewrites(program), *applied]
    return Rewritten(program=rewritten, applied=tuple(applied))


def applied_rewrites(program: torch.export.ExportedProgram) -> list[dict[str, Any]]:
    """Return what `apply` did to produce `program` (empty for a program it did not change)."""
    return list(program.graph_module.meta.get(META_KEY, []))


def reexport(module: fx.GraphModule, like: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """Export `module` with the example inputs and dynamic dimensions of the program it came from."""
    args, kwargs = like.example_inputs or ((), {})
    return torch.export.export(module, tuple(args), kwargs or None, dynamic_shapes=dynamic_shapes(like), strict=False)


def dynamic_shapes(program: torch.export.ExportedProgram) -> Any:
    """Return `dynamic_shapes` for re-exporting: every symbolic input dimension, with its range; None if static."""
    from torch.export import Dim, ShapesCollection
    from torch.export.graph_signature import InputKind
    from torch.utils import _pytree

    args, kwargs = program.example_inputs or ((), {})
    users = [s.arg.name for s in program.graph_signature.input_specs if s.kind is InputKind.USER_INPUT]
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    leaves = [leaf for leaf in _pytree.tree_leaves((args, kwargs)) if isinstance(leaf, torch.Tensor)]
    shapes, dims = ShapesCollection(), {}
    for name, leaf in zip(users, leaves, strict=False):
        value = placeholders[name].meta.get("val")
        spec: dict[int, Any] = {}
        for axis, size in enumerate(getattr(value, "shape", ())):
            if not isinstance(size, torch.SymInt):
                continue
            expr = size.node.expr
            if expr not in dims:
                bounds = program.range_constraints.get(expr)
                lower = (_finite(bounds.lower) if bounds is not None else None) or 0
                upper = _finite(bounds.upper) if bounds is not None else None
                dims[expr] = Dim(re.sub(r"\W", "_", str(expr)), min=lower, max=upper) if expr.is_Symbol else Dim.AUTO
            spec[axis] = dims[expr]
        if spec:
            shapes[leaf] = spec
    return shapes if len(shapes) else None


def _finite(bound: Any) -> int | None:
    """Return a range bound as an int, or None when unbounded (torch's int_oo claims to be finite)."""
    from torch.utils._sympy.numbers import int_oo

    if bound in (int_oo, -int_oo) or not bound.is_number or bound.is_infinite:
        return None
    return int(bound)


def arguments(node: fx.Node) -> dict[str, Any]:
    """Return every argument of an ATen call by its schema name, defaults filled in."""
    bound: dict[str, Any] = {}
    for i, arg in enumerate(node.target._schema.arguments):  # type: ignore[union-attr]
        if i < len(node.args):
            bound[arg.name] = node.args[i]
        elif arg.name in node.kwargs:
            bound[arg.name] = node.kwargs[arg.name]
        elif arg.has_default_value():
            bound[arg.name] = arg.default_value
    return bound


def value(node: Any) -> Any:
    """Return the example value (a FakeTensor) a node carries, or None."""
    return node.meta.get("val") if isinstance(node, fx.Node) else None


def rank(node: Any) -> int | None:
    """Return the rank of a node's tensor value, or None when unknown."""
    val = value(node)
    return val.dim() if isinstance(val, torch.Tensor) else None


def weight(module: fx.GraphModule, node: Any) -> torch.Tensor | None:
    """Return the tensor behind a `get_attr` node (a parameter, buffer or constant), else None."""
    if not isinstance(node, fx.Node) or node.op != "get_attr":
        return None
    owner: Any = module
    for part in str(node.target).split("."):
        owner = getattr(owner, part)
    return owner.detach() if isinstance(owner, torch.Tensor) else None


def constant(module: fx.GraphModule, tensor: torch.Tensor, stem: str) -> fx.Node:
    """Register `tensor` as a new parameter of `module` and return a `get_attr` node reading it."""
    index = 0
    while hasattr(module, f"_edgekit_{stem}_{index}"):
        index += 1
    name = f"_edgekit_{stem}_{index}"
    module.register_parameter(name, torch.nn.Parameter(tensor.detach().clone().contiguous(), requires_grad=False))
    return module.graph.get_attr(name)


def call(node: fx.Node, function: Callable[..., Any], *args: Any) -> fx.Node:
    """Insert `function(*args)` where `node` is, carrying the node's metadata (module path, stack trace, value).

    The value (`val`) carries over because the replacement computes the same tensor; later rewrites
    read shapes from it.
    """
    new = node.graph.call_function(function, tuple(args))
    new.meta.update(node.meta)
    return new


def op_label(target: Any) -> str:
    """Return 'aten.conv3d' for an ATen overload (the overload name dropped), else the callable's name."""
    if isinstance(getattr(target, "_op", None), torch._ops.OpOverload):  # an exir EdgeOpOverload wraps one
        target = target._op
    if isinstance(target, torch._ops.OpOverload):
        return f"{target.namespace}.{target._opname}"
    return str(getattr(target, "__name__", target))


def describe(node: Any) -> str:
    """Say where a node comes from: module path and type, then the user's own file:line and code."""
    parts = []
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path, kind = list(stack.values())[-1]
        path = re.sub(r"^L\['self'\]\.?", "", str(path)).replace("_modules['", "").replace("']", "") or "<root>"
        parts.append(f"module {path} ({getattr(kind, '__name__', str(kind).rsplit('.', 1)[-1])})")
    frames = _FRAME.findall(node.meta.get("stack_trace") or "")
    mine = [f for f in frames if not f[0].startswith(_EDGEKIT) and not any(p in f[0] for p in _LIBRARY)] or frames
    if mine:
        file, line, func, code = mine[-1]
        parts.append(f"{Path(file).name}:{line} in {func}: {code.strip()}")
    return ", ".join(parts) or "unknown location"
