"""ONNX Runtime repair abilities: layers kept in float or 16-bit, calibrators that move ranges, per-layer errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import numpy_helper
from torch import nn

from edgekit.backends.base import Compiled, Inspectable, IoContract, KeepsFloat, TensorSpec
from edgekit.backends.onnxruntime import OnnxRuntimeBackend, OnnxRuntimeOptions
from edgekit.cli import main
from edgekit.errors import ConfigError, ExitStatus
from edgekit.recipe import CalibrationMethod, QuantizeConfig, Scheme
from tests.cli.test_trust import OutlierMLP

BACKEND = OnnxRuntimeBackend()
OPTIONS = OnnxRuntimeOptions()


class ThreeLayers(nn.Module):
    """fc1 -> relu -> fc2 -> relu -> fc3, seeded."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2, self.fc3 = nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def _io(inputs: tuple[int, ...], outputs: tuple[int, ...]) -> IoContract:
    return IoContract(
        inputs=(TensorSpec(name="x", shape=(1, *inputs), dtype="float32"),),
        outputs=(TensorSpec(name="y", shape=(1, *outputs), dtype="float32"),),
    )


def _compile(model: nn.Module, inputs: np.ndarray, workdir: Path, **quantize: Any) -> Compiled:
    config = QuantizeConfig(scheme=Scheme.INT8_STATIC, **quantize)
    with torch.no_grad():
        io = _io(inputs.shape[1:], tuple(model(torch.from_numpy(inputs[:1])).shape[1:]))
    return BACKEND.compile(model.eval(), io, {"x": inputs[:1]}, {"x": inputs}, config, OPTIONS, workdir)


def _inputs(count: int, features: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, features)).astype(np.float32)


class _Graph:
    """The quantized artifact, read back: which tensors are quantized, at which width, which Gemm is int8."""

    def __init__(self, path: Path) -> None:
        model = onnx.load(str(path))
        self.nodes = list(model.graph.node)
        self.initializers = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}

    def gemm(self, weight: str) -> Any:
        return next(n for n in self.nodes if n.op_type == "Gemm" and n.input[1].startswith(weight))

    def quantized_tensors(self) -> dict[str, np.dtype]:
        """Activation tensor -> dtype of its QuantizeLinear's zero point."""
        return {
            n.input[0]: self.initializers[n.input[2]].dtype
            for n in self.nodes
            if n.op_type == "QuantizeLinear" and n.input[0] not in self.initializers
        }

    def int8_weight(self, gemm: Any) -> bool:
        return gemm.input[1].endswith("_DequantizeLinear_Output")


def test_the_backend_offers_both_repair_abilities() -> None:
    assert isinstance(BACKEND, KeepsFloat) and BACKEND.sixteen_bit_activations
    assert isinstance(BACKEND, Inspectable)


def test_keep_float_leaves_exactly_the_last_layer_unquantized(tmp_path: Path) -> None:
    compiled = _compile(ThreeLayers(), _inputs(64, 8), tmp_path, keep_float=("fc3",))

    graph = _Graph(compiled.artifact)
    fc3 = graph.gemm("fc3.weight")
    assert not graph.int8_weight(fc3) and fc3.input[1] == "fc3.weight"  # its weights stay float
    assert not any(n.op_type == "QuantizeLinear" and n.input[0] in fc3.output for n in graph.nodes)
    assert graph.int8_weight(graph.gemm("fc1.weight")) and graph.int8_weight(graph.gemm("fc2.weight"))
    facts = compiled.facts["quantize"]
    assert facts["quantized_ops"] == {"Gemm": 2} and facts["float_ops"] == {"Gemm": 1}
    assert [(f["module"], f["also_float"]) for f in facts["float_layers"]] == [("fc3", [])]


