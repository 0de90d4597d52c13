"""The ONNX Runtime backend (targets rpi, rpi4): export to ONNX first, then int8 in ONNX Runtime.

Flow: `torch.onnx.export(dynamo=True)` -> float `.onnx` (the float reference) -> `quant_pre_process`
-> `quantize_static` (QDQ, per-channel int8 weights, uint8 activations, calibrated) for convolutional
models, or `quantize_dynamic` (per-channel int8 weights) for Linear/attention models. `open()` runs
an artifact in `onnxruntime.InferenceSession`, the runtime the device runs.

Heavy imports live inside the methods so `import edgekit` stays free of torch and onnxruntime.
"""

from __future__ import annotations

import enum
import os
import shutil
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgekit.architecture import choose_int8_scheme
from edgekit.backends._onnxruntime_quantize import quantize_onnx, quantized_ops
from edgekit.backends.base import (
    Arrays,
    Compiled,
    IoContract,
    LayerReport,
    Problem,
    Runner,
    export_dynamic_shapes,
    installed_versions,
    missing_modules,
    require_scheme,
    weights_fingerprint,
)
from edgekit.errors import ExportError, first_line
from edgekit.recipe import QuantizeConfig, Recipe, Scheme, ranged

REFERENCE_NAME = Path("reference") / "model-fp32.onnx"
COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
MINIMUM_ORT = "1.17"  # per-channel QDQ with opset >= 17
CALIBRATORS = ("minmax", "entropy", "percentile")  # onnxruntime.quantization.CalibrationMethod, by recipe name
MINIMUM_ORT_OPSET_21 = "1.18"  # 16-bit QuantizeLinear/DequantizeLinear need opset 21


class ExecutionProvider(enum.StrEnum):
    CPU = "CPUExecutionProvider"  # another provider (XNNPACK, ACL) is one more value and a target file


@dataclass(frozen=True, slots=True, kw_only=True)
class OnnxRuntimeOptions:
    """The `[options]` of an ONNX Runtime target. Every default lives here.

    Attributes:
        opset: ONNX opset of the artifact (17+ for per-channel QDQ); the app's onnxruntime must support it.
        threads: intra-op threads the app should use; the host check uses at most this many.
        execution_provider: the provider the artifact is built and checked for.
    """

    opset: int = ranged(18, ge=17)
    threads: int = ranged(4, ge=1)
    execution_provider: ExecutionProvider = ExecutionProvider.CPU


