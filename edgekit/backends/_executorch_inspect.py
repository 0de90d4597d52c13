"""Per-layer quantization error for ExecuTorch: each layer's own output, int8 vs float, by torch module path.

What is measured is the PT2E graph that `convert_pt2e` produced: the exact quantized program that is
lowered into the .pte (same int8 weights, scales and zero points). ExecuTorch's own devtools cannot
give this figure for a delegated program: with the pip wheel, ETDump (enable_etdump, a debug buffer)
times each XNNPACK operator inside the delegate but records tensors only at DELEGATE_CALL, the
delegate's inputs and outputs (checked with executorch 1.5.1 on an int8 two-layer MLP).

"Own" error: each layer reads the float model's values (its input is not re-quantized: that quantizer
is the producing layer's output quantizer, charged there; the model input's quantizer is charged to
the layer that reads it), runs with its int8 weights, and passes its output quantizer. So an error is
found where it arises, not wherever it has accumulated to. The figure is the median over output
channels of each channel's SQNR: a tensor-wide SQNR hides channels that one outlier channel drowns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.backends._executorch_quantize import is_compute, op_name
from edgekit.backends._layers import module_path
from edgekit.backends.base import LayerError, LayerReport

if TYPE_CHECKING:
    import torch

TOOL = "torchao PT2E quantized graph (the graph lowered into the .pte), run in torch.fx"
_CAP_DB = 200.0  # a channel with no error at all
_BATCH = 8  # samples per run: every op measured is per-sample, so batching changes no figure, only the time
_OPS = {"conv": "conv", "linear": "linear", "addmm": "linear", "matmul": "matmul", "bmm": "matmul", "mm": "matmul"}


@dataclass(slots=True)
class _Layer:
    """One quantized compute op and where its output is measured."""

    module: str
    op: str
    native: tuple[str, ...]  # the compute node, then the nodes up to its output quantizer
    measured_at: str  # the quantize node of its output, or the compute node when its output stays float
    reference: str  # the float twin's node holding the same tensor
    channel_axis: int
    signal: Any = None  # per-channel sums of squares over the samples
    noise: Any = None
    extra: list[str] = field(default_factory=list)

    def add(self, reference: np.ndarray, measured: np.ndarray) -> None:
        ref = reference.astype(np.float64)
        err = ref - measured.astype(np.float64)
        if ref.ndim == 0:
            ref, err = ref.reshape(1, 1), err.reshape(1, 1)
        ref = np.moveaxis(ref, self.channel_axis, -1).reshape(-1, ref.shape[self.channel_axis])
        err = np.moveaxis(err, self.channel_axis, -1).reshape(ref.shape)
        signal, noise = np.square(ref).sum(0), np.square(err).sum(0)
        self.signal = signal if self.signal is None else self.signal + signal
        self.noise = noise if self.noise is None else self.noise + noise

    def sqnr_db(self) -> float:
        live = self.signal > 0
        if not live.any():
            return _CAP_DB
        with np.errstate(divide="ignore"):
            per_channel = 10.0 * np.log10(self.signal[live] / self.noise[live])
        return round(float(min(np.median(per_channel), _CAP_DB)), 2)


def layer_errors(twin: Any, converted: Any, inputs: Sequence[np.ndarray]) -> LayerReport:
    """Return each quantized layer's own output SQNR on `inputs` (one array per model input), worst first.

    Args:
        twin: The calibrated PT2E graph before conversion (float, observers pass values through).
        converted: `convert_pt2e`'s graph, lowered into the artifact.
        inputs: Samples per model input, batch first; they run one at a time (batch-1 export).
    """
    import torch

    layers, unnamed = _quantized_layers(converted)
    forced = {_source(n) for n in converted.graph.nodes if _is_quantize(n)}  # activations handed on in float
    count = min(len(a) for a in inputs)
    weights: dict[str, Any] = {}  # dequantized int8 weights, the same for every sample
    batch = _BATCH
    start = 0
    while start < count:
        args = [torch.from_numpy(np.ascontiguousarray(a[start : start + batch])) for a in inputs]
        try:
            floats = _FloatRun(twin).values(args, forced | {layer.reference for layer in layers})
            measured = _OwnErrorRun(converted, floats, weights).values(args, {layer.measured_at for layer in layers})
        except Exception:  # a shape baked into the batch-1 export (a view, a reshape): one sample at a time
            if batch == 1:
                raise
            batch = 1
            continue
        for layer in layers:
            if layer.reference in floats and layer.measured_at in measured:
                layer.add(floats[layer.reference].numpy(), measured[layer.measured_at].numpy())
        start += batch
    rows = _by_module([layer for layer in layers if layer.signal is not None])
    notes = [
        f"own error of each layer on {count} samples: float inputs, int8 weights, its output quantizer; "
        "median over output channels of the per-channel SQNR",
        "ExecuTorch's ETDump records tensors only at the XNNPACK delegate's boundary, not per layer inside it, "
        "so the converted PT2E graph lowered into the .pte is measured: same int8 weights, scales and zero points",
    ]
    if unnamed:
        notes.append(f"{unnamed} quantized ops outside any submodule are not listed (keep_float names modules)")
    return LayerReport(tool=TOOL, layers=tuple(sorted(rows, key=lambda r: r.sqnr_db)), notes=tuple(notes))


def _quantized_layers(converted: Any) -> tuple[list[_Layer], int]:
    """Find the compute ops fed by dequantize (quantized) and the quantizer each one's output passes."""
    layers, unnamed = [], 0
    for node in converted.graph.nodes:
        name = op_name(node.target) if node.op == "call_function" else ""
        if not name or "quantize" in name or not is_compute(name):
            continue
        if not any(_is_dequantize(a) for a in node.all_input_nodes):
            continue
        module = module_path(node)
        if not module:
            unnamed += 1
            continue
        quantizer, path = _output_quantizer(node)
        op = next((short for word, short in _OPS.items() if f".{word}" in name or f"_{word}" in name), name)
        layers.append(
            _Layer(
                module=module,
                op=op,
                native=(node.name, *path),
                measured_at=quantizer.name if quantizer is not None else node.name,
                reference=_source(quantizer) if quantizer is not None else node.name,
                channel_axis=1 if op == "conv" else -1,
            )
        )
    return layers, unnamed


