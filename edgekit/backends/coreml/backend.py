"""Core ML backend: convert to an ML program, compress it with coremltools.optimize, run or stand in.

Core ML compresses the converted program, not the PyTorch model, so `compile()` converts first:

- PyTorch -> ML program twice: fp32 (`reference/model-fp32.mlpackage`, the float reference) and fp16
  (`reference/model-fp16.mlpackage`, the size baseline and the base that gets compressed). The
  preprocessing contract and labels go into the model's own metadata.
- W8 = int8 per-channel symmetric weights (`linear_quantize_weights`); W8A8 = int8 activations
  calibrated on the calibration samples, then W8 (iOS 17+); fp16 = no compression. Weights the prune
  stage zeroed are stored sparse (jointly with int8 from iOS 18).
- `open()`: the Core ML runtime on macOS; elsewhere a host-side stand-in that executes the saved
  program's own operations with PyTorch (proxy.py), so accuracy is labelled "proxy". A program with
  an operation the stand-in has no kernel for raises RunnerUnavailable: the package stays valid.
- Repair: `quantize.keep_float` leaves the MIL ops converted from those torch modules (layers.py maps
  them through the ops' source scopes) out of coremltools' configs (`op_name_configs = None`), weights and
  activations; `layer_errors()` measures each quantized layer with the stand-in's intermediates (diagnose.py).
"""

from __future__ import annotations

import enum
import shutil
import sys
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
    RunnerUnavailable,
    installed_versions,
    missing_modules,
    require_scheme,
)
from edgekit.errors import ExportError
from edgekit.recipe import CalibrationMethod, PruneMethod, QuantizeConfig, Recipe, Scheme, ranged

# Deployment targets coremltools 9.0 knows for ML programs, with the iOS release each one matches.
IOS_RELEASE = {f"iOS{v}": v for v in (15, 16, 17, 18)} | {f"macOS{v}": v + 3 for v in (12, 13, 14, 15)}
DeploymentTarget = enum.StrEnum("DeploymentTarget", {name: name for name in IOS_RELEASE})  # type: ignore[misc]


class ComputeUnits(enum.StrEnum):
    ALL = "ALL"
    CPU_ONLY = "CPU_ONLY"
    CPU_AND_GPU = "CPU_AND_GPU"
    CPU_AND_NE = "CPU_AND_NE"


@dataclass(frozen=True, slots=True, kw_only=True)
class CoreMLOptions:
    """The `[options]` of a Core ML target. Every default lives here.

    Attributes:
        minimum_deployment_target: oldest OS the package loads on (W8A8 needs iOS 17, sparse int8 iOS 18).
        compute_units: where Core ML may run it (ALL, CPU_ONLY, CPU_AND_GPU, CPU_AND_NE).
        weight_threshold: weights with fewer elements stay fp16 (coremltools' own default is 2048).
    """

    minimum_deployment_target: DeploymentTarget = DeploymentTarget("iOS17")
    compute_units: ComputeUnits = ComputeUnits.ALL
    weight_threshold: int = ranged(2048, ge=0)

    @property
    def ios_release(self) -> int:
        return IOS_RELEASE[self.minimum_deployment_target.value]


REFERENCE_DIR = "reference"
PROXY_REASON = (
    "no Core ML runtime off macOS; a host-side stand-in executed the saved ML program's own operations with "
    "PyTorch (int8 weights and activation scales read from the .mlpackage, fp16 rounding)"
)