class OnnxRuntimeBackend:
    """Export a PyTorch model to ONNX and quantize it with ONNX Runtime's own tools."""

    name: ClassVar[str] = "onnxruntime"
    artifact_name: ClassVar[str] = "model.onnx"
    extra: ClassVar[str] = "rpi"
    schemes: ClassVar[tuple[Scheme, ...]] = (Scheme.AUTO, Scheme.INT8_STATIC, Scheme.INT8_DYNAMIC, Scheme.FP32)
    stores_sparse_weights: ClassVar[bool] = False
    Options: ClassVar[type] = OnnxRuntimeOptions
    keeps_float: ClassVar[bool] = True  # quantize_static's nodes_to_exclude
    sixteen_bit_activations: ClassVar[bool] = True  # QDQ 16-bit tensor overrides (mixed precision)

    def __init__(self) -> None:
        self._exported: tuple[Any, Any, Path, dict[str, Any]] | None = None  # model, key, file, facts: last export

    def versions(self) -> dict[str, str]:
        return installed_versions("torch", "onnx", "onnxruntime", "onnxscript")

    def check(self, recipe: Recipe, options: OnnxRuntimeOptions) -> list[Problem]:
        """Refuse calibration methods ONNX Runtime has no calibrator for; report missing packages."""
        problems = missing_modules(
            ("torch", "onnx", "onnxruntime", "onnxscript"), self.extra, "the ONNX Runtime targets"
        )
        method = recipe.quantize.calibration_method.value
        if method not in CALIBRATORS:
            problems.append(
                Problem(
                    key="quantize.calibration_method",
                    message=f"ONNX Runtime has no '{method}' calibrator",
                    hint=f"use one of: {', '.join(CALIBRATORS)}",
                )
            )
        return problems

    def compile(
        self,
        model: Any,
        io: IoContract,
        example_inputs: Arrays,
        calibration: Arrays,
        quantize: QuantizeConfig,
        options: OnnxRuntimeOptions,
        workdir: Path,
        *,
        sparse_weights: bool = False,
        metadata: Mapping[str, Any] | None = None,
    ) -> Compiled:
        """Export `model` to a float ONNX file, then quantize it into `workdir/model.onnx`."""
        require_scheme(quantize.scheme, self.schemes, self.name)
        reference = workdir / REFERENCE_NAME
        export_facts = self._export(model, io, example_inputs, options.opset, reference)
        scheme, why = quantize.scheme, "asked for by the recipe"
        if scheme is Scheme.AUTO:
            integers = [a for a in example_inputs.values() if np.issubdtype(a.dtype, np.integer)]
            scheme, why = choose_int8_scheme(model, integers[0] if integers else example_inputs[io.inputs[0].name])
        artifact = workdir / self.artifact_name
        facts: dict[str, Any] = {
            "requested": quantize.scheme.value,
            "scheme": scheme.value,
            "chosen_because": why,
            "tool": "onnxruntime.quantization",
        }
        facts |= quantize_onnx(reference, artifact, scheme, quantize, calibration, workdir)
        ops = quantized_ops(artifact)
        warnings_found: list[str] = list(facts.pop("warnings", []))
        if scheme is not Scheme.FP32 and not ops["quantized_ops"]:
            warnings_found.append(
                "int8 quantization ran but quantized no Conv/MatMul/Gemm op: the artifact is effectively float",
            )
        opset = _opset(artifact)
        if opset != options.opset:
            warnings_found.append(
                f"16-bit activations need opset 21: the artifact's opset is {opset}, not {options.opset}"
            )
        runtime = {
            "runtime": "onnxruntime",
            "version": self.versions()["onnxruntime"],
            "minimum_version": MINIMUM_ORT if opset < 21 else MINIMUM_ORT_OPSET_21,
            "opset": opset,
            "execution_provider": options.execution_provider.value,
            "threads": options.threads,
        }
        return Compiled(
            artifact=artifact,
            float_reference=reference,
            scheme=scheme,
            facts={"export": export_facts, "quantize": {**facts, **ops}},
            runtime=runtime,
            warnings=tuple(warnings_found),
        )

    def _export(self, model: Any, io: IoContract, examples: Arrays, opset: int, path: Path) -> dict[str, Any]:
        """Export the float ONNX file, or copy the one exported for this same model, io and opset (repair steps)."""
        key = (io, opset, tuple((n, a.shape, a.dtype.str) for n, a in examples.items()), weights_fingerprint(model))
        cached = self._exported
        if cached is not None and cached[0] is model and cached[1] == key and cached[2].is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(cached[2], path)
            return dict(cached[3])
        facts = export_onnx(model, io, examples, opset, path)
        self._exported = (model, key, path, facts)
        return facts

    def layer_errors(
        self,
        compiled: Compiled,
        model: Any,
        io: IoContract,
        calibration: Arrays,
        samples: Arrays,
        quantize: QuantizeConfig,
        options: OnnxRuntimeOptions,
        workdir: Path,
    ) -> LayerReport:
        """Measure each quantized layer's own SQNR with ONNX Runtime's qdq_loss_debug, worst first."""
        from edgekit.backends import _onnxruntime_inspect as inspect

        if compiled.float_reference is None or compiled.scheme is not Scheme.INT8_STATIC:
            why = f"per-layer errors need a static QDQ artifact and its float reference ({compiled.scheme.value})"
            return LayerReport(tool=inspect.TOOL, layers=(), notes=(why,))
        feeds = {name: samples[name] for name in io.input_names if name in samples}
        return inspect.layer_errors(compiled.float_reference, compiled.artifact, feeds, workdir)

    def open(self, artifact: Path, io: IoContract, options: OnnxRuntimeOptions) -> Runner:
        """Return a runner over an InferenceSession on the CPU execution provider."""
        import onnxruntime as ort

        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = min(options.threads, os.cpu_count() or 1)
        session_options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(str(artifact), session_options, providers=[options.execution_provider.value])
        except Exception as exc:
            raise ExportError(f"onnxruntime cannot load {artifact.name}: {first_line(exc)}") from exc
        names = [o.name for o in session.get_outputs()]
        batch_one = any(i.shape and i.shape[0] == 1 for i in session.get_inputs())

        def run_once(feeds: Arrays) -> list[np.ndarray]:
            return list(session.run(names, dict(feeds)))

        def run(feeds: Arrays) -> dict[str, np.ndarray]:
            count = min(len(a) for a in feeds.values())
            if not batch_one or count == 1:
                return dict(zip(names, run_once(feeds), strict=True))
            # A batch-1 artifact (what edgekit exports) runs a larger batch one sample at a time.
            results = [run_once({k: v[i : i + 1] for k, v in feeds.items()}) for i in range(count)]
            return {name: np.concatenate([r[j] for r in results]) for j, name in enumerate(names)}

        return Runner(run=run, mode="runtime", checked_with=f"onnxruntime {ort.__version__}")


