"""Core ML helpers: PyTorch -> ML program conversion, compression, and reading facts back from a package."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.backends.base import Arrays, IoContract, TensorSpec, export_dynamic_shapes
from edgekit.backends.coreml.exported import ConversionFailed, convert_exported
from edgekit.errors import ExportError, first_line

WEIGHTS_FILE = Path("Data") / "com.apple.CoreML" / "weights" / "weight.bin"
WEIGHT_OPS = {"conv": "weight", "conv_transpose": "weight", "linear": "weight", "matmul": "y", "gather": "x"}


def convert(
    model: Any,
    io: IoContract,
    examples: Arrays,
    *,
    precision: str,
    minimum_target: str,
    compute_units: str,
    tagger: Callable[[Any], None] | None = None,
) -> tuple[Any, str, list[dict[str, Any]]]:
    """Convert `model` to an ML program; return it, the frontend that worked and the graph rewrites applied.

    torch.export comes first. coremltools 9.0 cannot convert an exported `aten.max_pool2d` whose
    stride is left at its default (apple/coremltools#2415: "got 2 input(s), expected minimum 3"),
    so the stride is written out (PyTorch's default stride is the kernel size) before conversion.
    Ops coremltools lacks are rewritten (`edgekit.rewrites.COREML`), and a failed conversion is retried
    from the core ATen graph (`exported.py`). Should torch.export or its conversion still fail, the
    TorchScript frontend (`torch.jit.trace`) converts the same model; if it cannot either, the error
    names the op, node and source line of the first failure. `tagger` sees the exported program just
    before conversion (layers.LayerTagger marks each node with its debug handle).
    """
    import coremltools as ct
    import torch

    # Core ML has no int64 tensors: token ids enter as int32 (the manifest says so).
    inputs = [
        ct.TensorType(name=feature_name(t.name), shape=_shape(t), dtype=np.dtype(coreml_dtype(t.dtype)))
        for t in io.inputs
    ]
    kwargs = dict(
        inputs=inputs,
        outputs=[ct.TensorType(name=feature_name(name)) for name in io.output_names],
        convert_to="mlprogram",
        minimum_deployment_target=getattr(ct.target, minimum_target),
        compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
        compute_units=getattr(ct.ComputeUnit, compute_units),
        skip_model_load=True,  # loading needs the Core ML runtime; runner() loads it where one exists
    )
    sample = tuple(torch.from_numpy(np.ascontiguousarray(examples[name])) for name in io.input_names)
    try:  # rewrites what coremltools lacks, retries from core ATen (exported.py)
        dynamic = export_dynamic_shapes(io)
        mlmodel, rewrites = convert_exported(model, sample, kwargs, prepare=_prepare(tagger), dynamic=dynamic)
        return mlmodel, "torch.export", rewrites
    except ConversionFailed as failed:  # retried through TorchScript below; its error names the first op that failed
        first = failed.error
    try:
        with torch.no_grad():
            traced = torch.jit.trace(model, sample)
        return ct.convert(traced, **kwargs), "torch.jit.trace", []
    except Exception as exc:
        raise ExportError(f"{first.message}; torch.jit.trace failed too: {first_line(exc)}", hint=first.hint) from exc


def _shape(spec: TensorSpec) -> Any:
    """The input shape Core ML declares: a RangeDim (with the example's size as default) on each dynamic axis."""
    import coremltools as ct

    if not spec.dynamic:
        return spec.shape
    ranges = {d.axis: d for d in spec.dynamic}
    dims = [
        ct.RangeDim(lower_bound=ranges[a].min, upper_bound=ranges[a].max, default=n) if a in ranges else n
        for a, n in enumerate(spec.shape)
    ]
    return ct.Shape(shape=dims)


def _prepare(tagger: Callable[[Any], None] | None) -> Callable[[Any], None]:
    """Return the edit made to the exported program before conversion; `tagger` (layers.LayerTagger) runs last."""

    def prepare(program: Any) -> None:
        _spell_out_max_pool_stride(program)
        if tagger is not None:
            tagger(program)

    return prepare


def _spell_out_max_pool_stride(program: Any) -> None:
    import torch

    target = torch.ops.aten.max_pool2d.default
    for node in program.graph_module.graph.nodes:
        if node.op == "call_function" and node.target is target and len(node.args) == 2 and "stride" not in node.kwargs:
            node.args = (*node.args, node.args[1])  # apple/coremltools#2415
    program.graph_module.recompile()


def weight_config(threshold: int, granularity: str = "per_channel", skip: Iterable[str] = ()) -> Any:
    """Return the int8 symmetric weight config of the W8 scheme (per channel unless told otherwise).

    The weights of the ops named in `skip` stay float (`op_name_configs` maps them to None).
    """
    import coremltools.optimize.coreml as cto

    op = cto.OpLinearQuantizerConfig(
        mode="linear_symmetric", dtype="int8", granularity=granularity, weight_threshold=threshold
    )
    return cto.OptimizationConfig(global_config=op, op_name_configs=dict.fromkeys(skip))


def quantize_activations(mlmodel: Any, stats: dict[str, dict[str, float]], skip: Iterable[str] = ()) -> Any:
    """Insert int8 quantize/dequantize pairs using precomputed activation ranges.

    This is `coremltools.optimize.coreml.linear_quantize_activations` with its calibration step
    replaced: coremltools calibrates by running the model in the Core ML runtime, which exists only on
    macOS. The ranges come from `proxy.activation_ranges`; the graph passes are coremltools' own. The
    ops named in `skip` quantize neither their input nor their output (`op_name_configs` to None, and
    the pairs their consumers put on their outputs removed).
    """
    import coremltools.optimize.coreml as cto

    from edgekit.backends.coreml._private import insert_activation_quantization

    skipped = frozenset(skip)
    config = cto.OptimizationConfig(
        global_config=cto.experimental.OpActivationLinearQuantizerConfig(mode="linear_symmetric"),
        op_name_configs=dict.fromkeys(skipped),
    )
    return insert_activation_quantization(mlmodel, config, stats, float_outputs=skipped)


def set_contract(mlmodel: Any, io: IoContract, contract: Mapping[str, Any]) -> None:
    """Write the preprocessing contract and labels into the model's own metadata and descriptions."""
    meta = mlmodel.user_defined_metadata
    for key, value in contract.items():
        meta[f"edgekit.{key}"] = value if isinstance(value, str) else json.dumps(value)
    prep = contract.get("preprocessing") or {}
    labels = contract.get("labels") or []
    inputs = ", ".join(f"'{n}'" for n in io.input_names)
    outputs = ", ".join(f"'{n}'" for n in io.output_names)
    how = (
        f"pixels * {prep.get('scale')} - mean {prep.get('mean')} / std {prep.get('std')}, layout {prep.get('layout')}, "
        f"color {prep.get('color')}"
        if prep
        else "see edgekit.preprocessing"
    )
    scores = f": scores for {len(labels)} labels (edgekit.labels)." if labels else "."
    mlmodel.short_description = (
        f"edgekit {contract.get('scheme', '')} model. Inputs {inputs}: {how}. Outputs {outputs}{scores}"
    )
    renamed = {name: feature_name(name) for name in (*io.input_names, *io.output_names) if feature_name(name) != name}
    if renamed:
        meta["edgekit.feature_names"] = json.dumps(renamed)  # for the app: tensor name -> Core ML feature name
    for name in io.input_names:
        mlmodel.input_description[feature_name(name)] = json.dumps(prep) if prep else "model input"
    for name in io.output_names:
        mlmodel.output_description[feature_name(name)] = (
            "scores, one per entry of edgekit.labels" if labels else "model output"
        )


# Words of Core ML's MIL language, which coremltools 9.0 refuses as feature names (NameSanitizer.sanitize_name,
# coremltools/converters/mil/mil/passes/defs/preprocess.py): it would rename `state` to `state_workaround`.
MIL_RESERVED = frozenset(
    "any bool program func tensor list dict tuple true false string bf16 fp16 fp32 fp64 int8 int16 int32 int64 "
    "uint8 uint16 uint32 uint64 state".split()
)


def feature_name(name: str) -> str:
    """Return the Core ML feature name of an input or output: `name`, unless MIL takes it as a word of its own.

    A reserved word gains a `_` (`state` -> `state_`), other characters than [A-Za-z0-9_] become `_`,
    and a leading digit gains a `_`. The manifest, golden files and data keep the user's names;
    the package's metadata `edgekit.feature_names` lists the renamed ones, and the runners translate.
    """
    safe = re.sub(r"[^A-Za-z0-9_]", "_", name)
    if not re.match(r"[A-Za-z_]", safe):
        safe = f"_{safe}"
    return f"{safe}_" if safe in MIL_RESERVED else safe


def coreml_dtype(dtype: str) -> str:
    """Return the dtype Core ML takes for a numpy input dtype: no int64 or float64 tensors exist there."""
    return {"int64": "int32", "float64": "float32", "bool": "bool", "float16": "float16"}.get(
        dtype, "int32" if dtype.startswith(("int", "uint")) else "float32"
    )


def weights_bytes(package: Path) -> int:
    """Return the size of the package's weight file (0 when every constant is inlined)."""
    path = package / WEIGHTS_FILE
    return path.stat().st_size if path.is_file() else 0


def compression_facts(program: Any) -> dict[str, Any]:
    """Read back from a program which weights are int8 and which stayed float, and the activation pairs."""
    from edgekit.backends.coreml.proxy import CONSTEXPR_OPS

    ops = list(program.functions["main"].operations)
    producers = {out.name: op for op in ops for out in op.outputs}
    quantized: list[str] = []
    floating: list[str] = []
    sparse: list[str] = []
    quantized_elements = float_elements = 0
    for op in ops:
        slot = WEIGHT_OPS.get(op.op_type)
        if slot is None or op.inputs.get(slot) is None:
            continue
        var = op.inputs[slot]
        source = producers.get(var.name)
        if source is None or not (source.op_type == "const" or source.op_type.startswith("constexpr_")):
            continue  # an activation, not a weight (matmul of two activations, say)
        size = int(np.prod(var.shape))
        if source.op_type == "constexpr_sparse_to_dense":  # a bit mask + the non-zero values
            sparse.append(f"{op.op_type}:{op.name}")
            feeders = {
                producers[v.name].op_type for v in source.inputs.values() if getattr(v, "name", None) in producers
            }
            int8_values = bool(feeders & {*CONSTEXPR_OPS, "constexpr_sparse_blockwise_shift_scale"})
            (quantized if int8_values else floating).append(f"{op.op_type}:{op.name}")
            if int8_values:
                quantized_elements += size
            else:
                float_elements += size
        elif source.op_type in CONSTEXPR_OPS:
            quantized.append(f"{op.op_type}:{op.name}")
            quantized_elements += size
        else:
            floating.append(f"{op.op_type}:{op.name}")
            float_elements += size
    stored = (*CONSTEXPR_OPS, "constexpr_sparse_to_dense", "constexpr_sparse_blockwise_shift_scale")
    counts = {t: sum(op.op_type == t for op in ops) for t in (*stored, "quantize", "dequantize")}
    return {
        "quantized_weights": len(quantized),
        "float_weights": len(floating),
        "quantized_weight_elements": quantized_elements,
        "float_weight_elements": float_elements,
        # {op type: count}, as every backend writes them (the report reads them so); the names beside
        "quantized_ops": dict(Counter(name.split(":")[0] for name in quantized)),
        "float_ops": dict(Counter(name.split(":")[0] for name in floating)),
        "quantized_op_names": quantized,
        "float_op_names": floating,
        "sparse_weights": len(sparse),
        "constexpr_ops": {k: v for k, v in counts.items() if k in stored and v},
        "activation_quantize_ops": counts["quantize"],
        "activation_dequantize_ops": counts["dequantize"],
    }