def test_keep_float_of_a_middle_layer_keeps_its_output_float_and_says_who_reads_it(tmp_path: Path) -> None:
    compiled = _compile(ThreeLayers(), _inputs(64, 8), tmp_path, keep_float=("fc2",))

    graph = _Graph(compiled.artifact)
    fc2 = graph.gemm("fc2.weight")
    quantized = graph.quantized_tensors()
    assert fc2.input[0] in {n.output[0] for n in graph.nodes if n.op_type == "DequantizeLinear"}  # fc1's output
    assert fc2.output[0] not in quantized  # fc2's own output: float, so fc3 reads float
    assert graph.int8_weight(graph.gemm("fc1.weight")) and not graph.int8_weight(fc2)
    (kept,) = compiled.facts["quantize"]["float_layers"]
    assert kept["module"] == "fc2" and kept["also_float"] == ["fc3"] and "fc3 read its float output" in kept["why"]


def test_int16_activations_give_that_layer_16_bit_quantize_dequantize(tmp_path: Path) -> None:
    compiled = _compile(ThreeLayers(), _inputs(64, 8), tmp_path, int16_activations=("fc2",))

    graph = _Graph(compiled.artifact)
    fc2 = graph.gemm("fc2.weight")
    widths = graph.quantized_tensors()
    assert widths[fc2.output[0]] == np.uint16  # fc2's output (after its removed relu)
    # and its input, converted from uint8 where fc1 produced it
    assert np.dtype(np.uint16) in {w for t, w in widths.items() if t != fc2.output[0]}
    assert widths["x"] == np.uint8  # the rest stays 8-bit
    assert graph.int8_weight(fc2)  # weights stay int8
    (wide,) = compiled.facts["quantize"]["int16_layers"]
    assert wide["module"] == "fc2" and compiled.runtime["opset"] == 21  # 16-bit Q/DQ need opset 21, and it says so
    assert any("opset 21" in w for w in compiled.warnings)