class CoreMLBackend:
    """Core ML ML programs (`.mlpackage`) for iOS and macOS."""

    name: ClassVar[str] = "coreml"
    artifact_name: ClassVar[str] = "model.mlpackage"
    extra: ClassVar[str] = "ios"
    schemes: ClassVar[tuple[Scheme, ...]] = (Scheme.AUTO, Scheme.W8, Scheme.W8A8, Scheme.FP16, Scheme.FP32)
    stores_sparse_weights: ClassVar[bool] = True
    keeps_float: ClassVar[bool] = True  # quantize.keep_float: coremltools op-name configs set to None
    sixteen_bit_activations: ClassVar[bool] = False  # Core ML activations are int8 or fp16, nothing between
    Options: ClassVar[type] = CoreMLOptions

    def versions(self) -> dict[str, str]:
        return installed_versions("coremltools", "torch")

    def check(self, recipe: Recipe, options: CoreMLOptions) -> list[Problem]:
        """Check scheme, calibration and sparsity against the deployment target, and the packages."""
        problems = missing_modules(("coremltools", "torch"), self.extra, "the Core ML targets")
        scheme = resolve_scheme(recipe.quantize.scheme)
        target, release = options.minimum_deployment_target.value, options.ios_release
        if scheme is Scheme.W8A8 and release < 17:
            problems.append(
                Problem(
                    key="quantize.scheme",
                    message=f"scheme w8a8 (int8 activations) needs iOS 17 / macOS 14 or newer, but "
                    f"minimum_deployment_target is {target}",
                    hint='use --set quantize.scheme=w8, or a target with minimum_deployment_target = "iOS17"',
                )
            )
        method = recipe.quantize.calibration_method
        if scheme in (Scheme.W8, Scheme.W8A8) and method is not CalibrationMethod.MINMAX:
            # w8 calibrates nothing: accepting another method would record a setting that changed nothing
            what = "calibrates activations by min/max only" if scheme is Scheme.W8A8 else "w8 quantizes weights only"
            problems.append(
                Problem(
                    key="quantize.calibration_method",
                    message=f"Core ML {what}: calibration_method '{method.value}' would change nothing",
                    hint='set quantize.calibration_method = "minmax"',
                )
            )
        if recipe.quantize.int16_activations:
            problems.append(
                Problem(
                    key="quantize.int16_activations",
                    message="Core ML has no 16-bit integer activations (they are int8 or fp16)",
                    hint="use quantize.keep_float for those layers (fp16 on Core ML)",
                )
            )
        sparse = recipe.prune.ratio > 0 and recipe.prune.method is not PruneMethod.STRUCTURED
        if sparse and release < 16:
            problems.append(
                Problem(
                    key="prune.method",
                    message=(
                        f"sparse weights need iOS 16 / macOS 13 or newer, but minimum_deployment_target is {target}"
                    ),
                    hint='use a target with a newer minimum_deployment_target, or prune.method = "structured"',
                )
            )
        elif sparse and scheme in (Scheme.W8, Scheme.W8A8) and release < 18:
            problems.append(
                Problem(
                    key="prune.method",
                    message=f'sparse int8 weights (prune.method = "{recipe.prune.method.value}" with scheme '
                    f"{scheme.value}) need iOS 18 / macOS 15, but minimum_deployment_target is {target}; before "
                    "iOS 18 Core ML stores sparse weights as fp16, larger than dense int8 below ~56% sparsity",
                    hint='use a target with minimum_deployment_target = "iOS18" (--target ios18), '
                    "or --set quantize.scheme=fp16 for sparse fp16 weights",
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
        options: CoreMLOptions,
        workdir: Path,
        *,
        sparse_weights: bool = False,
        metadata: Mapping[str, Any] | None = None,
    ) -> Compiled:
        """Convert to fp32 and fp16 ML programs, then compress per the scheme into `workdir/model.mlpackage`."""
        from edgekit.backends._layers import check_layer_paths
        from edgekit.backends.coreml import compress
        from edgekit.backends.coreml import convert as cc
        from edgekit.backends.coreml import layers as ml
        from edgekit.backends.coreml import proxy as mil

        require_scheme(quantize.scheme, self.schemes, self.name)
        scheme = resolve_scheme(quantize.scheme)
        refs = workdir / REFERENCE_DIR
        refs.mkdir(parents=True, exist_ok=True)
        paths = {"fp32": refs / "model-fp32.mlpackage", "fp16": refs / "model-fp16.mlpackage"}
        frontends = {}
        layers: dict[str, list[ml.MilLayer]] = {}
        contract = {
            **(metadata or {}),
            "scheme": scheme.value,
            "input_dtypes": {t.name: cc.coreml_dtype(t.dtype) for t in io.inputs},
        }
        for precision, path in paths.items():
            tagger = ml.LayerTagger()
            mlmodel, frontends[precision], rewrites = cc.convert(
                model, io, example_inputs, precision=precision,
                minimum_target=options.minimum_deployment_target.value, compute_units=options.compute_units.value,
                tagger=tagger,
            )  # fmt: skip
            layers[precision] = ml.read_layers(mlmodel, tagger)
            cc.set_contract(mlmodel, io, {**contract, "compute_precision": precision})
            save(mlmodel, path)
        check_layer_paths(quantize.keep_float, ml.known_modules(layers["fp16"]), "quantize.keep_float")
        ml.save_layers(layers["fp16"], refs)  # the diagnosis reads it: scopes are not saved in the package
        artifact = workdir / self.artifact_name
        base_precision = "fp32" if scheme is Scheme.FP32 else "fp16"
        kept = ml.kept_ops(layers[base_precision], quantize.keep_float)
        shutil.copytree(paths[base_precision], artifact)
        quantize_facts: dict[str, Any] = {
            "scheme": scheme.value,
            "requested": quantize.scheme.value,
            "tool": "coremltools.optimize.coreml",
        }
        quantize_facts |= compress.compress(
            paths[base_precision], paths["fp16"], artifact, io, scheme, quantize, options, calibration,
            sparse_weights=sparse_weights, contract=contract, float_ops=frozenset(kept),
        )  # fmt: skip
        quantize_facts |= cc.compression_facts(mil.load_program(artifact))
        if quantize.keep_float:
            quantize_facts["float_layers"] = _float_layers(
                quantize.keep_float, kept, layers[base_precision], scheme, paths[base_precision]
            )
        warnings = []
        if scheme in (Scheme.W8, Scheme.W8A8) and quantize_facts["quantized_weights"] == 0:
            warnings.append(
                f"Core ML {scheme.value}: no weight was quantized (every weight has fewer than "
                f"{options.weight_threshold} elements, options.weight_threshold); the artifact stores fp16 weights"
            )
        if frontends["fp32"] != "torch.export":
            warnings.append("coremltools could not convert the torch.export graph; it converted a torch.jit.trace")
        sizes = {"artifact": cc.weights_bytes(artifact), **{k: cc.weights_bytes(p) for k, p in paths.items()}}
        export_facts = {
            "format": "mlprogram",
            "frontend": frontends["fp32"],
            "rewrites": rewrites,  # edgekit.rewrites that ran (the same for both precisions), in order
            "minimum_deployment_target": options.minimum_deployment_target.value,
            "compute_units": options.compute_units.value,
            "compute_precision": base_precision,
            "metadata_keys": sorted(f"edgekit.{k}" for k in [*contract, "compute_precision"]),
            "weights_bytes": sizes,
            "weights_ratio_to_fp16": round(sizes["artifact"] / sizes["fp16"], 4) if sizes["fp16"] else None,
            "weights_ratio_to_fp32": round(sizes["artifact"] / sizes["fp32"], 4) if sizes["fp32"] else None,
        }
        runtime = {
            "runtime": "coreml",
            "format": "mlprogram",
            "minimum_deployment_target": options.minimum_deployment_target.value,
            "compute_units": options.compute_units.value,
            "coremltools": self.versions()["coremltools"],
            "input_dtypes": contract["input_dtypes"],
        }
        return Compiled(
            artifact=artifact,
            float_reference=paths["fp32"],
            scheme=scheme,
            facts={"export": export_facts, "quantize": quantize_facts},
            runtime=runtime,
            warnings=tuple(warnings),
        )

    def layer_errors(
        self,
        compiled: Compiled,
        model: Any,
        io: IoContract,
        calibration: Arrays,
        samples: Arrays,
        quantize: QuantizeConfig,
        options: CoreMLOptions,
        workdir: Path,
    ) -> LayerReport:
        """Return each quantized layer's own output SQNR, worst first, from the stand-in's intermediates.

        Measured on the host stand-in on every platform (diagnose.py), so a Mac and Linux give the same
        figures; what the stand-in does not model (Neural Engine kernels, fp16 accumulation) is not in them.
        """
        from edgekit.backends.coreml import diagnose

        return diagnose.layer_errors(compiled, io, samples)

    def open(self, artifact: Path, io: IoContract, options: CoreMLOptions) -> Runner:
        """Return the Core ML runtime on macOS, else the host-side stand-in (RunnerUnavailable if it lacks an op)."""
        if sys.platform == "darwin":
            import coremltools as ct

            model = ct.models.MLModel(str(artifact), compute_units=getattr(ct.ComputeUnit, options.compute_units.value))
            return Runner(
                run=_per_sample(io, model.predict),
                mode="runtime",
                checked_with=(f"Core ML (coremltools {ct.__version__})"),
            )
        return open_proxy(artifact, io)


def open_proxy(artifact: Path, io: IoContract) -> Runner:
    """Return the host-side stand-in for a `.mlpackage` (any OS); RunnerUnavailable when it lacks a kernel.

    `open()` uses it off macOS; on a Mac, tests compare it with the Core ML runtime.
    """
    from edgekit.backends.coreml import proxy as mil

    try:
        runner = mil.MilRunner(mil.load_program(artifact))
    except mil.UnsupportedOpError as exc:
        raise RunnerUnavailable(
            f"no Core ML runtime off macOS, and the host stand-in has no kernel for {', '.join(exc.op_types)}; "
            "check the package on a Mac (examples/ios/check_artifact.py)"
        ) from exc

    def predict(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.no_grad():
            return runner(feeds)

    return Runner(
        run=_per_sample(io, predict),
        mode="proxy",
        checked_with=("proxy: host-side MIL interpreter"),
        reason=PROXY_REASON,
    )


def _float_layers(
    keep_float: tuple[str, ...], kept: Mapping[str, Any], layers: list[Any], scheme: Scheme, base: Path
) -> list[Any]:
    """Return what `quantize.keep_float` did, per requested path: the MIL ops left float and who reads them float."""
    from edgekit.backends.coreml import layers as ml
    from edgekit.backends.coreml.proxy import load_program

    readers = ml.float_readers(load_program(base), kept, layers) if scheme is Scheme.W8A8 else {}
    facts = []
    for path in keep_float:
        ops = sorted(op for op, layer in kept.items() if ml.covered_by(layer, path))
        also = sorted({m for op in ops for m in readers.get(op, []) if not ml.covered(m, keep_float)})
        why = "op_name_configs = None for its weights and activations"
        if also:
            why += f"; {', '.join(also)} read its float output (their own weights and outputs stay int8)"
        facts.append({"module": path, "native": ops, "also_float": also, "why": why})
    return facts


def resolve_scheme(scheme: Scheme) -> Scheme:
    """Core ML's `auto` is W8: int8 weight compression suits every model; activations need iOS 17."""
    return Scheme.W8 if scheme is Scheme.AUTO else scheme


def save(mlmodel: Any, path: Path) -> None:
    """Save an MLModel to `path`, replacing what is there, with item ids derived from content (reproducible)."""
    from edgekit.backends.coreml.package_ids import use_content_ids

    if path.exists():
        shutil.rmtree(path)
    try:
        mlmodel.save(str(path))
    except Exception as exc:
        raise ExportError(f"could not save the Core ML package to {path}: {exc}") from exc
    use_content_ids(path)


def samples(io: IoContract, feeds: Arrays) -> list[dict[str, np.ndarray]]:
    """Split named batches into batch-1 feeds in the dtypes Core ML takes (int32 for token ids), by feature name."""
    from edgekit.backends.coreml.convert import coreml_dtype, feature_name

    count = len(feeds[io.inputs[0].name])
    return [
        {
            feature_name(t.name): np.ascontiguousarray(feeds[t.name][i : i + 1]).astype(coreml_dtype(t.dtype))
            for t in io.inputs
        }
        for i in range(count)
    ]


def _per_sample(io: IoContract, predict: Any) -> Any:
    from edgekit.backends.coreml.convert import feature_name

    def run(feeds: Arrays) -> dict[str, np.ndarray]:
        results = [predict(sample) for sample in samples(io, feeds)]
        return {name: np.concatenate([np.asarray(r[feature_name(name)]) for r in results]) for name in io.output_names}

    return run
