"""The reference flows: what a user writes by hand from each runtime's own documentation.

Each flow starts from the same model (the .pt2, or the encoder built in code), calibrates on the
same samples edgekit calibrates on, writes one artifact, and does nothing else: no fp32 reference
artifact, no evaluation, no latency check. Heavy imports stay inside the functions, so their cost
is part of the timed build, as it is for edgekit.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from benchmarks.models import Case, load_module

OPSET = 18  # what edgekit's rpi target exports with; same opset keeps the two ONNX files comparable


def executorch(case: Case, calibration: np.ndarray, example: np.ndarray, out: Path) -> Path:
    """PT2E + XNNPACKQuantizer + to_edge_transform_and_lower, as ExecuTorch's XNNPACK docs show."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from executorch.exir import to_edge_transform_and_lower
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    sample = (torch.from_numpy(example),)
    dynamic = case.kind == "sequence"
    quantizer = XNNPACKQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic)
    )
    graph = torch.export.export(load_module(case), sample).module()
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for x in [example] if dynamic else calibration:  # dynamic: one pass so observers see the graph
            prepared(torch.from_numpy(np.ascontiguousarray(x if dynamic else x[None])))
    quantized = convert_pt2e(prepared)
    program = to_edge_transform_and_lower(
        torch.export.export(quantized, sample), partitioner=[XnnpackPartitioner()]
    ).to_executorch()
    path = out / "model.pte"
    path.write_bytes(program.buffer)
    return path


def export_onnx(case: Case, example: np.ndarray, path: Path) -> Path:
    """torch.onnx.export(dynamo=True): the float ONNX both ONNX Runtime flows quantize."""
    import torch

    torch.onnx.export(
        load_module(case),
        (torch.from_numpy(example),),
        str(path),
        dynamo=True,
        opset_version=OPSET,
        input_names=["input"],
        output_names=["output"],
    )
    return path


class _Reader:
    """ONNX Runtime's CalibrationDataReader, one sample per call."""

    def __init__(self, calibration: np.ndarray) -> None:
        self._it = iter([{"input": np.ascontiguousarray(x[None])} for x in calibration])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def onnxruntime(case: Case, calibration: np.ndarray, example: np.ndarray, out: Path) -> Path:
    """quant_pre_process + quantize_static (QDQ, per-channel, uint8 activations, int8 weights), or quantize_dynamic."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32 = export_onnx(case, example, out / "fp32.onnx")
    prepared = out / "prepared.onnx"
    quant_pre_process(str(fp32), str(prepared))
    path = out / "model.onnx"
    if case.kind == "sequence":
        quantize_dynamic(str(prepared), str(path), weight_type=QuantType.QInt8, per_channel=True)
    else:
        quantize_static(
            str(prepared), str(path), _Reader(calibration), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        )  # fmt: skip
    fp32.unlink()
    prepared.unlink()
    return path


def olive(case: Case, calibration: np.ndarray, example: np.ndarray, out: Path) -> Path:
    """Olive's OnnxStaticQuantization (OnnxDynamicQuantization for the encoder) on the same float ONNX."""
    os.environ.setdefault("OLIVE_DISABLE_TELEMETRY", "1")  # else it stalls ~10 s at exit (ENVIRONMENT.md)
    os.environ.setdefault("CI", "true")
    from olive.workflows import run

    fp32 = export_onnx(case, example, out / "fp32.onnx")
    raw = out / "calibration"
    (raw / "input").mkdir(parents=True, exist_ok=True)
    for i, x in enumerate(calibration):  # Olive's RawDataContainer reads one .bin per sample
        np.ascontiguousarray(x[None]).tofile(raw / "input" / f"{i:05d}.bin")
    common = {"quant_preprocess": True, "per_channel": True, "precision": "int8"}
    if case.kind == "sequence":
        quant = {"type": "OnnxDynamicQuantization", **common}
    else:
        quant = {
            "type": "OnnxStaticQuantization",
            "data_config": "calibration",
            "quant_format": "QDQ",
            "activation_type": "uint8",
            "calibrate_method": "MinMax",
            **common,
        }
    cpu = {"device": "cpu", "execution_providers": ["CPUExecutionProvider"]}
    load = {
        "data_dir": str(raw),
        "input_names": ["input"],
        "input_shapes": [[1, *example.shape[1:]]],
        "input_types": [str(example.dtype)],
    }
    config = {
        "input_model": {"type": "ONNXModel", "model_path": str(fp32)},
        "systems": {"local": {"type": "LocalSystem", "accelerators": [cpu]}},
        "data_configs": [{"name": "calibration", "type": "RawDataContainer", "load_dataset_config": load}],
        "passes": {"quantize": quant},
        "host": "local", "target": "local", "log_severity_level": 3,
        "cache_dir": str(out / "olive-cache"), "output_dir": str(out / "olive-out"),
    }  # fmt: skip
    run(config)
    found = sorted((out / "olive-out").rglob("*.onnx"))
    if not found:
        raise RuntimeError(f"Olive wrote no .onnx under {out / 'olive-out'}")
    path = out / "model.onnx"
    found[0].replace(path)
    return path


def coreml(case: Case, calibration: np.ndarray, example: np.ndarray, out: Path) -> Path:
    """ct.convert to an ML program, then linear_quantize_weights (int8 per-channel symmetric)."""
    import coremltools as ct
    import coremltools.optimize.coreml as cto
    import torch

    model = load_module(case)
    sample = torch.from_numpy(example)
    dtype = np.int32 if np.issubdtype(example.dtype, np.integer) else np.float32
    inputs = [ct.TensorType(name="input", shape=example.shape, dtype=dtype)]
    try:
        mlmodel = ct.convert(
            torch.export.export(model, (sample,)).run_decompositions({}),
            inputs=inputs,
            minimum_deployment_target=ct.target.iOS17,
        )
    except Exception:
        # coremltools 9.0 rejects some torch.export graphs (max_pool2d defaults): use the docs' TorchScript path
        mlmodel = ct.convert(torch.jit.trace(model, sample), inputs=inputs, minimum_deployment_target=ct.target.iOS17)
    config = cto.OptimizationConfig(
        global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric", granularity="per_channel")
    )
    compressed = cto.linear_quantize_weights(mlmodel, config)
    path = out / "model.mlpackage"
    compressed.save(str(path))
    return path


FLOWS = {"executorch": executorch, "onnxruntime": onnxruntime, "olive": olive, "coreml": coreml}
# Which reference flows stand beside each edgekit target.
BY_TARGET = {"android": ("executorch",), "rpi": ("onnxruntime", "olive"), "ios": ("coreml",)}
