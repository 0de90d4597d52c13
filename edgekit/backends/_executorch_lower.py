"""ExecuTorch lowering helpers: torch.export, XNNPACK delegation, .pte writing, delegation facts, runtime.

Failures deep inside exir become one `ExportError` that names the operator and where the model uses
it, instead of a page of traceback.
"""

from __future__ import annotations

import re
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.errors import ExportError, first_line

if TYPE_CHECKING:
    import torch

DELEGATE = "XnnpackBackend"
_IGNORED_OPS = ("getitem", "executorch_call_delegate", "alloc")
_MAX_LOCATIONS = 20
# Where exir names the offending operator, e.g. "Operator torch._ops.aten._linalg_svd.default is not in
# Core ATen opset" or "Operator: <EdgeOpOverload: aten.abs.default>: schema = ...".
_OP_PATTERNS = (
    re.compile(r"Operator:? (?:torch\._ops\.)?<?(?:EdgeOpOverload: )?([A-Za-z_][\w]*\.[\w]+(?:\.[\w]+)?)"),
    re.compile(r"Missing out variants?: \{?'?([\w:.]+)"),
    re.compile(r"operator ([\w]+::[\w.]+)", re.IGNORECASE),
)


def export_program(
    model: torch.nn.Module, examples: tuple[np.ndarray, ...], dynamic: Any = None
) -> torch.export.ExportedProgram:
    """Run torch.export on `model` with batch-1 examples of its inputs; explain a failure in one line.

    `dynamic` is torch.export's `dynamic_shapes` for the inputs' dynamic axes (`base.export_dynamic_shapes`).
    """
    import torch

    args = tuple(torch.from_numpy(np.ascontiguousarray(x)) for x in examples)
    try:
        with torch.no_grad():
            program = torch.export.export(model, args, dynamic_shapes=dynamic)
    except Exception as exc:  # torch.export raises UserError, GuardOn..., TypeError, ...
        where = _user_frame(exc)
        raise ExportError(
            f"torch.export cannot trace the model: {first_line(exc)}" + (f" (at {where})" if where else ""),
            hint=(
                "data-dependent Python control flow (an `if` on a tensor value) cannot be exported: use "
                "torch.where/torch.cond, or move it out of forward()"
            ),
        ) from exc
    return rewrite_for_executorch(program)