def _output_quantizer(node: torch.fx.Node) -> tuple[torch.fx.Node | None, list[str]]:
    """Follow `node`'s users through non-compute ops (relu, clamp, ...) to the first quantize op."""
    path: list[str] = []
    current = node
    while True:
        users = list(current.users)
        quantizer = next((u for u in users if _is_quantize(u)), None)
        if quantizer is not None:
            return quantizer, path
        followers = [u for u in users if u.op == "call_function" and not is_compute(op_name(u.target))]
        if len(users) != 1 or not followers:
            return None, path
        current = followers[0]
        path.append(current.name)


def _by_module(layers: list[_Layer]) -> list[LayerError]:
    """One row per module path: its worst op's SQNR, every native node name."""
    rows: dict[str, LayerError] = {}
    for layer in layers:
        sqnr = layer.sqnr_db()
        seen = rows.get(layer.module)
        if seen is None:
            rows[layer.module] = LayerError(module=layer.module, native=layer.native, op=layer.op, sqnr_db=sqnr)
        else:
            rows[layer.module] = LayerError(
                module=layer.module,
                native=(*seen.native, *layer.native),
                op=seen.op if seen.sqnr_db <= sqnr else layer.op,
                sqnr_db=min(seen.sqnr_db, sqnr),
            )
    return list(rows.values())


def _source(node: Any) -> str:
    """Name the node a quantize or dequantize op reads."""
    return str(getattr(node.args[0], "name", ""))


def _input_op(node: Any) -> str:
    """Return the FX op kind ("placeholder", "get_attr", "call_function") of a node's first input."""
    return str(getattr(node.args[0], "op", ""))


def _is_quantize(node: Any) -> bool:
    name = op_name(node.target) if node.op == "call_function" else ""
    return "quantized_decomposed.quantize_per" in name


def _is_dequantize(node: Any) -> bool:
    name = op_name(node.target) if node.op == "call_function" else ""
    return "quantized_decomposed.dequantize_per" in name


def _interpreter() -> type:
    import torch.fx

    return torch.fx.Interpreter


class _FloatRun:
    """Run the float twin, observers passing values through, and keep every node's tensor."""

    def __init__(self, graph_module: Any) -> None:
        self.graph_module = graph_module

    def values(self, args: list[Any], wanted: set[str]) -> dict[str, Any]:
        """Return the `wanted` nodes' tensors, copied: the graph has in-place ops (relu_, add_)."""
        import torch

        recorded: dict[str, Any] = {}

        class Recorder(_interpreter()):  # type: ignore[misc]
            def call_module(self, target: Any, args: Any, kwargs: Any) -> Any:
                if str(target).startswith("activation_post_process"):
                    return args[0]  # an observer: identity, and calibration stays as it was
                return super().call_module(target, args, kwargs)

            def run_node(self, n: Any) -> Any:
                value = super().run_node(n)
                if n.name in wanted and isinstance(value, torch.Tensor) and value.is_floating_point():
                    recorded[n.name] = value.clone()
                return value

        with torch.no_grad():
            Recorder(self.graph_module).run(*args)
        return recorded


class _OwnErrorRun:
    """Run the converted graph, but hand every layer the float model's activations.

    A dequantize of an activation records the quantized value (the producing layer's own output,
    quantized) and passes on the float twin's value instead, so no error reaches the next layer.
    """

    def __init__(self, graph_module: Any, floats: dict[str, Any], weights: dict[str, Any]) -> None:
        self.graph_module, self.floats, self.weights = graph_module, floats, weights

    def values(self, args: list[Any], wanted: set[str]) -> dict[str, Any]:
        """Return the `wanted` nodes' tensors (quantize nodes: their dequantized value), copied."""
        import torch

        floats, weights, measured = self.floats, self.weights, {}

        class OwnError(_interpreter()):  # type: ignore[misc]
            def run_node(self, n: Any) -> Any:
                if n.name in weights:
                    return weights[n.name]
                value = super().run_node(n)
                if _is_dequantize(n) and _input_op(n) == "get_attr":
                    weights[n.name] = value  # a weight: dequantized once, not per sample
                if not _is_dequantize(n):
                    if n.name in wanted and isinstance(value, torch.Tensor):
                        measured[n.name] = value.clone()
                    return value
                quantizer = n.args[0]
                if not (isinstance(quantizer, torch.fx.Node) and _is_quantize(quantizer)):
                    return value
                if quantizer.name in wanted:
                    measured[quantizer.name] = value.clone()
                source = _source(quantizer)
                if _input_op(quantizer) == "placeholder" or source not in floats:
                    return value  # the model input's quantizer belongs to the layer reading it
                return floats[source].clone()  # a copy: consumers may work in place

        with torch.no_grad():
            OwnError(self.graph_module).run(*args)
        return measured
