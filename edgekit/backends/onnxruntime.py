"""The ONNX Runtime backend (targets rpi, rpi4): export to ONNX first, then int8 in ONNX Runtime.

Flow: `torch.onnx.export(dynamo=True)` -> float `.onnx` -> `quant_pre_process` -> `quantize_static`
(QDQ, per-channel int8 weights, uint8 activations, calibrated) for convolutional models, or
`quantize_dynamic` (per-channel int8 weights) for Linear/attention models -> verified in
`onnxruntime.InferenceSession`, the runtime the device runs.

Heavy imports live inside the methods so `import edgekit` stays free of torch and onnxruntime.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import warnings
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.architecture import choose_int8_scheme
from edgekit.backends import Runner, installed_versions
from edgekit.errors import ConfigError, ExportError, MissingDependencyError, did_you_mean, first_line
from edgekit.recipe import Scheme

if TYPE_CHECKING:
    from edgekit.pipeline import BuildContext, BuildState

OPTIONS: dict[str, str] = {
    "opset": "ONNX opset the artifact is exported with; the app's onnxruntime must support it",
    "threads": "intra-op threads the app should use (the host check uses at most this many)",
}
INPUT, OUTPUT = "input", "output"
REFERENCE_NAME = Path("reference") / "model-fp32.onnx"
COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_HINT = "pip install 'edgekit-deploy[rpi]'"


class OnnxRuntimeBackend:
    """Export a PyTorch model to ONNX and quantize it with ONNX Runtime's own tools."""

    name = "onnxruntime"
    artifact_name = "model.onnx"
    stage_order = ("export", "quantize")
    extra = "rpi"

    def check_installed(self) -> None:
        """Raise MissingDependencyError when onnx, onnxruntime or onnxscript is absent."""
        for module in ("torch", "onnx", "onnxruntime", "onnxscript"):
            if importlib.util.find_spec(module) is None:
                raise MissingDependencyError(
                    f"the ONNX Runtime targets need '{module}', which is not installed", hint=_HINT
                )

    def check_options(self, options: dict[str, Any]) -> None:
        """Raise ConfigError for an unknown key or a bad value in the target's [options]."""
        for key, value in options.items():
            if key not in OPTIONS:
                raise ConfigError(
                    f"unknown option '{key}' for backend onnxruntime",
                    hint=did_you_mean(key, list(OPTIONS)) or f"known options: {', '.join(OPTIONS)}",
                )
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"option '{key}' must be a positive integer, got {value!r}", hint=OPTIONS[key])
        if options.get("opset", 18) < 17:
            raise ConfigError("option 'opset' must be 17 or newer for per-channel QDQ with the dynamo exporter")

    def versions(self) -> dict[str, str]:
        return installed_versions("torch", "onnx", "onnxruntime", "onnxscript")

    def export(self, state: BuildState, ctx: BuildContext) -> BuildState:
        """Export state.model to a float ONNX file: the reference, and the input to quantization."""
        import torch

        path = ctx.workdir / REFERENCE_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        opset = ctx.target.options.get("opset", 18)
        example = (torch.from_numpy(state.example_input),)
        # torch.export cannot trace a TorchScript module; the TorchScript exporter still can.
        dynamo = not isinstance(state.model, torch.jit.ScriptModule)
        try:
            with warnings.catch_warnings():
                # An exported GraphModule reports training=True although it was traced in eval mode.
                warnings.filterwarnings("ignore", message="Exporting a model while it is in training mode")
                warnings.filterwarnings("ignore", message="no signature found for")
                torch.onnx.export(
                    state.model, example, str(path), dynamo=dynamo, opset_version=opset, verbose=False,
                    input_names=[INPUT], output_names=[OUTPUT], external_data=False, optimize=True,
                )  # fmt: skip
        except Exception as exc:
            raise ExportError(
                f"torch.onnx.export failed: {first_line(exc)}",
                hint="run with --traceback; an unsupported op is named above",
            ) from exc
        exporter = f"torch.onnx.export(dynamo={dynamo})"
        return state.evolve(reference_artifact=path).with_facts(
            "export", {"exporter": exporter, "opset": opset, "float_bytes": path.stat().st_size}
        )

    def quantize(self, state: BuildState, ctx: BuildContext) -> BuildState:
        """Quantize the float ONNX file per the recipe into ctx.workdir/model.onnx."""
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_dynamic,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process

        assert state.reference_artifact is not None and state.data is not None  # noqa: S101 - export ran
        cfg = ctx.recipe.quantize
        scheme, why = cfg.scheme, "asked for by the recipe"
        if scheme is Scheme.AUTO:
            scheme, why = choose_int8_scheme(state.model, state.example_input)
            ctx.reporter.info(f"scheme auto -> {scheme.value}: {why}")
        out = ctx.workdir / self.artifact_name
        facts: dict[str, Any] = {
            "requested": cfg.scheme.value,
            "scheme": scheme.value,
            "chosen_because": why,
            "tool": "onnxruntime.quantization",
        }
        if scheme is Scheme.FP32:
            shutil.copyfile(state.reference_artifact, out)
            return state.evolve(artifact=out).with_facts("quantize", {**facts, **quantized_ops(out)})
        prepared = ctx.workdir / "prepared.onnx"
        try:
            quant_pre_process(str(state.reference_artifact), str(prepared), skip_symbolic_shape=True)
            if scheme is Scheme.INT8_STATIC:
                method = {
                    "minmax": CalibrationMethod.MinMax,
                    "entropy": CalibrationMethod.Entropy,
                    "percentile": CalibrationMethod.Percentile,
                }[cfg.calibration_method.value]
                quantize_static(
                    str(prepared), str(out), _Calibration(state.data.calibration), quant_format=QuantFormat.QDQ,
                    per_channel=cfg.per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=method, extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
                )  # fmt: skip
                facts |= {"format": "QDQ", "activations": "uint8 (calibrated)", "weights": "int8 symmetric", "per_channel": cfg.per_channel,
                          "calibration_method": cfg.calibration_method.value, "calibration_samples": len(state.data.calibration)}  # fmt: skip
            else:
                quantize_dynamic(str(prepared), str(out), per_channel=cfg.per_channel, weight_type=QuantType.QInt8)
                facts |= {
                    "format": "dynamic (MatMulInteger/ConvInteger)",
                    "activations": "uint8 at run time",
                    "weights": "int8",
                    "per_channel": cfg.per_channel,
                }
        except Exception as exc:
            raise ExportError(
                f"ONNX Runtime quantization failed: {first_line(exc)}",
                hint="try --set quantize.scheme=int8-dynamic or fp32",
            ) from exc
        _drop_shape_annotations(out)
        ops = quantized_ops(out)
        state = state.evolve(artifact=out).with_facts("quantize", {**facts, **ops})
        if not ops["quantized_ops"]:
            state = state.with_warning(
                "int8 quantization ran but quantized no Conv/MatMul/Gemm op: the artifact is effectively float"
            )
        return state

    def runner(self, state: BuildState, ctx: BuildContext) -> Runner:
        assert state.artifact is not None  # noqa: S101 - quantize ran
        return Runner(run=self._session_runner(state.artifact, ctx), mode="runtime")

    def reference_runner(self, state: BuildState, ctx: BuildContext) -> Runner | None:
        if state.reference_artifact is None:
            return None
        return Runner(run=self._session_runner(state.reference_artifact, ctx), mode="runtime")

    def runtime_contract(self, state: BuildState, ctx: BuildContext) -> dict[str, Any]:
        from importlib.metadata import version

        return {
            "runtime": "onnxruntime",
            "version": version("onnxruntime"),
            "minimum_version": "1.17",  # per-channel QDQ with opset >= 17
            "opset": ctx.target.options.get("opset", 18),
            "execution_provider": "CPUExecutionProvider",
            "threads": ctx.target.options.get("threads", 4),
            "input_name": INPUT,
            "output_name": OUTPUT,
        }

    def _session_runner(self, path: Path, ctx: BuildContext):  # type: ignore[no-untyped-def]
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = min(ctx.target.options.get("threads", 4), os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ExportError(f"onnxruntime cannot load {path.name}: {first_line(exc)}") from exc
        name = session.get_inputs()[0].name
        return lambda batch: session.run(None, {name: batch})[0]


class _Calibration:
    """ONNX Runtime's CalibrationDataReader over the calibration split, one sample at a time."""

    def __init__(self, inputs: np.ndarray) -> None:
        self._samples = iter([{INPUT: inputs[i : i + 1]} for i in range(len(inputs))])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._samples, None)


def quantized_ops(path: Path) -> dict[str, Any]:
    """Read an ONNX file and count which compute ops run in int8 and which stay float."""
    import onnx

    model = onnx.load(str(path))
    int8_initializers = {
        t.name for t in model.graph.initializer if t.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    }
    dequantized = {
        n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in int8_initializers
    }
    quantized: Counter[str] = Counter()
    floating: Counter[str] = Counter()
    for node in model.graph.node:
        if node.op_type in ("MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul"):
            quantized[node.op_type] += 1
        elif node.op_type in COMPUTE_OPS:
            weight_is_int8 = len(node.input) > 1 and node.input[1] in dequantized
            (quantized if weight_is_int8 else floating)[node.op_type] += 1
    return {
        "quantized_ops": dict(quantized),
        "float_ops": dict(floating),
        "int8_weight_tensors": len(int8_initializers),
        "qdq_nodes": sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node),
    }


def _drop_shape_annotations(path: Path) -> None:
    """Remove the intermediate shape annotations quant_pre_process adds: runtimes infer them again."""
    import onnx

    model = onnx.load(str(path))
    del model.graph.value_info[:]
    onnx.save(model, str(path))
