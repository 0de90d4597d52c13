"""ONNX graphs seen as torch layers: naming, float/16-bit plans and per-layer errors.

The dynamo exporter records each node's torch scopes in its metadata (`pkg.torch.onnx.name_scopes`,
e.g. `['', 'features', 'features.3', 'features.3.0', 'conv2d_1']`); a parameter keeps its torch name
(`features.0.weight`) even after the exporter folds a BatchNorm into the Conv, whose scope then names
the BatchNorm. A compute node answers to both. TorchScript exports carry neither, only node names like
`/features/features.3/conv/conv.0/Conv`, which are parsed as a last resort.

Per-layer errors come from `onnxruntime.quantization.qdq_loss_debug`: both models are augmented to
output every intermediate tensor, run on the same samples, and each quantized tensor is matched with
its float self. Heavy imports stay inside the functions.
"""

from __future__ import annotations

import ast
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.backends._layers import covered
from edgekit.backends.base import Arrays, LayerError, LayerReport

if TYPE_CHECKING:
    pass

COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "LSTM", "GRU", "RNN")
# Ops that hand a layer's output on unchanged in kind: a float layer's output stays float through them.
_PASS_THROUGH = frozenset(
    "Relu Clip LeakyRelu PRelu Sigmoid Tanh HardSigmoid HardSwish Gelu Elu Selu Softplus Erf Identity "
    "MaxPool AveragePool GlobalAveragePool GlobalMaxPool ReduceMean Reshape Flatten Transpose Squeeze "
    "Unsqueeze Resize Slice Gather Pad DepthToSpace SpaceToDepth".split()
)
_OP_KIND = {"Conv": "conv", "ConvTranspose": "conv_transpose", "Gemm": "linear", "MatMul": "matmul",
            "LSTM": "lstm", "GRU": "gru", "RNN": "rnn"}  # fmt: skip
TOOL = "onnxruntime.quantization.qdq_loss_debug"


@dataclass(frozen=True, slots=True, kw_only=True)
class OnnxLayer:
    """One torch layer in an ONNX graph: its module path, other paths it answers to, and its compute nodes."""

    module: str
    aliases: tuple[str, ...]
    nodes: tuple[str, ...]
    op: str

    def matches(self, paths: Sequence[str]) -> bool:
        return any(covered(name, paths) for name in (self.module, *self.aliases))


def onnx_layers(model: Any) -> list[OnnxLayer]:
    """Return the compute layers of an ONNX model, in graph order, named by torch module path."""
    initializers = {t.name for t in model.graph.initializer}
    found: dict[str, tuple[set[str], list[str], str]] = {}
    for node in model.graph.node:
        if node.op_type not in COMPUTE_OPS:
            continue
        from_weight = _weight_module(node, initializers)
        from_scope = _scope_module(node)
        module = from_weight or from_scope or node.name
        aliases, nodes, op = found.setdefault(module, (set(), [], _OP_KIND[node.op_type]))
        aliases.update(p for p in (from_scope,) if p and p != module)
        nodes.append(node.name)
        if node.op_type == "MatMul" and from_weight:
            found[module] = (aliases, nodes, "linear")
    return [OnnxLayer(module=m, aliases=tuple(sorted(a)), nodes=tuple(n), op=op) for m, (a, n, op) in found.items()]


def _weight_module(node: Any, initializers: set[str]) -> str:
    weight = node.input[1] if len(node.input) > 1 else ""
    return weight.removesuffix(".weight") if weight in initializers and weight.endswith(".weight") else ""


def _scope_module(node: Any) -> str:
    """Return the innermost torch module scope of a node, from dynamo metadata or a TorchScript node name."""
    props = {p.key: p.value for p in node.metadata_props}
    if "pkg.torch.onnx.name_scopes" in props:
        try:
            scopes = ast.literal_eval(props["pkg.torch.onnx.name_scopes"])
        except (ValueError, SyntaxError):
            scopes = []
        return str(scopes[-2]) if len(scopes) >= 2 else ""
    parts = [p for p in node.name.split("/") if p][:-1]  # "/features/features.3/conv/conv.0/Conv"
    path: list[str] = []
    for previous, part in zip(["", *parts], parts, strict=False):
        path.append(part.removeprefix(f"{previous}.") if previous and part.startswith(f"{previous}.") else part)
    return ".".join(path)


@dataclass(frozen=True, slots=True, kw_only=True)
class PrecisionPlan:
    """What quantize_static is told: nodes left in float, tensors at 16 bits, and why."""

    exclude: tuple[str, ...]
    float_layers: tuple[dict[str, Any], ...]
    int16_tensors: tuple[str, ...]
    int16_layers: tuple[dict[str, Any], ...]


