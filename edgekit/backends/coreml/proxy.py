"""Run a saved Core ML ML program on the host with PyTorch ops: the Linux stand-in for Core ML.

There is no Core ML runtime off macOS (`coremltools.libcoremlpython` is absent), so edgekit reads
the program back from the saved `.mlpackage` and executes its MIL operations one by one, with the
kernels of proxy_ops.py (nested blocks of `while_loop`, which is how PyTorch GRUs arrive, included).
The stand-in therefore applies exactly the compression the artifact carries: int8 weights are the
stored integers times the stored per-channel scales (`constexpr_affine_dequantize`,
`constexpr_blockwise_shift_scale`), sparse weights are scattered back through their bit masks
(`constexpr_sparse_to_dense`, and `constexpr_sparse_blockwise_shift_scale` for sparse int8),
activations pass through the program's own `quantize` / `dequantize` pairs, and fp16 tensors are
rounded to half precision. It is a numerical proxy, not the Neural Engine: it does not reproduce fp16
accumulation or the device's kernels.

A program holding an op without a kernel is refused before it runs (`unsupported_ops`,
`UnsupportedOpError`), naming every such op at once.

The same interpreter, run on the fp32 program, gives the activation ranges for W8A8 calibration,
and its named intermediates (`MilRunner.intermediates`) give the per-layer diagnosis (diagnose.py).
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekit.backends.coreml.proxy_ops import OPS, as_tensor, round_to
from edgekit.errors import ExportError

Recorder = Callable[[str, torch.Tensor], None]
Substitutes = Mapping[str, Mapping[str, Any]]  # {op name: {input name: the value it reads instead}}
CONSTEXPR_OPS = ("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale")
CONTROL_FLOW_OPS = ("while_loop",)  # run by MilRunner itself: their bodies are blocks of ops
_HINT = "check the artifact on macOS with examples/ios/check_artifact.py"


class UnsupportedOpError(ExportError):
    """The program holds MIL ops the host stand-in has no kernel for; `op_types` names them all."""

    def __init__(self, op_types: Iterable[str]) -> None:
        self.op_types: tuple[str, ...] = tuple(sorted(set(op_types)))
        super().__init__(
            f"the host stand-in has no kernel for the Core ML op(s) {', '.join(self.op_types)}", hint=_HINT
        )


def _is_weight(op: Any) -> bool:
    return bool(op.op_type == "const" or op.op_type.startswith("constexpr_"))


def operations(block: Any) -> Iterator[Any]:
    """Yield the ops of a block (or function) and of the blocks nested in them, in program order."""
    for op in block.operations:
        yield op
        for inner in op.blocks:
            yield from operations(inner)


def unsupported_ops(program: Any) -> list[str]:
    """Return the sorted op types of the program's `main` function that the stand-in has no kernel for.

    Ops in nested blocks count; `const` and `constexpr_*` ops do not (they are decoded when the
    runner is built, see `constexpr_value`).
    """
    return sorted(
        {
            op.op_type
            for op in operations(program.functions["main"])
            if not _is_weight(op) and op.op_type not in OPS and op.op_type not in CONTROL_FLOW_OPS
        }
    )


def load_program(path: Path) -> Any:
    """Read the MIL program of a saved .mlpackage (no Core ML runtime needed)."""
    import coremltools as ct

    from edgekit.backends.coreml._private import program_of

    return program_of(ct.models.MLModel(str(path), skip_model_load=True))


def affine_dequantize(data: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int) -> np.ndarray:
    """Return (data - zero_point) * scale, with per-channel parameters along `axis` (iOS16/17 op)."""
    shape = [1] * data.ndim
    if np.ndim(scale) > 0:
        shape[axis] = -1
    scale = np.reshape(scale, shape) if np.ndim(scale) > 0 else scale
    zero_point = np.reshape(zero_point, shape) if np.ndim(zero_point) > 0 else zero_point
    return ((data.astype(np.float32) - np.asarray(zero_point, np.float32)) * np.asarray(scale, np.float32)).astype(
        np.float32
    )


def blockwise_dequantize(data: np.ndarray, scale: np.ndarray, offset: np.ndarray | None) -> np.ndarray:
    """Return (data - offset) * scale with block-repeated parameters (iOS18 op)."""

    def expand(p: np.ndarray) -> np.ndarray:
        for axis, (n, m) in enumerate(zip(data.shape, p.shape, strict=True)):
            p = np.repeat(p, n // m, axis=axis)
        return p

    x = data.astype(np.float32)
    if offset is not None:
        x = x - expand(np.asarray(offset, np.float32))
    return (x * expand(np.asarray(scale, np.float32))).astype(np.float32)


def sparse_to_dense(nonzero: np.ndarray, mask: np.ndarray, shape: np.ndarray | None = None) -> np.ndarray:
    """Scatter `nonzero` into the positions where `mask` is set, in row-major order.

    iOS18 masks are uint1 tensors of the weight's shape; iOS16 masks are bytes of packed bits (least
    significant bit first) with the shape given apart.
    """
    nonzero = np.asarray(nonzero)
    if shape is not None:
        size = int(np.prod(shape))
        bits = np.unpackbits(np.asarray(mask, np.uint8), bitorder="little")[:size]
        mask = bits.reshape([int(d) for d in shape])
    dense = np.zeros(np.shape(mask), dtype=nonzero.dtype)
    dense[np.asarray(mask) != 0] = nonzero
    return dense


def sparse_dequantize(
    mask: np.ndarray, nonzero: np.ndarray, scale: np.ndarray, offset: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Return (mask, dequantized nonzero values): block-wise shift-scale applied in the dense layout."""
    dense = blockwise_dequantize(sparse_to_dense(nonzero, mask), scale, offset)
    return np.asarray(mask), dense[np.asarray(mask) != 0]


