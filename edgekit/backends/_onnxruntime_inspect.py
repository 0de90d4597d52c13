"""ONNX graphs seen as torch layers: naming, float/16-bit plans, calibration ranges and per-layer errors.

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
import contextlib
import io
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.backends._layers import covered
from edgekit.backends.base import Arrays, LayerError, LayerReport
from edgekit.errors import ExportError

if TYPE_CHECKING:
    from edgekit.recipe import QuantizeConfig

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


def quantize_static_qdq(
    prepared: Path, out: Path, config: QuantizeConfig, calibration: Arrays, layers: list[OnnxLayer], workdir: Path
) -> dict[str, Any]:
    """Calibrate, plan float/16-bit layers and run quantize_static (QDQ); return the facts."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.execution_providers.qnn.mixed_precision_overrides_utils import (
        MixedPrecisionTensorQuantOverridesFixer,
    )
    from onnxruntime.quantization.tensor_quant_overrides import TensorQuantOverridesHelper

    samples = min((len(a) for a in calibration.values()), default=0)
    if samples == 0:
        raise ExportError("int8-static needs calibration samples and there are none", hint="give --data")
    method = config.calibration_method.value
    cache, moved, ranges = calibrate(prepared, method, feeds(calibration), workdir)
    model = onnx.load(str(prepared))
    plan = precision_plan(model, layers, config.keep_float, config.int16_activations)
    options: dict[str, Any] = {"ActivationSymmetric": False, "WeightSymmetric": True}
    if plan.int16_tensors:
        overrides = TensorQuantOverridesHelper({t: [{"quant_type": QuantType.QUInt16}] for t in plan.int16_tensors})
        fixer = MixedPrecisionTensorQuantOverridesFixer.create_from_model(overrides, model, QuantType.QUInt8)
        fixer.apply(QuantType.QUInt8, default_activation_symmetric=False)
        options["TensorQuantOverrides"] = overrides.get_dict()
    enum_method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                   "percentile": CalibrationMethod.Percentile}[method]  # fmt: skip
    quantize_static(
        str(prepared), str(out), None, quant_format=QuantFormat.QDQ, per_channel=config.per_channel,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=list(plan.exclude),
        calibrate_method=enum_method, extra_options=options, calibration_cache_path=str(cache),
    )  # fmt: skip
    warnings_found = []
    if method != "minmax" and moved == 0:
        warnings_found.append(
            f"calibration_method {method} gave every activation its min-max range: the artifact equals min-max's"
        )
    return {
        "format": "QDQ",
        "activations": "uint8 (calibrated)" + (", 16-bit where listed in int16_layers" if plan.int16_layers else ""),
        "weights": "int8 symmetric",
        "per_channel": config.per_channel,
        "calibration_method": method,
        "calibration_samples": samples,
        "calibration_ranges_moved_from_minmax": None if method == "minmax" else f"{moved} of {ranges}",
        "float_layers": [
            {**layer, "why": "quantize.keep_float" + (f"; {', '.join(layer['also_float'])} read its float output"
                                                      if layer["also_float"] else "")}
            for layer in plan.float_layers
        ],
        "int16_layers": [{**layer, "why": "quantize.int16_activations"} for layer in plan.int16_layers],
        "nodes_excluded": list(plan.exclude),
        "warnings": warnings_found,
    }  # fmt: skip


def calibrate(
    model_path: Path, method: str, samples: Iterable[dict[str, np.ndarray]], workdir: Path
) -> tuple[Path, int, int]:
    """Compute activation ranges with ONNX Runtime's calibrator; return (cache file, ranges moved, ranges).

    `quantize_static` forwards no histogram size to its entropy calibrator, whose defaults (128 bins
    and 128 quantized bins) leave one candidate threshold: the full range, i.e. min-max. Calibrating
    here with 2048 bins (the percentile calibrator's default, and TensorRT's) lets entropy clip;
    the ranges go to `quantize_static` through its calibration cache. "Moved" counts the tensors whose
    effective range differs from the observed min-max.
    """
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    enum_method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                   "percentile": CalibrationMethod.Percentile}[method]  # fmt: skip
    options = {"num_bins": 2048, "num_quantized_bins": 128} if method == "entropy" else {}
    calibrator = create_calibrator(
        model_path, sorted(set(QDQRegistry) | set(QLinearOpsRegistry)),
        augmented_model_path=str(workdir / f"calibration-{method}.onnx"), calibrate_method=enum_method,
        extra_options=options,
    )  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print progress to stdout
        calibrator.collect_data(_Reader(samples))
        ranges = calibrator.compute_data()
    cache = workdir / f"calibration-{method}.json"
    save_tensors_data(ranges, cache)
    observed = getattr(getattr(calibrator, "collector", None), "histogram_dict", None) or {}
    moved = sum(_moved(ranges[name].range_value, seen[2], seen[3]) for name, seen in observed.items() if name in ranges)
    return cache, moved, len(ranges.data)


def _moved(calibrated: tuple[Any, Any], low: Any, high: Any) -> bool:
    """Whether a uint8 range differs from min-max: quantization uses [min(lo, 0), max(hi, 0)]."""
    lo, hi = min(float(calibrated[0]), 0.0), max(float(calibrated[1]), 0.0)
    seen_lo, seen_hi = min(float(low), 0.0), max(float(high), 0.0)
    tolerance = 1e-6 * max(seen_hi - seen_lo, 1e-12)
    return abs(lo - seen_lo) > tolerance or abs(hi - seen_hi) > tolerance


class _Reader:
    """A CalibrationDataReader over an iterable of feeds."""

    def __init__(self, feeds: Iterable[dict[str, np.ndarray]]) -> None:
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def feeds(arrays: Arrays) -> list[dict[str, np.ndarray]]:
    """Split named arrays into batch-1 feeds (edgekit exports batch-1 graphs)."""
    count = min((len(a) for a in arrays.values()), default=0)
    return [{name: np.ascontiguousarray(a[i : i + 1]) for name, a in arrays.items()} for i in range(count)]


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