def test_an_unknown_layer_path_is_a_config_error_with_a_suggestion(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        _compile(ThreeLayers(), _inputs(16, 8), tmp_path, keep_float=("fc4",))

    assert raised.value.status == ExitStatus.CONFIG == 3
    assert "quantize.keep_float names no layer of this model: fc4" in raised.value.message
    assert "did you mean 'fc" in (raised.value.hint or "")


def test_layer_errors_rank_the_outlier_layer_first(tmp_path: Path) -> None:
    model, inputs = OutlierMLP().eval(), _inputs(120, 16)
    compiled = _compile(model, inputs[:100], tmp_path / "build")
    config = QuantizeConfig(scheme=Scheme.INT8_STATIC)

    report = BACKEND.layer_errors(
        compiled, model, _io((16,), (10,)), {"x": inputs[:100]}, {"x": inputs[100:]}, config, OPTIONS, tmp_path / "diag"
    )

    assert report.tool == "onnxruntime.quantization.qdq_loss_debug"
    assert [layer.module for layer in report.layers][0] == "hidden"
    assert sorted(layer.module for layer in report.layers) == ["classifier", "head", "hidden"]
    hidden, head = report.layers[0], next(layer for layer in report.layers if layer.module == "head")
    assert hidden.sqnr_db < 3 < 20 < head.sqnr_db and hidden.op == "linear" and hidden.native
    assert (tmp_path / "diag" / "qdq-debug.onnx").is_file() and (tmp_path / "diag" / "float-debug.onnx").is_file()


class Spiky(nn.Module):
    """One 1x1 convolution; the data gives it two huge pixels, so min-max ranges are far wider than typical values."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _images(count: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((count, 4, 32, 32)).astype(np.float32)


@pytest.fixture(scope="module")
def spiky_builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Compiled]:
    inputs = _images(64)
    inputs[5, 0, 3, 3] = inputs[40, 2, 9, 9] = 200.0  # 2 of 262,144 values: under percentile's 0.001% cut
    return {
        method.value: _compile(Spiky(), inputs, tmp_path_factory.mktemp(method.value), calibration_method=method)
        for method in (CalibrationMethod.MINMAX, CalibrationMethod.ENTROPY, CalibrationMethod.PERCENTILE)
    }


def test_entropy_and_percentile_narrow_the_ranges_that_min_max_keeps(spiky_builds: dict[str, Compiled]) -> None:
    def input_scale(compiled: Compiled) -> float:
        return float(_Graph(compiled.artifact).initializers["x_scale"])

    minmax = input_scale(spiky_builds["minmax"])
    for method in ("entropy", "percentile"):
        compiled = spiky_builds[method]
        assert input_scale(compiled) < 0.5 * minmax, method
        assert compiled.artifact.read_bytes() != spiky_builds["minmax"].artifact.read_bytes()
        assert compiled.facts["quantize"]["calibration_ranges_moved_from_minmax"].split()[0] != "0"
        assert not any("min-max range" in w for w in compiled.warnings)


def test_a_calibrator_that_moves_no_range_says_so(tmp_path: Path) -> None:
    constant = np.ones((8, 4, 32, 32), dtype=np.float32)  # one value per tensor: nothing for entropy to clip

    minmax = _compile(Spiky(), constant, tmp_path / "minmax")
    entropy = _compile(Spiky(), constant, tmp_path / "entropy", calibration_method=CalibrationMethod.ENTROPY)

    assert entropy.facts["quantize"]["calibration_ranges_moved_from_minmax"].startswith("0 of")
    assert any("entropy gave every activation its min-max range" in w for w in entropy.warnings)
    assert _Graph(entropy.artifact).initializers["x_scale"] == _Graph(minmax.artifact).initializers["x_scale"]


def test_a_range_counts_as_moved_only_when_the_uint8_range_changes() -> None:
    from edgekit.backends._onnxruntime_quantize import _moved

    assert not _moved((0.0, 5.0), 0.0, 5.0) and _moved((-2.0, 2.0), 0.0, 5.0)
    assert not _moved((0.0, 5.0), 0.5, 5.0)  # an all-positive tensor quantizes from 0 either way


@pytest.fixture(scope="module")
def outlier_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("outlier")
    model, inputs = OutlierMLP().eval(), _inputs(300, 16)
    with torch.no_grad():
        labels = model(torch.from_numpy(inputs)).argmax(1).numpy()
    torch.export.save(torch.export.export(model, (torch.from_numpy(inputs[:1]),)), str(folder / "outlier.pt2"))
    np.savez(folder / "data.npz", inputs=inputs, labels=labels)
    return folder / "outlier.pt2", folder / "data.npz"


def _build(model: Path, data: Path, out: Path, *extra: str) -> Any:
    args = ["build", str(model), "--target", "rpi", "--data", str(data), "--out", str(out),
            "--set", "latency.enabled=false",
            "--set", "gate.max_top1_drop=2",  # the int8 classifier flips a few near-ties (~1.7 points)
            "--set", "quantize.scheme=int8-static", *extra]  # fmt: skip
    return CliRunner().invoke(main, args)


def test_repair_passes_the_outlier_model_by_keeping_hidden_in_float(
    outlier_files: tuple[Path, Path], tmp_path: Path
) -> None:
    result = _build(*outlier_files, tmp_path)

    assert result.exit_code == 0, result.stderr
    manifest = json.loads((tmp_path / "outlier-rpi" / "manifest.json").read_text())
    assert manifest["accuracy"]["status"] == "passed"
    repaired = [layer["module"] for layer in manifest["repair"]["float_layers"] + manifest["repair"]["int16_layers"]]
    assert "hidden" in repaired
    assert manifest["diagnosis"]["layers"][0]["module"] == "hidden"
    assert manifest["diagnosis"]["tool"] == "onnxruntime.quantization.qdq_loss_debug"
    assert manifest["quantize"]["float_layers"][0]["module"] == "hidden"


def test_without_repair_the_outlier_model_fails_the_gate(outlier_files: tuple[Path, Path], tmp_path: Path) -> None:
    result = _build(*outlier_files, tmp_path, "--no-repair")

    assert result.exit_code == ExitStatus.ACCURACY_FAILED == 7, result.stderr


def test_a_calibration_method_onnx_runtime_lacks_is_refused_by_check() -> None:
    import dataclasses

    from edgekit.recipe import Recipe

    extra = [m for m in CalibrationMethod if m.value not in ("minmax", "entropy", "percentile")]
    if not extra:
        pytest.skip("no calibration method beyond ONNX Runtime's three is defined")
    recipe = Recipe()
    recipe = dataclasses.replace(recipe, quantize=dataclasses.replace(recipe.quantize, calibration_method=extra[0]))

    problems = BACKEND.check(recipe, OPTIONS)

    assert [p.key for p in problems] == ["quantize.calibration_method"]