def constexpr_value(op: Any, decoded: dict[str, Any] | None = None) -> Any:
    """Return the float weights a compressed-weight op decodes to, computed from its stored fields.

    `decoded` holds the outputs of constexpr ops decoded earlier, for ops that chain (joint sparse +
    int8: constexpr_sparse_blockwise_shift_scale -> constexpr_sparse_to_dense). Ops with two outputs
    return a tuple.
    """
    decoded = decoded or {}
    v = {name: decoded[var.name] if var.name in decoded else var.val for name, var in op.inputs.items()}
    if op.op_type == "constexpr_affine_dequantize":
        return affine_dequantize(v["quantized_data"], v["scale"], v["zero_point"], int(v["axis"]))
    if op.op_type == "constexpr_blockwise_shift_scale":
        return blockwise_dequantize(v["data"], v["scale"], v.get("offset"))
    if op.op_type == "constexpr_sparse_to_dense":
        return sparse_to_dense(v["nonzero_data"], v["mask"], v.get("shape"))
    if op.op_type == "constexpr_sparse_blockwise_shift_scale":
        return sparse_dequantize(v["data_mask"], v["nonzero_data"], v["scale"], v.get("offset"))
    raise ExportError(f"the host stand-in cannot decode the compressed weight op '{op.op_type}'", hint=_HINT)


