"""Core ML backend: convert to an ML program, compress it with coremltools.optimize, run or stand in.

Order: export, then quantize. Core ML compresses the converted program, not the PyTorch model.

- export(): PyTorch -> ML program twice, fp32 (`reference/model-fp32.mlpackage`, the float model in
  Core ML) and fp16 (`reference/model-fp16.mlpackage`, the size baseline and the base that gets
  compressed). The preprocessing contract and labels go into the model's own metadata.
- quantize(): W8 = int8 per-channel symmetric weights (`linear_quantize_weights`); W8A8 = int8
  activations calibrated on the calibration split, then W8 (iOS 17+); fp16 = no compression.
- runner(): the Core ML runtime on macOS; elsewhere a host-side stand-in that executes the saved
  program's own operations with PyTorch (see _coreml_mil.py), so accuracy is labelled "proxy".
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.backends import Runner, installed_versions
from edgekit.errors import ConfigError, ExportError, MissingDependencyError, did_you_mean

if TYPE_CHECKING:
    import numpy as np

    from edgekit.pipeline import BuildContext, BuildState

# Deployment targets coremltools 9.0 knows for ML programs, with the iOS release each one matches.
TARGETS = {f"iOS{v}": v for v in (15, 16, 17, 18)} | {f"macOS{v}": v + 3 for v in (12, 13, 14, 15)}
COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")
DEFAULT_OPTIONS: dict[str, Any] = {
    "minimum_deployment_target": "iOS17",
    "compute_units": "ALL",
    "weight_threshold": 2048,  # weights with fewer elements stay float (coremltools' own default)
}
REFERENCE_DIR = "reference"
MIN_SPARSITY = 0.15  # a weight with fewer zeros stays dense: its bit mask would cost more than it saves
INSTALL_HINT = "pip install 'edgekit-deploy[ios]'"


class CoreMLBackend:
    """Core ML ML programs (`.mlpackage`) for iOS and macOS."""

    name = "coreml"
    artifact_name = "model.mlpackage"
    stage_order = ("export", "quantize")
    extra = "ios"

    def check_installed(self) -> None:
        import importlib.util

        for module in ("coremltools", "torch"):
            if importlib.util.find_spec(module) is None:
                raise MissingDependencyError(
                    f"the Core ML backend needs {module}, which is not installed", hint=INSTALL_HINT
                )

    def check_options(self, options: dict[str, Any]) -> None:
        for key, value in options.items():
            if key not in DEFAULT_OPTIONS:
                raise ConfigError(
                    f"unknown Core ML option '{key}'",
                    hint=did_you_mean(key, list(DEFAULT_OPTIONS)) or f"known options: {', '.join(DEFAULT_OPTIONS)}",
                )
            if key == "minimum_deployment_target" and value not in TARGETS:
                raise ConfigError(
                    f"options.minimum_deployment_target cannot be {value!r}",
                    hint=did_you_mean(str(value), list(TARGETS)) or f"one of: {', '.join(TARGETS)}",
                )
            if key == "compute_units" and value not in COMPUTE_UNITS:
                raise ConfigError(
                    f"options.compute_units cannot be {value!r}",
                    hint=did_you_mean(str(value), COMPUTE_UNITS) or f"one of: {', '.join(COMPUTE_UNITS)}",
                )
            if key == "weight_threshold" and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ConfigError(f"options.weight_threshold must be a whole number >= 0, got {value!r}")

    def versions(self) -> dict[str, str]:
        return installed_versions("coremltools", "torch")

    def export(self, state: BuildState, ctx: BuildContext) -> BuildState:
        from edgekit.backends.coreml import convert as cc

        if state.model is None or state.example_input is None:
            raise ExportError("there is no model to convert", hint="the load stage must run before export")
        options = _options(ctx)
        scheme = _scheme(ctx)
        _check_scheme(scheme, options)
        refs = ctx.workdir / REFERENCE_DIR
        refs.mkdir(parents=True, exist_ok=True)
        paths = {"fp32": refs / "model-fp32.mlpackage", "fp16": refs / "model-fp16.mlpackage"}
        frontends = {}
        for precision, path in paths.items():
            ctx.reporter.info(f"converting to a Core ML ML program ({precision})")
            mlmodel, frontends[precision] = cc.convert(
                state.model,
                state.example_input,
                precision=precision,
                minimum_target=options["minimum_deployment_target"],
                compute_units=options["compute_units"],
            )
            cc.set_contract(mlmodel, _contract(state, precision))
            _save(mlmodel, path)
        artifact = ctx.workdir / self.artifact_name
        _replace(paths["fp32" if scheme == "fp32" else "fp16"], artifact)
        state = state.evolve(artifact=artifact, reference_artifact=paths["fp32"])
        state = state.with_facts(
            "export",
            {
                "format": "mlprogram",
                "frontend": frontends["fp32"],
                "minimum_deployment_target": options["minimum_deployment_target"],
                "compute_units": options["compute_units"],
                "compute_precision": "fp32" if scheme == "fp32" else "fp16",
                "input": {
                    "name": cc.INPUT_NAME,
                    "shape": list(state.example_input.shape),
                    "dtype": _input_dtype(state.example_input),
                },
                "output": {"name": cc.OUTPUT_NAME},
                "metadata_keys": sorted(f"edgekit.{k}" for k in _contract(state, "fp16")),
            },
        )
        if frontends["fp32"] != "torch.export":
            state = state.with_warning(
                "torch.export could not be converted by coremltools; the model was converted through torch.jit.trace"
            )
        return _with_sizes(state, paths)

    def quantize(self, state: BuildState, ctx: BuildContext) -> BuildState:
        import coremltools as ct
        import coremltools.optimize.coreml as cto

        from edgekit.backends.coreml import convert as cc
        from edgekit.backends.coreml import proxy as mil

        if state.artifact is None or state.reference_artifact is None:
            raise ExportError(
                "there is no Core ML program to compress", hint="the export stage must run before quantize"
            )
        options = _options(ctx)
        scheme = _scheme(ctx)
        _check_scheme(scheme, options)
        refs = state.reference_artifact.parent
        paths = {"fp32": refs / "model-fp32.mlpackage", "fp16": refs / "model-fp16.mlpackage"}
        facts: dict[str, Any] = {
            "scheme": scheme,
            "requested_scheme": ctx.recipe.quantize.scheme.value,
            "tool": "coremltools.optimize.coreml",
        }
        base = ct.models.MLModel(str(paths["fp16"] if scheme != "fp32" else paths["fp32"]), skip_model_load=True)
        base, sparse_facts = _sparsify(base, ctx)
        facts.update(sparse_facts)
        if scheme in ("fp16", "fp32"):
            if sparse_facts:
                cc.set_contract(base, _contract(state, scheme))
                _save(base, state.artifact)
            facts.update(cc.compression_facts(mil.load_program(state.artifact)))
            return _with_sizes(state.with_facts("quantize", facts), paths)
        if scheme == "w8a8":
            samples = _samples(state.data.calibration if state.data is not None else state.example_input)
            ctx.reporter.info(f"calibrating int8 activations on {len(samples)} samples")
            stats = mil.activation_ranges(mil.load_program(paths["fp16"]), samples)
            base = cc.quantize_activations(base, stats)
            facts.update(
                {
                    "activations": "int8 per-tensor, linear_symmetric",
                    "calibration_samples": len(samples),
                    "calibration": "min/max over the calibration split, measured on the fp16 program",
                }
            )
        threshold = int(options["weight_threshold"])
        granularity = "per_channel" if ctx.recipe.quantize.per_channel else "per_tensor"
        # Sparse weights are quantized jointly: int8 non-zero values behind the bit mask (iOS 18 ops).
        compressed = cto.linear_quantize_weights(
            base, cc.weight_config(threshold, granularity), joint_compression=bool(sparse_facts)
        )
        cc.set_contract(compressed, _contract(state, "fp16"))
        _save(compressed, state.artifact)
        facts.update(
            {"weights": f"int8 {granularity.replace('_', '-')}, linear_symmetric", "weight_threshold": threshold}
        )
        facts.update(cc.compression_facts(mil.load_program(state.artifact)))
        if facts["quantized_weights"] == 0:
            state = state.with_warning(
                f"Core ML {scheme}: no weight was quantized (every weight has fewer than {threshold} elements, "
                "options.weight_threshold); the artifact stores fp16 weights"
            )
        return _with_sizes(state.with_facts("quantize", facts), paths)

    def runner(self, state: BuildState, ctx: BuildContext) -> Runner:
        if state.artifact is None:
            raise ExportError("there is no Core ML package to run")
        if sys.platform == "darwin":
            return Runner(run=_runtime(state.artifact, _options(ctx)["compute_units"]), mode="runtime")
        return Runner(
            run=_proxy(state.artifact),
            mode="proxy",
            reason=(
                "no Core ML runtime off macOS; a host-side stand-in executed the saved ML program's own "
                "operations with PyTorch (int8 weights and activation scales read from the .mlpackage, fp16 rounding)"
            ),
        )

    def reference_runner(self, state: BuildState, ctx: BuildContext) -> Runner | None:
        # Off macOS there is no Core ML runtime: no latency is measured for the artifact or its reference.
        if sys.platform != "darwin" or state.reference_artifact is None:
            return None
        return Runner(run=_runtime(state.reference_artifact, _options(ctx)["compute_units"]), mode="runtime")

    def runtime_contract(self, state: BuildState, ctx: BuildContext) -> dict[str, Any]:
        options = _options(ctx)
        return {
            "runtime": "coreml",
            "format": "mlprogram",
            "minimum_deployment_target": options["minimum_deployment_target"],
            "compute_units": options["compute_units"],
            "coremltools": self.versions()["coremltools"],
            "input_dtype": _input_dtype(state.example_input) if state.example_input is not None else None,
        }


def _options(ctx: BuildContext) -> dict[str, Any]:
    return {**DEFAULT_OPTIONS, **ctx.target.options}


def _scheme(ctx: BuildContext) -> str:
    scheme = ctx.recipe.quantize.scheme.value
    if scheme == "auto":
        return "w8"  # Core ML's int8 weight compression suits every model; activations need iOS 17
    if scheme not in ("w8", "w8a8", "fp16", "fp32"):
        raise ConfigError(
            f"the Core ML backend has no scheme '{scheme}'", hint="use one of: auto, w8, w8a8, fp16, fp32"
        )
    method = ctx.recipe.quantize.calibration_method.value
    if scheme == "w8a8" and method != "minmax":
        raise ConfigError(
            f"Core ML calibrates activations by min/max only, not '{method}'",
            hint='set quantize.calibration_method = "minmax"',
        )
    return scheme


def _check_scheme(scheme: str, options: dict[str, Any]) -> None:
    target = options["minimum_deployment_target"]
    if scheme == "w8a8" and TARGETS.get(target, 0) < 17:
        raise ConfigError(
            f"scheme w8a8 (int8 activations) needs iOS 17 / macOS 14 or newer, but minimum_deployment_target is {target}",
            hint='use --set quantize.scheme=w8, or a target with minimum_deployment_target = "iOS17"',
        )


def check_sparsity(ctx: BuildContext) -> None:
    """Raise ConfigError when unstructured / n:m sparsity cannot make this target's package smaller."""
    options = _options(ctx)
    scheme = _scheme(ctx)
    target = options["minimum_deployment_target"]
    version = TARGETS.get(target, 0)
    if version < 16:
        raise ConfigError(
            f"sparse weights need iOS 16 / macOS 13 or newer, but minimum_deployment_target is {target}",
            hint='use a target with a newer minimum_deployment_target, or prune.method = "structured"',
        )
    if scheme in ("w8", "w8a8") and version < 18:
        raise ConfigError(
            f'sparse int8 weights (prune.method = "{ctx.recipe.prune.method.value}" with scheme {scheme}) need iOS 18 / '
            f"macOS 15, but minimum_deployment_target is {target}; before iOS 18 Core ML stores sparse weights as fp16, "
            "which is larger than dense int8 below ~56% sparsity",
            hint='use a target whose options set minimum_deployment_target = "iOS18" (copy targets/ios.toml), '
            "or --set quantize.scheme=fp16 for sparse fp16 weights",
        )


