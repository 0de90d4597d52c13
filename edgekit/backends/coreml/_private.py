"""Every private coremltools API edgekit uses, in one place, so an upgrade has one file to check.

coremltools 9.0 has no public way to (1) read the MIL program back from a saved package, (2) insert
activation quantize/dequantize pairs from ranges measured elsewhere (its public
`linear_quantize_activations` calibrates in the Core ML runtime, which exists only on macOS),
(3) tell a MIL fp16 dtype, (4) read which torch node an op came from (op scopes, on the in-memory
program only), or (5) leave an op's output activation float when its consumer quantizes its input.
Each function below wraps one of those; their tests pin the behaviour.
"""

from __future__ import annotations

from typing import Any


def program_of(mlmodel: Any) -> Any:
    """Return the MIL program of a loaded (or skip_model_load) MLModel."""
    from coremltools.converters.mil.frontend.milproto import load as milproto_load
    from coremltools.models.utils import _convert_model_spec_to_pymil_prog

    return _convert_model_spec_to_pymil_prog(mlmodel, mlmodel.get_spec().specificationVersion, milproto_load.load)


def insert_activation_quantization(
    mlmodel: Any, config: Any, stats: dict[str, dict[str, float]], float_outputs: frozenset[str] = frozenset()
) -> Any:
    """Run coremltools' own activation-quantization graph passes with precomputed ranges.

    `float_outputs` names ops whose outputs must stay float (`drop_output_quantization`).
    """
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
    if float_outputs:
        passes.append(drop_output_quantization(float_outputs))
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


def converted_program(mlmodel: Any) -> Any:
    """Return the in-memory MIL program `ct.convert` made, whose ops still carry their scopes (source info)."""
    return mlmodel._mil_program


def op_sources(op: Any) -> tuple[list[int], list[str]]:
    """Return an op's source scopes: torch.export debug handles and TorchScript module names.

    coremltools keeps them on the in-memory program only (scope.py: they are not serialized).
    """
    from coremltools.converters.mil.mil.scope import ScopeSource

    scopes = op.scopes
    handles = [h for h in scopes.get(ScopeSource.EXIR_DEBUG_HANDLE, []) if isinstance(h, int)]
    return handles, list(scopes.get(ScopeSource.TORCHSCRIPT_MODULE_NAME, []))


def drop_output_quantization(ops: frozenset[str]) -> Any:
    """Return a graph pass removing the quantize/dequantize pairs on the outputs of the named ops.

    coremltools' activation passes quantize a tensor when its producer OR a consumer asks for it, so an
    op left out of the config (`op_name_configs={name: None}`) still has its output quantized by the
    next op's input pair. This pass removes those pairs, after the fused activation coremltools
    quantizes with the op (conv -> relu -> quantize), so the op's output stays float.
    """
    from coremltools.converters.mil.mil.passes.graph_pass import AbstractGraphPass

    activations = fused_activations()

    class DropOutputQuantization(AbstractGraphPass):  # type: ignore[misc]
        def apply(self, prog: Any) -> None:
            for function in prog.functions.values():
                for op in list(function.operations):
                    if op.name in ops:
                        _drop_pairs_after(function, op, activations)

    return DropOutputQuantization()


def _drop_pairs_after(block: Any, op: Any, activations: set[str]) -> None:
    var = op.outputs[0]
    children = list(var.child_ops)
    if len(children) == 1 and children[0].op_type in activations:
        var = children[0].outputs[0]
    for quantize in [c for c in var.child_ops if c.op_type == "quantize"]:
        for dequantize in [c for c in quantize.outputs[0].child_ops if c.op_type == "dequantize"]:
            if block.try_replace_uses_of_var_after_op(anchor_op=dequantize, old_var=dequantize.outputs[0], new_var=var):
                block.remove_ops([dequantize])
        if not quantize.outputs[0].child_ops:
            block.remove_ops([quantize])


def fused_activations() -> set[str]:
    """Return the activation ops coremltools quantizes together with the op before them (conv -> relu -> quantize)."""
    from coremltools.converters.mil.mil.passes.defs.optimize_activation_quantization import (
        insert_suffix_quantize_dequantize_pair,
    )

    return set(insert_suffix_quantize_dequantize_pair._allowed_activations)