class MilRunner:
    """Execute the `main` function of a MIL program with PyTorch ops (float32, fp16 rounded).

    Raises:
        UnsupportedOpError: when ops of the program have no kernel, all of them named, before any runs.
    """

    def __init__(self, program: Any) -> None:
        missing = unsupported_ops(program)
        if missing:
            raise UnsupportedOpError(missing)
        self.function = program.functions["main"]
        self.input_names = list(self.function.inputs)
        self.output_names = [v.name for v in self.function.outputs]
        self.consts: dict[str, torch.Tensor] = {}
        decoded: dict[str, Any] = {}  # raw outputs of constexpr ops, for the constexpr ops that read them
        for op in operations(self.function):
            if _is_weight(op):
                value = op.outputs[0].val if op.op_type == "const" else constexpr_value(op, decoded)
                values = value if isinstance(value, tuple) else (value,)
                for var, item in zip(op.outputs, values, strict=True):
                    decoded[var.name] = item
                    # A constexpr op decodes in its output dtype: rounding the exact fp32 product
                    # (int8 x fp16 scale fits in 24 bits) to fp16 equals an fp16 multiply.
                    self.consts[var.name] = round_to(as_tensor(item), var.dtype)

    def __call__(
        self, feeds: dict[str, np.ndarray], record: Recorder | None = None, substitutes: Substitutes | None = None
    ) -> dict[str, np.ndarray]:
        """Run the program on one set of named inputs and return its named outputs.

        Args:
            feeds: The program's inputs by name.
            record: Called with every op result's name and value, as it is computed.
            substitutes: {op name: {input name: value}}: those ops read these values instead of their
                inputs' (the diagnosis feeds a layer float inputs this way); other ops are unaffected.
        """
        env = self._run(feeds, record, substitutes)
        return {name: _numpy(env[name]) for name in self.output_names}

    def intermediates(
        self, feeds: dict[str, np.ndarray], names: Collection[str], substitutes: Substitutes | None = None
    ) -> dict[str, np.ndarray]:
        """Run once and return the values of the named variables (op results or inputs) that it computed."""
        env = self._run(feeds, None, substitutes)
        return {name: _numpy(env[name]) for name in names if name in env}

    def _run(self, feeds: dict[str, np.ndarray], record: Recorder | None, substitutes: Substitutes | None) -> Any:
        env: dict[str, Any] = dict(self.consts)
        for name, var in self.function.inputs.items():
            env[name] = round_to(as_tensor(feeds[name]), var.dtype)
        self._run_block(self.function, env, record, substitutes)
        return env

    def _run_block(
        self, block: Any, env: MutableMapping[str, Any], record: Recorder | None, substitutes: Substitutes | None = None
    ) -> None:
        for op in block.operations:
            if op.outputs[0].name in env:
                continue
            args = {
                k: (env[v.name] if v.name in env else as_tensor(v.val))
                if not isinstance(v, tuple | list)
                else [env[x.name] if x.name in env else as_tensor(x.val) for x in v]
                for k, v in op.inputs.items()
            }
            if substitutes and op.name in substitutes:
                args.update(substitutes[op.name])
            result = (
                self._while_loop(op, args, env, record) if op.op_type == "while_loop" else OPS[op.op_type](args, op)
            )
            results = result if isinstance(result, tuple | list) else (result,)
            for var, value in zip(op.outputs, results, strict=True):
                env[var.name] = round_to(value, var.dtype)
                if record is not None:
                    record(var.name, env[var.name])

    def _while_loop(
        self, op: Any, args: dict[str, Any], env: MutableMapping[str, Any], record: Recorder | None
    ) -> tuple[Any, ...]:
        """Run the body block while the cond block says so; each sees the outer values and the loop vars."""
        cond, body = op.blocks
        values = tuple(args["loop_vars"])
        while True:
            # a fresh inner scope per block run: its results never leak into the next iteration or outside
            scope = ChainMap({var.name: value for var, value in zip(cond.inputs, values, strict=True)}, env)
            self._run_block(cond, scope, record)
            if not bool(scope[cond.outputs[0].name]):
                return values
            scope = ChainMap({var.name: value for var, value in zip(body.inputs, values, strict=True)}, env)
            self._run_block(body, scope, record)
            values = tuple(scope[var.name] for var in body.outputs)


def _numpy(value: Any) -> np.ndarray:
    return value.float().numpy() if value.is_floating_point() else value.numpy()  # type: ignore[no-any-return]


def activation_ranges(program: Any, samples: list[dict[str, np.ndarray]]) -> dict[str, dict[str, float]]:
    """Return {tensor: {rmin, rmax}} over every sample for the inputs and every non-output op result.

    The layout matches what coremltools' activation-quantization passes expect. The range is the
    running min/max over all samples (coremltools 9.0's own calibration, `_model_debugger.py`
    `record_intermediate_output`, overwrites the range with each sample and so keeps the last one).
    """
    from edgekit.backends.coreml._private import adjust_concat_stats

    runner = MilRunner(program)
    stats: dict[str, dict[str, float]] = {}
    outputs = set(runner.output_names)

    def update(name: str, value: Any) -> None:
        if name in outputs or not torch.is_tensor(value) or not value.is_floating_point() or value.numel() == 0:
            return
        lo, hi = float(value.min()), float(value.max())
        old = stats.get(name)
        stats[name] = (
            {"rmin": lo, "rmax": hi} if old is None else {"rmin": min(lo, old["rmin"]), "rmax": max(hi, old["rmax"])}
        )

    for sample in samples:
        for name, value in sample.items():
            update(name, as_tensor(value))
        runner(sample, record=update)
    concats = [
        [v.name for v in op.inputs["values"]] + [op.outputs[0].name]
        for op in runner.function.operations
        if op.op_type == "concat"
    ]
    adjust_concat_stats(concats, stats)
    return stats
