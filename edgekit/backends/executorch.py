"""The ExecuTorch backend (target android): PT2E int8 before lowering, XNNPACK delegate, `.pte` artifact.

Flow: torch.export -> PT2E quantization (XNNPACKQuantizer) or torchao dynamic int8 -> torch.export
-> `to_edge_transform_and_lower(partitioner=[XnnpackPartitioner()])` -> `.to_executorch()` -> `.pte`.
`open()` runs a program in `executorch.runtime`, the same C++ runtime an Android app links.

Heavy imports live inside the methods so `import edgekit` stays free of torch and executorch.
"""

from __future__ import annotations

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
    Problem,
    Runner,
    export_dynamic_shapes,
    installed_versions,
    missing_modules,
    require_scheme,
)
from edgekit.errors import InputError
from edgekit.recipe import CalibrationMethod, QuantizeConfig, Recipe, Scheme, ranged

REFERENCE_NAME = Path("reference") / "model-fp32.pte"


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


class ExecuTorchBackend:
    """Quantize and lower a PyTorch model to an XNNPACK-delegated ExecuTorch program."""

    name: ClassVar[str] = "executorch"
    artifact_name: ClassVar[str] = "model.pte"
    extra: ClassVar[str] = "android"
    schemes: ClassVar[tuple[Scheme, ...]] = (Scheme.AUTO, Scheme.INT8_STATIC, Scheme.INT8_DYNAMIC, Scheme.FP32)
    stores_sparse_weights: ClassVar[bool] = False
    Options: ClassVar[type] = ExecuTorchOptions

    def versions(self) -> dict[str, str]:
        """Return the versions of torch, executorch and torchao."""
        return installed_versions("torch", "executorch", "torchao")

    def check(self, recipe: Recipe, options: ExecuTorchOptions) -> list[Problem]:
        """XNNPACKQuantizer calibrates by min/max only; the runtime packages must be importable."""
        # Top-level packages only: find_spec("executorch.runtime") would import executorch itself.
        problems = missing_modules(("torch", "executorch", "torchao"), self.extra, "target android")
        static = recipe.quantize.scheme in (Scheme.AUTO, Scheme.INT8_STATIC)
        if static and recipe.quantize.calibration_method is not CalibrationMethod.MINMAX:
            problems.append(
                Problem(
                    key="quantize.calibration_method",
                    message=f"quantize.calibration_method '{recipe.quantize.calibration_method.value}' is not "
                    "offered by ExecuTorch's XNNPACKQuantizer",
                    hint='use quantize.calibration_method = "minmax" for ExecuTorch targets',
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
        """Lower the float program (the reference), quantize, then lower the artifact."""
        from edgekit.backends import _executorch_quantize as q
        from edgekit.backends._executorch_lower import export_program, lower_to_pte
        from edgekit.rewrites import applied_rewrites

        require_scheme(quantize.scheme, self.schemes, self.name)
        examples = tuple(example_inputs[name] for name in io.input_names)
        dynamic = export_dynamic_shapes(io)
        float_program = export_program(model, examples, dynamic)
        census = q.op_census(float_program.graph_module)
        requested = quantize.scheme
        scheme, because = (
            (requested, "set by the recipe") if requested is not Scheme.AUTO else q.choose_scheme(census, examples)
        )
        facts: dict[str, Any] = {"requested": requested.value, "scheme": scheme.value, "chosen_because": because}
        reference = workdir / REFERENCE_NAME
        reference_facts = lower_to_pte(float_program, reference)
        artifact = workdir / self.artifact_name
        warnings: list[str] = []
        if scheme is Scheme.FP32:
            shutil.copyfile(reference, artifact)
            export_facts = {**reference_facts, "same_as_reference": True}
            facts |= {"path": "none", "quantized_count": 0}
        else:
            if scheme is Scheme.INT8_STATIC:
                samples = tuple(calibration[name] for name in io.input_names)
                quantized, graph, how = q.static_int8(model, examples, samples, quantize, dynamic)
            else:
                quantized, graph, how = q.dynamic_int8(model, examples, quantize, dynamic)
            facts |= how | q.quantize_facts(q.op_census(graph), graph)
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
