"""The ExecuTorch backend (target android): PT2E int8 before lowering, XNNPACK delegate, `.pte` artifact.

Flow: torch.export -> PT2E quantization (XNNPACKQuantizer) or torchao dynamic int8 -> torch.export
-> `to_edge_transform_and_lower(partitioner=[XnnpackPartitioner()])` -> `.to_executorch()` -> `.pte`.
`open()` runs a program in `executorch.runtime`, the same C++ runtime an Android app links.

Heavy imports live inside the methods so `import edgekit` stays free of torch and executorch.
"""

from __future__ import annotations

import dataclasses
import enum
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

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
from edgekit.errors import InputError
from edgekit.recipe import CalibrationMethod, QuantizeConfig, Recipe, Scheme, ranged

REFERENCE_NAME = Path("reference") / "model-fp32.pte"
_KEPT_GRAPHS = 3  # quantized graphs kept for layer_errors
_STATIC_METHODS = (CalibrationMethod.MINMAX, CalibrationMethod.HISTOGRAM)  # activation observers XNNPACK builds with


class Abi(enum.StrEnum):
    ARM64_V8A = "arm64-v8a"
    ARMEABI_V7A = "armeabi-v7a"
    X86_64 = "x86_64"
    X86 = "x86"


class Delegate(enum.StrEnum):
    XNNPACK = "xnnpack"  # the one delegate lowered today; another one is a new value and a partitioner


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecuTorchOptions:
    """The `[options]` of an ExecuTorch target. Every default lives here.

    Attributes:
        delegate: the backend delegate the program is lowered to.
        abi: the Android ABI the app ships, written into the runtime contract.
        threads: XNNPACK threads the app should use; 0 lets the runtime decide.
        min_sdk: minimum Android API level of the app (ExecuTorch's AAR needs 21).
    """

    delegate: Delegate = Delegate.XNNPACK
    abi: Abi = Abi.ARM64_V8A
    threads: int = ranged(4, ge=0)
    min_sdk: int = ranged(21, ge=21)


@dataclass(slots=True)
class _FloatReference:
    """The float program lowered once per model: repair steps that change only quantization reuse it."""

    model: Any
    key: tuple[Any, ...]
    program: Any
    pte: Path
    facts: dict[str, Any]


@dataclass(slots=True)
class _Graphs:
    """The last static int8 graphs, for `layer_errors` on the artifact they produced."""

    artifact: Path
    quantize: QuantizeConfig  # with scheme int8-static
    converted: Any
    twin: Any


