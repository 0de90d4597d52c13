"""Per-layer quantization error of a Core ML artifact, from the host stand-in's intermediates.

There is no Core ML runtime off macOS, so the figures come from the stand-in (proxy.py) running two
programs on the same samples: the fp16 program the artifact was compressed from (float, same op
names) and the compressed artifact. Each quantized compute op (conv, linear, ...) is measured on its
OWN error: it reads the float program's values for its inputs, so errors made upstream do not count
against it. What it owns:

- its weights (`constexpr_*` ops),
- the quantize/dequantize pair on its output, after the activation coremltools quantizes with it
  (conv -> relu -> quantize),
- the pair on its input when no compute op upstream owns that tensor (the model's input, say).

`sqnr_db` is the median over output channels of each channel's SQNR: one SQNR over the whole
tensor hides the channels a single outlier channel crushes (a per-tensor int8 scale that must reach
1e4 rounds every ordinary value to zero, yet the tensor-wide ratio stays above 60 dB).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edgekit.backends.base import Arrays, Compiled, IoContract, LayerError, LayerReport
from edgekit.backends.coreml.layers import COMPUTE_OPS, MilLayer, load_layers

TOOL = "Core ML proxy intermediates (coremltools MIL, PyTorch kernels; not the Core ML runtime)"
CEILING_DB = 150.0  # no measurable error (the same fp16 arithmetic on both sides) is reported as this
_CHANNELS_FIRST = ("conv", "conv_transpose")  # [N, C, ...]; other ops put channels last
_PASSTHROUGH = {"quantize", "dequantize", "const"}


def layer_errors(compiled: Compiled, io: IoContract, samples: Arrays) -> LayerReport:
    """Return each quantized compute op's own output SQNR on `samples`, worst first."""
    from edgekit.backends.coreml.backend import samples as split
    from edgekit.backends.coreml.proxy import MilRunner, load_program

    if compiled.float_reference is None:
        return LayerReport(tool=TOOL, layers=(), notes=("no float program to compare with",))
    references = compiled.float_reference.parent
    layers = {layer.op: layer for layer in load_layers(references)}
    float_program = load_program(references / "model-fp16.mlpackage")
    quantized_program = load_program(compiled.artifact)
    probes = _probes(quantized_program, layers)
    float_runner, quantized_runner = MilRunner(float_program), MilRunner(quantized_program)
    wanted = {name for p in probes for name in (p.float_output, *p.float_inputs.values())}
    pairs: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {p.op: ([], []) for p in probes}
    for feeds in split(io, samples):
        floats = float_runner.intermediates(feeds, wanted)
        substitutes = {p.op: {k: _tensor(floats[v]) for k, v in p.float_inputs.items()} for p in probes}
        values = quantized_runner.intermediates(feeds, {p.output for p in probes}, substitutes)
        for p in probes:
            pairs[p.op][0].append(floats[p.float_output])
            pairs[p.op][1].append(p.decode(values[p.output]))
    errors = [
        LayerError(
            module=p.layer.module,
            native=(p.op,),
            op=p.layer.op_type,
            sqnr_db=channel_sqnr_db(np.concatenate(pairs[p.op][0]), np.concatenate(pairs[p.op][1]), p.channel_axis),
        )
        for p in probes
    ]
    unnamed = sum(1 for op in _top_level(quantized_program) if op.op_type in COMPUTE_OPS and op.name not in layers)
    notes = [
        "sqnr_db: median over output channels of each channel's SQNR, each layer fed the float program's inputs "
        "(its own weights and activation quantization only); float = the fp16 program the artifact was compressed from"
    ]
    if unnamed:
        notes.append(f"{unnamed} compute op(s) with no torch module path were not measured")
    return LayerReport(tool=TOOL, layers=tuple(sorted(errors, key=lambda e: e.sqnr_db)), notes=tuple(notes))


def channel_sqnr_db(reference: np.ndarray, test: np.ndarray, axis: int) -> float:
    """Return the median over channels (`axis`) of 20*log10(||ref_c|| / ||ref_c - test_c||), in dB.

    Channels that are zero in float everywhere carry no signal and are left out; a channel without
    error counts as CEILING_DB.
    """
    ref = np.moveaxis(reference.astype(np.float64), axis, 0).reshape(reference.shape[axis], -1)
    out = np.moveaxis(test.astype(np.float64), axis, 0).reshape(test.shape[axis], -1)
    signal = np.linalg.norm(ref, axis=1)
    noise = np.linalg.norm(ref - out, axis=1)
    live = signal > 0
    if not live.any():
        return CEILING_DB
    with np.errstate(divide="ignore"):
        ratios = 20.0 * np.log10(signal[live] / noise[live])
    return float(min(np.median(np.minimum(ratios, CEILING_DB)), CEILING_DB))