def rewrite_for_executorch(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """Rewrite ops that XNNPACK and the CPU kernels lack (`edgekit.rewrites.EXECUTORCH`); name the first that stays.

    The result's `edgekit.rewrites.applied_rewrites()` says what changed, for the export facts.
    """
    from edgekit import rewrites

    rewritten = rewrites.apply(program, rewrites.EXECUTORCH).program
    found = rewrites.first_unsupported(rewritten, rewrites.EXECUTORCH_LIMITS)
    if found:
        node, limit = found
        raise rewrites.unsupported_error("ExecuTorch (XNNPACK and its CPU kernels)", node, limit.why, limit.hint)
    return rewritten


def lower_to_pte(program: torch.export.ExportedProgram, path: Path) -> dict[str, Any]:
    """Delegate to XNNPACK, write the .pte at `path`, and return facts about what was delegated.

    LSTMs become loops first (`_executorch_lstm`); that rewrite is added to the ones
    `edgekit.rewrites.applied_rewrites(program)` reports.
    """
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    program = _lstms_as_loops(program)
    try:
        lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    except Exception as exc:  # exir raises SpecViolationError, RuntimeError, ...
        raise _lowering_error(exc, program) from exc
    try:
        executorch_program = lowered.to_executorch()
    except Exception as exc:  # what stayed outside XNNPACK says more than the whole program
        raise _lowering_error(exc, lowered.exported_program()) from exc
    graph = lowered.exported_program().graph_module
    operators = _plan_operators(executorch_program)
    _check_kernels(operators, graph)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(executorch_program.buffer)
    return {
        **delegation_facts(graph),
        "operators": operators,
        "kernels": kernel_libraries(operators),
        "pte_bytes": path.stat().st_size,
    }


def _lstms_as_loops(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """Return `program` with each aten.lstm as a scan loop; record the rewrite on `program` for the build facts."""
    from edgekit.backends._executorch_lstm import LSTM_AS_SCAN
    from edgekit.rewrites import apply
    from edgekit.rewrites._graph import META_KEY

    rewritten = apply(program, (LSTM_AS_SCAN,))
    if rewritten.applied:
        meta = program.graph_module.meta
        done = {entry["name"] for entry in meta.get(META_KEY, [])}
        meta[META_KEY] = [*meta.get(META_KEY, []), *(a for a in rewritten.applied if a["name"] not in done)]
    return rewritten.program


def delegation_facts(graph: torch.fx.GraphModule) -> dict[str, Any]:
    """Summarise get_delegation_info: delegated vs non-delegated ops, and where the latter are."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(graph)
    table = [
        {"op": op, "delegated": b.delegated, "non_delegated": b.non_delegated}
        for op, b in sorted(info.delegation_by_operator.items())
        if op not in _IGNORED_OPS
    ]
    locations = [
        {"op": re.sub(r"_\d+$", "", node.name), "at": node_location(node)}
        for node in graph.graph.nodes
        if node.op == "call_function" and not any(node.name.startswith(i) for i in _IGNORED_OPS)
    ]
    return {
        "delegate": DELEGATE,
        "delegated_subgraphs": info.num_delegated_subgraphs,
        "delegated_nodes": sum(row["delegated"] for row in table),
        "non_delegated_nodes": sum(row["non_delegated"] for row in table),
        "ops": table,
        "portable_ops": {row["op"]: row["non_delegated"] for row in table if row["non_delegated"]},
        "portable_locations": locations[:_MAX_LOCATIONS],
    }


def kernel_libraries(operators: list[str]) -> list[str]:
    """Name the kernel libraries an app must link for the non-delegated operators of a program."""
    kernels = []
    if any(not op.startswith("quantized_decomposed::") for op in operators):
        kernels.append("kernels_optimized")  # the wheel's CPU kernels (optimized, portable fallbacks)
    if any(op.startswith("quantized_decomposed::") for op in operators):
        kernels.append("kernels_quantized")
    return kernels


def load_method(path: Path) -> Any:
    """Load the `forward` method of a .pte in the ExecuTorch runtime (pybind)."""
    try:
        from executorch.runtime import Runtime
    except ImportError as exc:
        from edgekit.errors import MissingDependencyError

        raise MissingDependencyError(
            f"the installed executorch has no Python runtime ({exc})", hint="pip install 'edgekit-deploy[android]'"
        ) from None

    program = Runtime.get().load_program(path)
    method = program.load_method("forward")
    if method is None:
        raise ExportError(f"{path.name} has no 'forward' method", hint="re-run the build")
    return method


def node_location(node: Any) -> str:
    """Say where a graph node comes from: module path and type, then file:line of user code."""
    from edgekit.rewrites import describe

    return describe(node)


def _lowering_error(exc: Exception, program: torch.export.ExportedProgram) -> ExportError:
    """Name the op exir failed on and where the model uses it.

    When exir names a (de)quantize op, the real cause is the op it feeds: int8 tensors reached an
    operator XNNPACK did not take, which has no int8 CPU kernel.
    """
    from edgekit.rewrites import op_label

    op = _op_in_message(str(exc))
    where, feeds = "", ""
    if op:
        spelled = op.replace("::", ".")
        for node in program.graph.nodes:
            if node.op == "call_function" and (spelled in str(node.target) or str(node.target) in spelled):
                consumer = next((u for u in node.users if "quantize" not in str(u.target)), None)
                if "quantize" in op and consumer is not None:
                    feeds = f" (it feeds {op_label(consumer.target)}, which XNNPACK did not take)"
                    node = consumer
                where = node_location(node)
                break
    what = f"operator {op}{feeds}" if op else "the model"
    return ExportError(
        f"ExecuTorch cannot lower {what} for XNNPACK or its CPU kernels"
        + (f" (used at {where})" if where else "")
        + f": {first_line(exc)}",
        hint="replace that operation with supported ops (torch.export Core ATen), or compute it outside the model",
    )


def _plan_operators(executorch_program: Any) -> list[str]:
    plan = executorch_program.executorch_program.execution_plan[0]
    return sorted({f"{op.name}.{op.overload}" if op.overload else op.name for op in plan.operators})


def _check_kernels(operators: list[str], graph: torch.fx.GraphModule) -> None:
    """Fail now, naming the op, if the runtime has no kernel for an operator left outside XNNPACK."""
    from executorch.runtime import Runtime

    known = Runtime.get().operator_registry.operator_names
    missing = [op for op in operators if op not in known]
    if not missing:
        return
    stem = missing[0].split("::")[-1].split(".")[0]
    where = next((node_location(n) for n in graph.graph.nodes if n.op == "call_function" and stem in str(n.target)), "")
    raise ExportError(
        f"the ExecuTorch runtime has no kernel for {', '.join(missing)}" + (f" (used at {where})" if where else ""),
        hint="replace that operation in the model, or link a custom kernel library in the app",
    )


def _op_in_message(message: str) -> str | None:
    for pattern in _OP_PATTERNS:
        match = pattern.search(message)
        if match:
            return match.group(1)
    return None


def _user_frame(exc: BaseException) -> str:
    """Return file:line of the deepest traceback frame outside torch/executorch/torchao, if any."""
    frames = traceback.extract_tb(exc.__traceback__)
    library = ("site-packages", "dist-packages", "/torch/", "/executorch/", "/torchao/", "/edgekit/")
    user = [f for f in frames if not any(part in f.filename for part in library)]
    if user:
        return f"{Path(user[-1].filename).name}:{user[-1].lineno}: {(user[-1].line or '').strip()}"
    match = re.search(r'File "([^"]+)", line (\d+), in \w+\n\s*(.*)', str(exc))
    return f"{Path(match.group(1)).name}:{match.group(2)}: {match.group(3).strip()}" if match else ""