def export_onnx(model: Any, io: IoContract, example_inputs: Arrays, opset: int, path: Path) -> dict[str, Any]:
    """Export `model` to a float ONNX file with the contract's input and output names."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    example = tuple(torch.from_numpy(np.ascontiguousarray(example_inputs[name])) for name in io.input_names)
    # torch.export cannot trace a TorchScript module (or a wrapper around one); the TorchScript exporter can.
    dynamo = not any(isinstance(m, torch.jit.ScriptModule) for m in (model, *model.children()))
    try:
        with warnings.catch_warnings():
            # An exported GraphModule reports training=True although it was traced in eval mode.
            warnings.filterwarnings("ignore", message="Exporting a model while it is in training mode")
            warnings.filterwarnings("ignore", message="no signature found for")
            # One input and one output take their names at export; several are renamed afterwards, because
            # the exporter can give an output the name an inner value already has ("embedding").
            single = _single(io)
            dynamic = {"dynamic_shapes": export_dynamic_shapes(io)} if dynamo else {"dynamic_axes": _dynamic_axes(io)}
            torch.onnx.export(
                model, example, str(path), dynamo=dynamo, opset_version=opset, verbose=False,
                external_data=False, optimize=True, input_names=io.input_names if single or not dynamo else None,
                output_names=io.output_names if single or not dynamo else None, **dynamic,
            )  # fmt: skip
    except Exception as exc:
        op = unsupported_op(str(exc))
        if op:
            raise ExportError(
                f"torch.onnx.export has no ONNX conversion for {op} (opset {opset})",
                hint=f"replace {op} in the model with supported ops, or try another target; --traceback shows the node",
            ) from exc
        raise ExportError(f"torch.onnx.export failed: {first_line(exc)}", hint="run with --traceback") from exc
    if not _single(io) and dynamo:
        name_graph_io(path, io)
    return {"exporter": f"torch.onnx.export(dynamo={dynamo})", "opset": opset, "float_bytes": path.stat().st_size}


def unsupported_op(message: str) -> str | None:
    """Return the ATen op the ONNX exporter names as having no conversion ("aten._linalg_svd"), if it names one."""
    import re

    found = re.search(r"No ONNX function found for <OpOverload\(op='([^']+)'", message)
    return found.group(1) if found else None


def _dynamic_axes(io: IoContract) -> dict[str, dict[int, str]] | None:
    axes = {t.name: {d.axis: f"{t.name}_{d.axis}" for d in t.dynamic} for t in io.inputs if t.dynamic}
    return axes or None


def _single(io: IoContract) -> bool:
    return len(io.inputs) == 1 and len(io.outputs) == 1


def name_graph_io(path: Path, io: IoContract) -> None:
    """Give the graph's inputs and outputs the contract's names, renaming any inner value that holds one."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    wanted = dict(zip([i.name for i in graph.input], io.input_names, strict=True))
    wanted |= dict(zip([o.name for o in graph.output], io.output_names, strict=True))
    taken = {name for node in graph.node for name in (*node.input, *node.output)} | {t.name for t in graph.initializer}
    clashes = {name: f"{name}__inner" for name in set(wanted.values()) & taken if name not in wanted}
    mapping = {**clashes, **wanted}

    def rename(name: str) -> str:
        return mapping.get(name, name)

    for node in graph.node:
        node.input[:] = [rename(n) for n in node.input]
        node.output[:] = [rename(n) for n in node.output]
    for value in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
        value.name = rename(value.name)
    onnx.save(model, str(path))


def _opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
