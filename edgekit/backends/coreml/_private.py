"""Every private coremltools API edgekit uses, in one place, so an upgrade has one file to check.

coremltools 9.0 has no public way to (1) read the MIL program back from a saved package, (2) insert
activation quantize/dequantize pairs from ranges measured elsewhere (its public
`linear_quantize_activations` calibrates in the Core ML runtime, which exists only on macOS), or
(3) tell a MIL fp16 dtype. Each function below wraps one of those; their tests pin the behaviour.
"""

from __future__ import annotations

from typing import Any


def program_of(mlmodel: Any) -> Any:
    """Return the MIL program of a loaded (or skip_model_load) MLModel."""
    from coremltools.converters.mil.frontend.milproto import load as milproto_load
    from coremltools.models.utils import _convert_model_spec_to_pymil_prog

    return _convert_model_spec_to_pymil_prog(mlmodel, mlmodel.get_spec().specificationVersion, milproto_load.load)


def insert_activation_quantization(mlmodel: Any, config: Any, stats: dict[str, dict[str, float]]) -> Any:
    """Run coremltools' own activation-quantization graph passes with precomputed ranges."""
    from coremltools import _SPECIFICATION_VERSION_IOS_17
    from coremltools.converters.mil.frontend.milproto import load as milproto_load
    from coremltools.converters.mil.mil.passes.graph_pass import PassOption
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY
    from coremltools.models.utils import _apply_graph_pass

    passes = []
    for name in (
        "compression::insert_prefix_quantize_dequantize_pair",
        "compression::insert_suffix_quantize_dequantize_pair",
    ):
        graph_pass = PASS_REGISTRY[name]
        graph_pass.set_options([PassOption("config", config), PassOption("activation_stats", stats)])
        passes.append(graph_pass)
    passes.append(PASS_REGISTRY["common::dequantize_quantize_pair_elimination"])
    return _apply_graph_pass(
        mlmodel,
        passes,
        spec_version=_SPECIFICATION_VERSION_IOS_17,
        pymil_load_func=milproto_load.load,
        skip_model_load=True,
    )


def adjust_concat_stats(concats: list[list[str]], stats: dict[str, dict[str, float]]) -> None:
    """Give a concat's inputs and output one shared range, as coremltools' own calibration does."""
    from coremltools.optimize.coreml.experimental._post_training_quantization import (
        _adjust_concat_surrounding_activation_stats,
    )

    _adjust_concat_surrounding_activation_stats(concats, stats)


def is_fp16(dtype: Any) -> bool:
    """Return whether a MIL variable's dtype is fp16."""
    from coremltools.converters.mil.mil import types

    return bool(dtype == types.fp16)
