"""ONNX Runtime quantization: calibrate, plan the float and 16-bit layers, write QDQ or dynamic int8.

`quantize_onnx` is what the backend calls. Static QDQ calibrates here (so that the entropy calibrator
gets enough histogram bins to clip at all), honours `quantize.keep_float` (nodes_to_exclude, for the
layer and the layers that read its output) and `quantize.int16_activations` (16-bit tensor overrides
made consistent by ONNX Runtime's mixed-precision fixer). `quantized_ops` counts what runs in int8
and what stayed float, with the float weight bytes. Heavy imports stay inside the functions.
"""

from __future__ import annotations

import contextlib
import io
import shutil
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.backends._layers import check_layer_paths
from edgekit.backends._onnxruntime_inspect import OnnxLayer, onnx_layers, precision_plan
from edgekit.backends.base import Arrays
from edgekit.errors import ConfigError, ExportError, first_line
from edgekit.recipe import QuantizeConfig, Scheme


def quantize_onnx(
    source: Path, out: Path, scheme: Scheme, config: QuantizeConfig, calibration: Arrays, workdir: Path
) -> dict[str, Any]:
    """Write `out`: a copy of `source` for fp32, else static QDQ or dynamic int8; return how it was done.

    Static QDQ honours `config.keep_float` (nodes_to_exclude) and `config.int16_activations` (16-bit
    tensor overrides, made consistent by ONNX Runtime's mixed-precision fixer); the module paths are
    checked against the graph's layers first.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    layers = onnx_layers(onnx.load(str(source)))
    known = [name for layer in layers for name in (layer.module, *layer.aliases)]
    check_layer_paths(config.keep_float, known, "quantize.keep_float")
    check_layer_paths(config.int16_activations, known, "quantize.int16_activations")
    if scheme is Scheme.FP32:
        shutil.copyfile(source, out)
        return {}
    prepared = workdir / "prepared.onnx"
    try:
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        if scheme is Scheme.INT8_STATIC:
            facts = quantize_static_qdq(prepared, out, config, calibration, layers, workdir)
        else:
            if config.int16_activations:
                raise ConfigError(
                    "quantize.int16_activations needs static QDQ quantization (dynamic int8 has no 16-bit mode)",
                    hint="use --set quantize.scheme=int8-static",
                )
            kept = [layer for layer in layers if layer.matches(config.keep_float)]
            quantize_dynamic(
                str(prepared), str(out), per_channel=config.per_channel, weight_type=QuantType.QInt8,
                nodes_to_exclude=[node for layer in kept for node in layer.nodes],
            )  # fmt: skip
            facts = {
                "format": "dynamic (MatMulInteger/ConvInteger)",
                "activations": "uint8 at run time",
                "weights": "int8",
                "per_channel": config.per_channel,
                "float_layers": [
                    {"module": k.module, "nodes": list(k.nodes), "why": "quantize.keep_float"} for k in kept
                ],
            }
    except (ExportError, ConfigError):
        raise
    except Exception as exc:
        raise ExportError(
            (f"ONNX Runtime quantization failed: {first_line(exc)}"),
            hint=("try --set quantize.scheme=int8-dynamic or fp32"),
        ) from exc
    _drop_shape_annotations(out)
    return facts


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


def _count(arrays: Arrays) -> int:
    return min((len(a) for a in arrays.values()), default=0)


# Compute ops counted as int8 or float, with the inputs that hold their weights (LSTM/GRU/RNN: W, R and B).
_WEIGHT_INPUTS = {"Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (1, 2), "MatMul": (1,)} | dict.fromkeys(
    ("LSTM", "GRU", "RNN"), (1, 2, 3)
)
_INTEGER_OPS = ("MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul", "DynamicQuantizeLSTM")


def quantized_ops(path: Path) -> dict[str, Any]:
    """Read an ONNX file and count which compute ops run in int8 and which stay float, with their weight bytes.

    An op is int8 when its weight comes through a DequantizeLinear of an int8 initializer (QDQ) or it is
    an integer op. A float op (an LSTM the quantizer skipped, a MatMul left alone) is counted with the
    bytes of the float initializers it reads, so a report can say how much of the model stayed float.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    int8 = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    initializers = {t.name: t for t in model.graph.initializer}
    int8_initializers = {name for name, t in initializers.items() if t.data_type in int8}
    dequantized = {
        n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in int8_initializers
    }

    def nbytes(name: str) -> int:
        return int(numpy_helper.to_array(initializers[name]).nbytes) if name in initializers else 0

    quantized: Counter[str] = Counter()
    floating: Counter[str] = Counter()
    float_bytes: Counter[str] = Counter()
    for node in model.graph.node:
        if node.op_type in _INTEGER_OPS:
            quantized[node.op_type] += 1
        elif node.op_type in _WEIGHT_INPUTS:
            weights = [node.input[i] for i in _WEIGHT_INPUTS[node.op_type] if i < len(node.input) and node.input[i]]
            if weights and weights[0] in dequantized:
                quantized[node.op_type] += 1
            else:
                floating[node.op_type] += 1
                float_bytes[node.op_type] += sum(nbytes(w) for w in weights)
    return {
        "quantized_ops": dict(quantized),
        "float_ops": dict(floating),
        "float_weight_bytes": {op: n for op, n in float_bytes.items() if n},
        "int8_weight_tensors": len(int8_initializers),
        "qdq_nodes": sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node),
    }


def _drop_shape_annotations(path: Path) -> None:
    """Remove the intermediate shape annotations quant_pre_process adds: runtimes infer them again."""
    import onnx

    model = onnx.load(str(path))
    del model.graph.value_info[:]
    onnx.save(model, str(path))