def _sparsify(mlmodel: Any, ctx: BuildContext) -> tuple[Any, dict[str, Any]]:
    """Store the zero weights the prune stage made (unstructured / n:m) in Core ML's sparse format.

    The prune stage zeroes weights by magnitude in the PyTorch model (and recovers accuracy with the
    zeros held), so the converted program already carries them. `OpThresholdPrunerConfig` then stores
    exactly those zeros sparse (bit mask + non-zero values). Re-selecting by magnitude here
    (`OpMagnitudePrunerConfig`) would pick the same zeros but also sparsify the layers the recipe
    keeps dense (the classifier head, prune.keep_layers), which the MIL op names do not identify.
    Returns the model and whether it is sparse, so int8 quantization can compress jointly.
    """
    import coremltools.optimize.coreml as cto

    prune = ctx.recipe.prune
    if prune.ratio <= 0 or prune.method.value == "structured":
        return mlmodel, {}
    check_sparsity(ctx)
    threshold = int(_options(ctx)["weight_threshold"])
    config = cto.OptimizationConfig(
        global_config=cto.OpThresholdPrunerConfig(
            threshold=1e-12, minimum_sparsity_percentile=MIN_SPARSITY, weight_threshold=threshold
        )
    )
    ctx.reporter.info("storing the pruned weights sparse (coremltools prune_weights)")
    sparse = cto.prune_weights(mlmodel, config)
    return sparse, {
        "sparse_weights": {
            "method": prune.method.value,
            "storage": "bit mask + non-zero values",
            "tool": "coremltools.optimize.coreml.prune_weights (OpThresholdPrunerConfig)",
            "minimum_sparsity": MIN_SPARSITY,
            "weight_threshold": threshold,
        }
    }


