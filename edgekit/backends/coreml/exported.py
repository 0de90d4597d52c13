"""The torch.export route to Core ML: rewrite what coremltools lacks, retry from core ATen, name the op that failed.

1. `torch.export`, `run_decompositions({})` (functional, the ops as the model wrote them), then
   `edgekit.rewrites.COREML` (new_ones, zero, alias, adaptive_avg_pool3d).
2. If coremltools still fails, the core ATen graph (`run_decompositions()`, PyTorch's default table),
   rewritten the same way, with the no-op nodes that decomposition leaves (`alias`) removed: many ops
   coremltools lacks decompose into ones it has.
3. If that fails too, `ConversionFailed` carries the FIRST failure, located: the op, the graph node,
   the module path and the user's file:line (the caller may still try TorchScript).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from edgekit.errors import ExportError, first_line

# coremltools names the node when its registry has no converter for the op (internal_graph.py) ...
_UNSUPPORTED = re.compile(r"Unsupported fx node (\S+), kind (\S+)")
# ... and logs the op kind before re-raising any other converter error (frontend/torch/ops.py, convert_nodes).
_CONVERTING = re.compile(r"ERROR - converting '([^']+)' op")
_HINT_MISSING = (
    "coremltools has no converter for that op: replace it in the model with supported ops, register one with "
    "coremltools' @register_torch_op, or build for android/rpi"
)
_HINT_FAILED = (
    "coremltools' converter for that op does not take the call as the model makes it: spell out the arguments "
    "left at their defaults (dims, stride), rewrite the call, or build for android/rpi"
)


class ConversionFailed(Exception):  # noqa: N818 - a result the caller handles (it retries TorchScript)
    """coremltools could not convert the exported program; `error` names the first failure as precisely as known."""

    def __init__(self, error: ExportError) -> None:
        super().__init__(error.message)
        self.error = error


def convert_exported(
    model: Any, sample: tuple[Any, ...], options: dict[str, Any], prepare: Callable[[Any], None], dynamic: Any = None
) -> tuple[Any, list[dict[str, Any]]]:
    """Return (ML program, rewrites applied) for `model`, or raise ConversionFailed naming the first failure.

    `prepare` edits a decomposed program in place just before conversion (a workaround for a
    coremltools bug, say).
    """
    import coremltools as ct
    import torch

    from edgekit import rewrites

    try:
        exported = torch.export.export(model, sample, dynamic_shapes=dynamic)
    except Exception as exc:  # UserError, GuardOn..., TypeError, ...
        raise ConversionFailed(ExportError(f"torch.export cannot trace the model: {first_line(exc)}")) from exc
    first: ExportError | None = None
    tables: tuple[dict[Any, Any] | None, ...] = ({}, None)  # None: PyTorch's default table, the core ATen opset
    for table in tables:
        # Rewrite after functionalization: `x.zero_()` is only a `zero` once no view is mutated in place.
        rewritten = rewrites.apply(exported.run_decompositions(table), rewrites.COREML)
        program = rewritten.program.run_decompositions(table) if rewritten.applied else rewritten.program
        applied = list(rewritten.applied)
        if table is None:
            cleaned = rewrites.drop_noops(program)
            program = cleaned.program
            applied = [{"name": "core_aten_decomposition", "because": first.message if first else ""}, *applied]
            applied += list(cleaned.applied)
        prepare(program)
        with _converter_log() as log:
            try:
                return ct.convert(program, **options), applied
            except Exception as exc:  # NotImplementedError, ValueError, AssertionError, ...
                first = first or locate(exc, program, log)
    assert first is not None
    raise ConversionFailed(first)


def locate(exc: BaseException, program: Any, log: list[str]) -> ExportError:
    """Return an ExportError naming the op coremltools failed on, its node and where the model uses it."""
    from edgekit.rewrites import describe, op_label

    nodes = [n for n in program.graph.nodes if n.op == "call_function"]
    node = None
    match = _UNSUPPORTED.search(str(exc))
    if match:
        node = next((n for n in nodes if n.name == match.group(1)), None)
    else:
        kinds = [m.group(1) for line in log for m in [_CONVERTING.search(line)] if m]
        if kinds:
            node = next((n for n in nodes if _kind(n) == kinds[0]), None)
    hint = _HINT_MISSING if match else _HINT_FAILED
    if node is None:
        return ExportError(f"coremltools could not convert the model: {first_line(exc)}", hint=hint)
    return ExportError(
        f"coremltools cannot convert {op_label(node.target)} (node '{node.name}', {describe(node)}): {first_line(exc)}",
        hint=hint,
    )


def _kind(node: Any) -> str:
    """Return the op kind coremltools looks up for a node: 'aten::max_pool2d' -> 'max_pool2d'."""
    name = node.target.name() if hasattr(node.target, "name") else str(node.target)
    return str(name).split("::")[-1].split(".")[0].lower()


@contextmanager
def _converter_log() -> Iterator[list[str]]:
    """Collect coremltools' own error log lines (they name the op a converter failed on)."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Collect(logging.ERROR)
    logger = logging.getLogger("coremltools")
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