def precision_plan(
    model: Any, layers: Sequence[OnnxLayer], keep_float: Sequence[str], int16: Sequence[str]
) -> PrecisionPlan:
    """Plan `keep_float` and `int16_activations` (torch module paths) on an ONNX graph.

    ONNX Runtime QDQ quantizes a tensor when its producer or any reader is quantized, so a layer whose
    output must stay float also leaves in float the nodes that read it (up to the next compute layer).
    """
    graph = _Graph(model)
    layer_of = {node: layer for layer in layers for node in layer.nodes}
    exclude: dict[str, None] = {}
    float_layers = []
    for layer in (x for x in layers if x.matches(keep_float)):
        path, readers = graph.downstream(layer.nodes)
        exclude.update(dict.fromkeys((*layer.nodes, *path, *readers)))
        also = sorted({layer_of[r].module for r in readers if r in layer_of} - {layer.module})
        float_layers.append({"module": layer.module, "nodes": list(layer.nodes), "also_float": also})
    tensors: dict[str, None] = {}
    int16_layers = []
    for layer in (x for x in layers if x.matches(int16) and not x.matches(keep_float)):
        path, _ = graph.downstream(layer.nodes)
        inputs = [t for n in layer.nodes for t in graph.nodes[n].input if t and t not in graph.initializers]
        outputs = [t for n in (*layer.nodes, *path) for t in graph.nodes[n].output if t]
        tensors.update(dict.fromkeys((*inputs, *outputs)))
        int16_layers.append({"module": layer.module, "nodes": list(layer.nodes), "tensors": [*inputs, *outputs]})
    # A tensor a float layer produces stays float: its readers are excluded too.
    int16_tensors = tuple(t for t in tensors if not any(n in exclude for n in graph.producer_of(t)))
    return PrecisionPlan(exclude=tuple(exclude), float_layers=tuple(float_layers), int16_tensors=int16_tensors,
                         int16_layers=tuple(int16_layers))  # fmt: skip


class _Graph:
    def __init__(self, model: Any) -> None:
        self.nodes = {n.name: n for n in model.graph.node}
        self.initializers = {t.name for t in model.graph.initializer}
        self.readers: dict[str, list[Any]] = defaultdict(list)
        self.producers: dict[str, str] = {}
        for node in model.graph.node:
            for name in node.input:
                self.readers[name].append(node)
            for name in node.output:
                self.producers[name] = node.name

    def producer_of(self, tensor: str) -> list[str]:
        return [self.producers[tensor]] if tensor in self.producers else []

    def downstream(self, start: Iterable[str]) -> tuple[list[str], list[str]]:
        """Return (pass-through nodes after `start`, the first nodes after them that are not pass-through)."""
        path: dict[str, None] = {}
        readers: dict[str, None] = {}
        frontier = [t for n in start for t in self.nodes[n].output]
        while frontier:
            for reader in self.readers.get(frontier.pop(), []):
                if reader.op_type in _PASS_THROUGH and reader.name not in path:
                    path[reader.name] = None
                    frontier.extend(reader.output)
                elif reader.op_type not in _PASS_THROUGH:
                    readers[reader.name] = None
        return list(path), list(readers)


def layer_errors(float_path: Path, qdq_path: Path, samples: Arrays, workdir: Path) -> LayerReport:
    """Measure each quantized layer's own error with qdq_loss_debug, worst first.

    A layer's figure combines the quantization noise of its weights (create_weight_matching) and of its
    output activation (the QDQ model's tensor before vs after its QuantizeLinear/DequantizeLinear), as
    SQNR in dB. The activation SQNR is the median over output channels: one channel 10^4 times larger
    than the rest (what per-tensor int8 cannot hold) would otherwise hide that the others are zeroed.
    """
    import onnx
    from onnxruntime.quantization import qdq_loss_debug as debug

    workdir.mkdir(parents=True, exist_ok=True)
    float_debug, qdq_debug = workdir / "float-debug.onnx", workdir / "qdq-debug.onnx"
    debug.modify_model_output_intermediate_tensors(str(float_path), str(float_debug))
    debug.modify_model_output_intermediate_tensors(str(qdq_path), str(qdq_debug))
    from edgekit.backends._onnxruntime_quantize import feeds  # not at the top: that module imports this one

    inputs = feeds(samples)
    float_acts = debug.collect_activations(str(float_debug), inputs)
    qdq_acts = debug.collect_activations(str(qdq_debug), inputs)
    matched = debug.create_activation_matching(qdq_acts, float_acts)
    weights = debug.create_weight_matching(str(float_path), str(qdq_path))

    qdq_model = onnx.shape_inference.infer_shapes(onnx.load(str(qdq_path)))
    values = (*qdq_model.graph.value_info, *qdq_model.graph.output)
    shapes = {v.name: [d.dim_value or -1 for d in v.type.tensor_type.shape.dim] for v in values}
    float_model = onnx.load(str(float_path))
    layers = onnx_layers(float_model)
    graph = _Graph(qdq_model)
    activations = _removed_activations(float_model)
    for tensor, apply in activations.items():  # the QDQ model folded this Relu/Clip into its quantized range
        if tensor in matched:
            matched[tensor]["pre_qdq"] = [apply(a) for a in matched[tensor]["pre_qdq"]]
    report = []
    for layer in layers:
        noise = [_layer_noise(graph, graph.nodes[n], matched, weights, shapes) for n in layer.nodes if n in graph.nodes]
        measured = [x for x in noise if x is not None]
        if measured:
            sqnr = round(-10 * math.log10(max(max(measured), 1e-30)), 2) + 0.0  # + 0.0: no "-0.0"
            report.append(LayerError(module=layer.module, native=layer.nodes, op=layer.op, sqnr_db=sqnr))
    report.sort(key=lambda e: e.sqnr_db)
    notes = (
        f"{len(report)} of {len(layers)} compute layers quantized, measured on {len(inputs)} samples",
        "SQNR per layer: its int8 weights plus its output activation's quantization (median over channels)",
    )
    return LayerReport(tool=TOOL, layers=tuple(report), notes=notes)