class ExecuTorchBackend:
    """Quantize and lower a PyTorch model to an XNNPACK-delegated ExecuTorch program.

    Keeps layers in float (`quantize.keep_float`, via the XNNPACKQuantizer's node filter; they run in
    XNNPACK fp32) and measures each layer's quantization error (`layer_errors`). XNNPACK's quantizer
    has no 16-bit activation config, so `quantize.int16_activations` is refused.
    """

    name: ClassVar[str] = "executorch"
    artifact_name: ClassVar[str] = "model.pte"
    extra: ClassVar[str] = "android"
    schemes: ClassVar[tuple[Scheme, ...]] = (Scheme.AUTO, Scheme.INT8_STATIC, Scheme.INT8_DYNAMIC, Scheme.FP32)
    stores_sparse_weights: ClassVar[bool] = False
    Options: ClassVar[type] = ExecuTorchOptions
    keeps_float: ClassVar[bool] = True
    sixteen_bit_activations: ClassVar[bool] = False

    def __init__(self) -> None:
        self._reference: _FloatReference | None = None
        self._graphs: list[_Graphs] = []  # the last few static builds (a repair step, the build it started from)

    def versions(self) -> dict[str, str]:
        """Return the versions of torch, executorch and torchao."""
        return installed_versions("torch", "executorch", "torchao")

    def check(self, recipe: Recipe, options: ExecuTorchOptions) -> list[Problem]:
        """XNNPACKQuantizer calibrates with min-max or histogram observers; no 16-bit activations."""
        # Top-level packages only: find_spec("executorch.runtime") would import executorch itself.
        problems = missing_modules(("torch", "executorch", "torchao"), self.extra, "target android")
        method, scheme = recipe.quantize.calibration_method, recipe.quantize.scheme
        if scheme in (Scheme.AUTO, Scheme.INT8_STATIC) and method not in _STATIC_METHODS:
            problems.append(
                Problem(
                    key="quantize.calibration_method",
                    message=f"quantize.calibration_method '{method.value}' is not offered by ExecuTorch's "
                    "XNNPACKQuantizer",
                    hint='use quantize.calibration_method = "minmax" or "histogram" for ExecuTorch targets',
                )
            )
        if recipe.quantize.int16_activations:
            problems.append(
                Problem(
                    key="quantize.int16_activations",
                    message="XNNPACK has no 16-bit activation quantization: quantize.int16_activations cannot be "
                    "honoured on target android",
                    hint="use quantize.keep_float for those layers (they then run in XNNPACK fp32)",
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
        options: ExecuTorchOptions,
        workdir: Path,
        *,
        sparse_weights: bool = False,
        metadata: Mapping[str, Any] | None = None,
    ) -> Compiled:
        """Lower the float program (the reference, once per model), quantize, then lower the artifact."""
        from edgekit.backends import _executorch_quantize as q
        from edgekit.backends._executorch_lower import export_program, lower_to_pte
        from edgekit.backends._layers import check_layer_paths
        from edgekit.rewrites import applied_rewrites

        require_scheme(quantize.scheme, self.schemes, self.name)
        examples = tuple(example_inputs[name] for name in io.input_names)
        dynamic = export_dynamic_shapes(io)
        float_program, reference, reference_facts = self._float_reference(model, io, examples, workdir)
        if quantize.keep_float:
            check_layer_paths(quantize.keep_float, q.compute_layers(float_program.graph_module), "quantize.keep_float")
        census = q.op_census(float_program.graph_module)
        requested = quantize.scheme
        scheme, because = (
            (requested, "set by the recipe") if requested is not Scheme.AUTO else q.choose_scheme(census, examples)
        )
        facts: dict[str, Any] = {"requested": requested.value, "scheme": scheme.value, "chosen_because": because}
        artifact = workdir / self.artifact_name
        warnings: list[str] = []
        if scheme is Scheme.FP32:
            shutil.copyfile(reference, artifact)
            export_facts = {**reference_facts, "same_as_reference": True}
            facts |= {"path": "none", "quantized_count": 0}
        else:
            if scheme is Scheme.INT8_STATIC:
                samples = tuple(calibration[name] for name in io.input_names)
                quantized, twin, how = q.static_int8(model, examples, samples, quantize, dynamic)
                self._graphs = [
                    *self._graphs[-(_KEPT_GRAPHS - 1) :],
                    _Graphs(artifact, _static(quantize), quantized, twin),
                ]
                graph = quantized
            else:
                quantized, graph, how = q.dynamic_int8(model, examples, quantize, dynamic)
            facts |= how | q.quantize_facts(q.op_census(graph), graph)
            if quantize.keep_float:
                facts["keep_float"] = list(quantize.keep_float)  # requested; "float_layers" is what stayed float
            export_facts = lower_to_pte(export_program(quantized, examples, dynamic), artifact)
            if facts["quantized_count"] == 0:
                left = _fmt(facts["float_ops"]) if facts["float_ops"] else "the model has no conv, linear or matmul"
                warnings.append(
                    f"{scheme.value} quantization ran but quantized no compute op ({left}): the artifact is "
                    "effectively fp32"
                )
        export_facts |= {"reference": {"path": str(REFERENCE_NAME), "bytes": reference_facts["pte_bytes"]}}
        export_facts["rewrites"] = applied_rewrites(float_program)  # edgekit.rewrites that ran, in order
        if export_facts["delegated_nodes"] == 0:
            warnings.append("XNNPACK delegated nothing: the whole model runs on portable CPU kernels")
        runtime = {
            "runtime": "executorch",
            "version": self.versions()["executorch"],
            "delegate": "XnnpackBackend",  # the delegate id inside the .pte
            "abi": options.abi.value,
            "threads": options.threads,
            "min_sdk": options.min_sdk,
            "kernels": list(export_facts.get("kernels", ["kernels_optimized"])),
            "operators": list(export_facts.get("operators", [])),
            "method": "forward",
        }
        return Compiled(
            artifact=artifact,
            float_reference=reference,
            scheme=scheme,
            facts={"quantize": facts, "export": export_facts},
            runtime=runtime,
            warnings=tuple(warnings),
        )

    def open(self, artifact: Path, io: IoContract, options: ExecuTorchOptions) -> Runner:
        """Return a runner that executes a .pte's `forward` in executorch.runtime, one sample at a time."""
        from importlib.metadata import version

        from edgekit.backends._executorch_lower import load_method

        method = load_method(artifact)
        return Runner(
            run=_sample_runner(method, io), mode="runtime", checked_with=f"executorch {version('executorch')}"
        )

    def layer_errors(
        self,
        compiled: Compiled,
        model: Any,
        io: IoContract,
        calibration: Arrays,
        samples: Arrays,
        quantize: QuantizeConfig,
        options: ExecuTorchOptions,
        workdir: Path,
    ) -> LayerReport:
        """Each quantized layer's own output SQNR, measured on the PT2E graph lowered into the .pte."""
        from edgekit.backends import _executorch_inspect as inspect
        from edgekit.backends import _executorch_quantize as q

        if compiled.scheme is not Scheme.INT8_STATIC:
            return LayerReport(
                tool="none",
                layers=(),
                notes=(f"per-layer diagnosis on target android covers int8-static, not {compiled.scheme.value}",),
            )
        quantize = _static(quantize)
        graphs = next((g for g in self._graphs if g.artifact == compiled.artifact and g.quantize == quantize), None)
        if graphs is None:
            examples = tuple(samples[name][:1] for name in io.input_names)
            data = tuple(calibration[name] for name in io.input_names)
            converted, twin, _ = q.static_int8(model, examples, data, quantize, export_dynamic_shapes(io))
            graphs = _Graphs(compiled.artifact, quantize, converted, twin)
        return inspect.layer_errors(graphs.twin, graphs.converted, [samples[name] for name in io.input_names])

    def _float_reference(
        self, model: Any, io: IoContract, examples: tuple[np.ndarray, ...], workdir: Path
    ) -> tuple[Any, Path, dict[str, Any]]:
        """Export and lower the float program, or reuse the one lowered for this same model and io."""
        from edgekit.backends._executorch_lower import export_program, lower_to_pte

        key = (io, tuple((x.shape, x.dtype.str) for x in examples), weights_fingerprint(model))
        reference = workdir / REFERENCE_NAME
        cached = self._reference
        if cached is not None and cached.model is model and cached.key == key and cached.pte.is_file():
            reference.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(cached.pte, reference)
            return cached.program, reference, dict(cached.facts)
        program = export_program(model, examples, export_dynamic_shapes(io))
        facts = lower_to_pte(program, reference)
        self._reference = _FloatReference(model, key, program, reference, facts)
        return program, reference, dict(facts)


def _static(quantize: QuantizeConfig) -> QuantizeConfig:
    return dataclasses.replace(quantize, scheme=Scheme.INT8_STATIC)


def _sample_runner(method: Any, io: IoContract) -> Any:
    """Return run(feeds) -> outputs for a batch-1 program, looping over the batch."""
    import torch

    def run(feeds: Arrays) -> dict[str, np.ndarray]:
        count = len(feeds[io.inputs[0].name])
        outputs: dict[str, list[np.ndarray]] = {name: [] for name in io.output_names}
        for spec in io.inputs:
            got = feeds[spec.name].shape
            ranges = {d.axis: (d.min, d.max) for d in spec.dynamic}
            fits = len(got) == len(spec.shape) and all(
                ranges[a][0] <= n <= ranges[a][1] if a in ranges else n == spec.shape[a]
                for a, n in enumerate(got)
                if a > 0
            )
            if not fits:
                raise InputError(
                    f"the .pte takes '{spec.name}' samples of shape {tuple(spec.shape[1:])}, got {got[1:]}"
                )
        for i in range(count):
            args = [torch.from_numpy(np.ascontiguousarray(feeds[s.name][i : i + 1], dtype=s.dtype)) for s in io.inputs]
            results = method.execute(args)
            for name, value in zip(io.output_names, results, strict=False):
                outputs[name].append(value.detach().numpy().copy())
        return {name: np.concatenate(values) for name, values in outputs.items()}

    return run


def _fmt(ops: dict[str, int]) -> str:
    return ", ".join(f"{op} x{n}" for op, n in ops.items()) or "none"
