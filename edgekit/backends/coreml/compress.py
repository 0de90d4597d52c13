"""Core ML compression of a converted ML program: sparse storage, int8 activations, int8 weights.

Every step uses `coremltools.optimize.coreml` except the activation calibration, which measures
ranges with the host-side interpreter (proxy.py) because coremltools calibrates in the Core ML
runtime, which exists only on macOS.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.backends.base import Arrays, IoContract
from edgekit.recipe import QuantizeConfig, Scheme

if TYPE_CHECKING:
    from edgekit.backends.coreml.backend import CoreMLOptions

MIN_SPARSITY = 0.15  # a weight with fewer zeros stays dense: its bit mask would cost more than it saves


def compress(
    base: Path,
    fp16: Path,
    artifact: Path,
    io: IoContract,
    scheme: Scheme,
    quantize: QuantizeConfig,
    options: CoreMLOptions,
    calibration: Arrays,
    *,
    sparse_weights: bool,
    contract: Mapping[str, Any],
    float_ops: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Compress the program at `base` per `scheme` and save it at `artifact`; return what was done.

    `float_ops` names the MIL ops (of `base`) left in float: their weights and activations.
    """
    import coremltools as ct
    import coremltools.optimize.coreml as cto

    from edgekit.backends.coreml import convert as cc
    from edgekit.backends.coreml import proxy as mil
    from edgekit.backends.coreml.backend import samples, save

    facts: dict[str, Any] = {}
    mlmodel = ct.models.MLModel(str(base), skip_model_load=True)
    if sparse_weights:
        mlmodel, facts["sparse_weights"] = _sparsify(mlmodel, options.weight_threshold)
    if scheme in (Scheme.FP16, Scheme.FP32):
        if sparse_weights:
            cc.set_contract(mlmodel, io, {**contract, "compute_precision": scheme.value})
            save(mlmodel, artifact)
        return facts
    if scheme is Scheme.W8A8:
        feeds = samples(io, calibration)
        stats = mil.activation_ranges(mil.load_program(fp16), feeds)
        mlmodel = cc.quantize_activations(mlmodel, stats, skip=float_ops)
        facts |= {
            "activations": "int8 per-tensor, linear_symmetric",
            "calibration_samples": len(feeds),
            "calibration": "min/max over the calibration split, measured on the fp16 program",
        }
    granularity = "per_channel" if quantize.per_channel else "per_tensor"
    # Sparse weights are quantized jointly: int8 non-zero values behind the bit mask (iOS 18 ops).
    compressed = cto.linear_quantize_weights(
        mlmodel,
        cc.weight_config(options.weight_threshold, granularity, skip=float_ops),
        joint_compression=sparse_weights,
    )
    cc.set_contract(compressed, io, {**contract, "compute_precision": "fp16"})
    save(compressed, artifact)
    facts |= {
        "weights": f"int8 {granularity.replace('_', '-')}, linear_symmetric",
        "weight_threshold": options.weight_threshold,
    }
    return facts


def _sparsify(mlmodel: Any, threshold: int) -> tuple[Any, dict[str, Any]]:
    """Store the zero weights the prune stage made (unstructured / n:m) in Core ML's sparse format.

    The prune stage zeroes weights by magnitude in the PyTorch model (and recovers accuracy with the
    zeros held), so the converted program already carries them. `OpThresholdPrunerConfig` then stores
    exactly those zeros sparse (bit mask + non-zero values). Re-selecting by magnitude here
    (`OpMagnitudePrunerConfig`) would pick the same zeros but also sparsify the layers the recipe
    keeps dense (the classifier head, prune.keep_layers), which the MIL op names do not identify.
    """
    import coremltools.optimize.coreml as cto

    config = cto.OptimizationConfig(
        global_config=cto.OpThresholdPrunerConfig(
            threshold=1e-12, minimum_sparsity_percentile=MIN_SPARSITY, weight_threshold=threshold
        )
    )
    return cto.prune_weights(mlmodel, config), {
        "storage": "bit mask + non-zero values",
        "tool": "coremltools.optimize.coreml.prune_weights (OpThresholdPrunerConfig)",
        "minimum_sparsity": MIN_SPARSITY,
        "weight_threshold": threshold,
    }