def _removed_activations(model: Any) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Map each Relu/Clip output of the float model to the function, which ONNX Runtime QDQ drops when it can.

    With asymmetric activations the QDQ quantizer removes a Relu or Clip and lets the quantized range do
    its clipping, so the tensor before QuantizeLinear is the layer's output *before* the activation.
    """
    from onnx import numpy_helper

    constants = {t.name: float(numpy_helper.to_array(t).reshape(-1)[0]) for t in model.graph.initializer
                 if t.dims == [] or list(t.dims) == [1]}  # fmt: skip
    found: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    for node in model.graph.node:
        if node.op_type == "Relu":
            found[node.output[0]] = _clip(0.0, None)
        elif node.op_type == "Clip":
            low, high = (constants.get(name) if name else None for name in (*node.input[1:3], "", "")[:2])
            found[node.output[0]] = _clip(low, high)
    return found


def _clip(low: float | None, high: float | None) -> Callable[[np.ndarray], np.ndarray]:
    return lambda a: np.clip(a, low, high)


def _layer_noise(
    graph: _Graph, node: Any, matched: dict[str, Any], weights: dict[str, Any], shapes: dict[str, list[int]]
) -> float | None:
    """Return a compute node's relative noise power (weights + output activation), None when it is float."""
    from onnxruntime.quantization.quant_utils import DEQUANT_OUTPUT_SUFFIX, QUANT_INPUT_SUFFIX

    parts = []
    weight = node.input[1].removesuffix(DEQUANT_OUTPUT_SUFFIX) if len(node.input) > 1 else ""
    if weight in weights:
        parts.append(_noise(weights[weight]["float"], weights[weight]["dequantized"], axis=0))
    channel_axis = 1 if node.op_type in ("Conv", "ConvTranspose") else -1
    for tensor in _quantized_output(graph, node, matched, QUANT_INPUT_SUFFIX):
        pair, shape = matched[tensor], shapes.get(tensor, [])
        if shape.count(-1) > 1 or len(shape) < 2:
            shape, channel_axis = [1, -1], 0  # unknown layout (qdq_loss_debug flattens): the whole tensor
        pre = np.concatenate([a.reshape(shape) for a in pair["pre_qdq"]])
        post = np.concatenate([a.reshape(shape) for a in pair["post_qdq"]])
        parts.append(_noise(pre, post, axis=channel_axis))
    return sum(parts) if parts else None


def _quantized_output(graph: _Graph, node: Any, matched: dict[str, Any], suffix: str) -> list[str]:
    """Follow a node's output through pass-through ops to the first tensors that are quantized."""
    found, frontier = [], [t.removesuffix(suffix) for t in node.output]
    while frontier:
        tensor = frontier.pop()
        if tensor in matched:
            found.append(tensor)
            continue
        for reader in graph.readers.get(tensor, []):
            if reader.op_type in _PASS_THROUGH:
                frontier.extend(t.removesuffix(suffix) for t in reader.output)
    return found


def _noise(reference: np.ndarray, approx: np.ndarray, axis: int) -> float:
    """Median over channels along `axis` of ||x - y||^2 / ||x||^2 (channels that are zero in float skipped)."""
    if reference.ndim < 2:
        reference, approx = reference.reshape(1, -1), approx.reshape(1, -1)
        axis = 0
    x = np.moveaxis(reference.astype(np.float64), axis, 0).reshape(reference.shape[axis], -1)
    y = np.moveaxis(approx.astype(np.float64), axis, 0).reshape(reference.shape[axis], -1)
    signal = (x**2).sum(axis=1)
    error = ((x - y) ** 2).sum(axis=1)
    alive = signal > 0
    return float(np.median(error[alive] / signal[alive])) if alive.any() else 0.0