class _Probe:
    """Where to read one compute op's output in both programs, and the float inputs it is fed.

    When its output is quantized, `output` is the `quantize` op's int8 result, decoded with that op's
    own scale: the `dequantize` after it may carry another scale, which coremltools' pipeline
    (`distributive_quantized_binary_op_scale_normalization`) moves around a quantized `add` and
    compensates after it.
    """

    def __init__(
        self, op: Any, layer: MilLayer, output: str, float_output: str, float_inputs: dict[str, str], quantize: Any
    ):
        self.op, self.layer, self.output, self.float_output = op.name, layer, output, float_output
        self.float_inputs = float_inputs  # {input name: float program variable}
        self.channel_axis = 1 if layer.op_type in _CHANNELS_FIRST else -1
        self.quantize = quantize

    def decode(self, value: np.ndarray) -> np.ndarray:
        """Return the value the layer's output carries: its quantized integers times their own scale."""
        if self.quantize is None:
            return value
        from edgekit.backends.coreml.proxy import affine_dequantize

        q = self.quantize
        zero_point = q.zero_point.val if q.inputs.get("zero_point") is not None else np.zeros((), np.float32)
        axis = int(q.axis.val) if q.inputs.get("axis") is not None else 0
        return affine_dequantize(value, np.asarray(q.scale.val, np.float32), np.asarray(zero_point), axis)


def _probes(program: Any, layers: Mapping[str, MilLayer]) -> list[_Probe]:
    """Return a probe for each compute op of `program` that has a module path and something quantized."""
    from edgekit.backends.coreml.proxy import CONSTEXPR_OPS

    probes = []
    for op in _top_level(program):
        layer = layers.get(op.name)
        if layer is None or op.op_type not in COMPUTE_OPS:
            continue
        end = _fused_end(op)
        pair = _pair_after(end)
        float_inputs: dict[str, str] = {}
        owns_input = False
        weights = False
        for key, var in op.inputs.items():
            if isinstance(var, Sequence) or var.op is None:
                continue  # a list input, or a function input (the same in both programs)
            if var.op.op_type.startswith("constexpr_"):
                weights = weights or var.op.op_type in CONSTEXPR_OPS or _has_quantized_source(var.op)
                continue
            if var.op.op_type == "const":
                continue
            if var.op.op_type == "dequantize":
                source = var.op.inputs["input"].op.inputs["input"]
                if _computed_upstream(source):
                    float_inputs[key] = source.name  # the pair is its producer's: read the float value
                else:
                    owns_input = True  # nothing upstream owns it: this layer quantizes its input
                continue
            float_inputs[key] = var.name
        if weights or owns_input or pair is not None:
            quantize = pair.inputs["input"].op if pair is not None else None
            output = quantize.outputs[0].name if quantize is not None else end.name
            probes.append(_Probe(op, layer, output, end.name, float_inputs, quantize))
    return probes


def _top_level(program: Any) -> list[Any]:
    return list(program.functions["main"].operations)


def _fused_end(op: Any) -> Any:
    """Return the variable coremltools quantizes for `op`: its output, or that of the activation fused with it."""
    from edgekit.backends.coreml._private import fused_activations

    var = op.outputs[0]
    children = list(var.child_ops)
    if len(children) == 1 and children[0].op_type in fused_activations():
        return children[0].outputs[0]
    return var


def _pair_after(var: Any) -> Any:
    """Return the dequantize op of the quantize/dequantize pair on `var`, or None."""
    for quantize in var.child_ops:
        if quantize.op_type == "quantize":
            for dequantize in quantize.outputs[0].child_ops:
                if dequantize.op_type == "dequantize":
                    return dequantize
    return None


def _computed_upstream(var: Any, depth: int = 64) -> bool:
    """Return whether a compute op lies upstream of `var` (through single-input ops such as relu, pool, reshape)."""
    while depth > 0 and var.op is not None:
        op = var.op
        if op.op_type in COMPUTE_OPS:
            return True
        sources = [v for k, v in op.inputs.items() if not isinstance(v, Sequence) and v.op is not None]
        sources = [v for v in sources if v.op.op_type not in _PASSTHROUGH and not v.op.op_type.startswith("constexpr")]
        if op.op_type == "dequantize":
            sources = [op.inputs["input"].op.inputs["input"]]
        if not sources:
            return False
        var, depth = sources[0], depth - 1
    return False


def _has_quantized_source(op: Any) -> bool:
    """Return whether a constexpr chain (sparse + int8) holds int8 values."""
    from edgekit.backends.coreml.proxy import CONSTEXPR_OPS

    int8 = (*CONSTEXPR_OPS, "constexpr_sparse_blockwise_shift_scale")
    return any(not isinstance(v, Sequence) and v.op is not None and v.op.op_type in int8 for v in op.inputs.values())


def _tensor(value: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(value))