def _contract(state: BuildState, precision: str) -> dict[str, Any]:
    data = state.data
    return {
        "preprocessing": dict(data.preprocessing) if data is not None else {},
        "labels": list(data.label_names) if data is not None else [],
        "input_dtype": _input_dtype(state.example_input),
        "compute_precision": precision,
    }


def _input_dtype(example: np.ndarray) -> str:
    import numpy as np

    return "int32" if np.issubdtype(example.dtype, np.integer) else "float32"


def _samples(batch: np.ndarray) -> list[dict[str, np.ndarray]]:
    import numpy as np

    from edgekit.backends.coreml.convert import INPUT_NAME

    dtype = np.int32 if np.issubdtype(batch.dtype, np.integer) else np.float32
    return [{INPUT_NAME: batch[i : i + 1].astype(dtype)} for i in range(len(batch))]


def _with_sizes(state: BuildState, paths: dict[str, Path]) -> BuildState:
    from edgekit.backends.coreml.convert import weights_bytes

    size = weights_bytes(state.artifact) if state.artifact else 0
    fp16, fp32 = weights_bytes(paths["fp16"]), weights_bytes(paths["fp32"])
    return state.with_facts(
        "export",
        {
            "weights_bytes": {"artifact": size, "fp16": fp16, "fp32": fp32},
            "weights_ratio_to_fp16": round(size / fp16, 4) if fp16 else None,
            "weights_ratio_to_fp32": round(size / fp32, 4) if fp32 else None,
        },
    )


def _save(mlmodel: Any, path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    try:
        mlmodel.save(str(path))
    except Exception as exc:
        raise ExportError(f"could not save the Core ML package to {path}: {exc}") from exc


def _replace(source: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)


def _proxy(package: Path) -> Any:
    import numpy as np

    from edgekit.backends.coreml import proxy as mil
    from edgekit.backends.coreml.convert import OUTPUT_NAME

    runner = mil.MilRunner(mil.load_program(package))

    def run(batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return np.concatenate([runner(sample)[OUTPUT_NAME] for sample in _samples(batch)])

    return run


def _runtime(package: Path, compute_units: str) -> Any:
    import coremltools as ct
    import numpy as np

    from edgekit.backends.coreml.convert import OUTPUT_NAME

    model = ct.models.MLModel(str(package), compute_units=getattr(ct.ComputeUnit, compute_units))

    def run(batch: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(model.predict(s)[OUTPUT_NAME]) for s in _samples(batch)])

    return run
