"""Core ML repair abilities on tiny seeded models: layers kept in float, per-layer errors, the ios ladder end to end.

Off macOS every figure comes from the host stand-in (proxy.py), which runs the saved program itself:
what keep_float leaves out of the package is left out of the measurement too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgekit.backends.base import Inspectable, KeepsFloat
from edgekit.backends.coreml import proxy
from edgekit.backends.coreml.backend import CoreMLBackend
from edgekit.backends.coreml.layers import load_layers
from edgekit.cli import main
from edgekit.errors import ConfigError, ExitStatus
from edgekit.recipe import QuantizeConfig, Scheme, build_recipe
from tests.cli.test_trust import OutlierMLP
from tests.tiny_models import TinyBuild, compile_tiny, tiny_cnn

TINY = {"weight_threshold": 0}  # every weight of a tiny model is below coremltools' 2048-element default


def _images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, 1, 8, 8)).astype(np.float32)


def _vectors(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, 16)).astype(np.float32)


def _build(model: torch.nn.Module, inputs: np.ndarray, workdir: Path, scheme: str, **quantize: Any) -> TinyBuild:
    return compile_tiny("coreml", model, inputs[:1], inputs, scheme, workdir, quantize=quantize, **TINY)


class _Program:
    """The compressed program read back from the .mlpackage: what each compute op reads and feeds."""

    def __init__(self, package: Path) -> None:
        self.ops = list(proxy.load_program(package).functions["main"].operations)

    def op(self, name: str) -> Any:
        return next(op for op in self.ops if op.name == name)

    def int8_weights(self, op: Any) -> bool:
        return op.inputs["weight"].op.op_type.startswith("constexpr_")

    def reads_dequantized(self, op: Any) -> bool:
        return op.inputs["x"].op is not None and op.inputs["x"].op.op_type == "dequantize"

    def output_quantized(self, op: Any) -> bool:
        """Whether a quantize op reads the op's output, or that of the relu fused with it."""
        var = op.outputs[0]
        if len(var.child_ops) == 1 and var.child_ops[0].op_type == "relu":
            var = var.child_ops[0].outputs[0]
        return any(child.op_type == "quantize" for child in var.child_ops)


def test_the_backend_keeps_layers_float_and_names_them_but_has_no_16_bit_activations() -> None:
    backend = CoreMLBackend()
    assert isinstance(backend, KeepsFloat) and not backend.sixteen_bit_activations
    assert isinstance(backend, Inspectable)
    recipe = build_recipe({"quantize": {"scheme": "w8a8", "int16_activations": ["features.0"]}})
    (problem,) = backend.check(recipe, backend.Options())
    assert problem.key == "quantize.int16_activations" and "keep_float" in (problem.hint or "")
    weights_only = build_recipe({"quantize": {"scheme": "w8", "calibration_method": "entropy"}})
    (problem,) = backend.check(weights_only, backend.Options())  # the ladder skips calibrators that change nothing
    assert problem.key == "quantize.calibration_method" and "would change nothing" in problem.message


def test_conv_ops_are_named_by_the_conv_module_their_batchnorm_was_fused_into(tmp_path: Path) -> None:
    build = _build(tiny_cnn(), _images(16), tmp_path, "w8")

    layers = {layer.modules: layer.op_type for layer in load_layers(tmp_path / "reference")}

    assert layers == {
        ("features.0", "features.1"): "conv",
        ("features.4", "features.5"): "conv",
        ("classifier",): "linear",
    }
    assert build.compiled.facts["quantize"]["quantized_ops"] == {"conv": 2, "linear": 1}


@pytest.mark.parametrize("scheme", ["w8", "w8a8"])
def test_keep_float_leaves_that_layer_unquantized_in_the_package(tmp_path: Path, scheme: str) -> None:
    build = _build(tiny_cnn(), _images(16), tmp_path, scheme, keep_float=["features.0"])

    program = _Program(build.compiled.artifact)
    (kept,) = build.compiled.facts["quantize"]["float_layers"]
    first, second = (
        program.op(name) for name in (kept["native"][0], "_native_batch_norm_legit_no_training_1_cast_fp16")
    )
    assert kept["module"] == "features.0" and first.op_type == "conv"
    assert not program.int8_weights(first) and program.int8_weights(second)
    if scheme == "w8a8":
        assert not program.reads_dequantized(first) and not program.output_quantized(first)
        pool = program.op("max_pool2d_cast_fp16")  # features.3 reads features.0's float output (after its relu)
        assert not program.reads_dequantized(pool) and program.output_quantized(pool)  # and quantizes its own
        assert program.reads_dequantized(second) and program.output_quantized(second)
        assert kept["also_float"] == []  # no compute layer reads features.0 directly
    assert build.compiled.facts["quantize"]["float_ops"] == {"conv": 1}


def test_an_unknown_layer_path_is_a_config_error_with_a_suggestion(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        _build(tiny_cnn(), _images(4), tmp_path, "w8", keep_float=["features.44"])

    assert raised.value.status == ExitStatus.CONFIG == 3
    assert "quantize.keep_float names no layer of this model: features.44" in raised.value.message
    assert "did you mean 'features.4" in (raised.value.hint or "")


@pytest.fixture(scope="module")
def outlier_w8a8(tmp_path_factory: pytest.TempPathFactory) -> TinyBuild:
    return _build(OutlierMLP().eval(), _vectors(64), tmp_path_factory.mktemp("outlier"), "w8a8")


def test_layer_errors_rank_the_outlier_layer_first(outlier_w8a8: TinyBuild, tmp_path: Path) -> None:
    build, samples = outlier_w8a8, {"input": _vectors(16, seed=1)}
    config = QuantizeConfig(scheme=Scheme.W8A8)

    report = build.backend.layer_errors(build.compiled, None, build.io, {}, samples, config, build.options, tmp_path)  # type: ignore[attr-defined]

    assert report.tool.startswith("Core ML proxy intermediates") and "not the Core ML runtime" in report.tool
    assert [(layer.module, layer.op, layer.native) for layer in report.layers] == [
        ("hidden", "linear", ("linear_0_cast_fp16",)),
        ("head", "linear", ("linear_1_cast_fp16",)),
        ("classifier", "linear", ("linear_2_cast_fp16",)),
    ][: len(report.layers)]
    assert report.layers[0].module == "hidden" and len(report.layers) >= 2
    hidden, head = report.layers[0], next(layer for layer in report.layers if layer.module == "head")
    assert hidden.sqnr_db < 3 and head.sqnr_db > 30  # int8 weights alone cost the head little


def test_the_stand_in_runs_what_keep_float_left_in_the_package(outlier_w8a8: TinyBuild, tmp_path: Path) -> None:
    model, inputs = OutlierMLP().eval(), _vectors(64)
    evaluation = _vectors(100, seed=2)
    with torch.no_grad():
        expected = model(torch.from_numpy(evaluation)).argmax(1).numpy()

    repaired = _build(model, inputs, tmp_path, "w8a8", keep_float=["hidden"])

    assert (outlier_w8a8.run(evaluation).argmax(1) == expected).mean() < 0.8  # int8 collapses ...
    assert (repaired.run(evaluation).argmax(1) == expected).mean() >= 0.97  # ... float `hidden` repairs it (int8 head)


def test_intermediates_return_named_values_and_feed_substitutes(outlier_w8a8: TinyBuild) -> None:
    runner = proxy.MilRunner(proxy.load_program(outlier_w8a8.compiled.artifact))
    feeds = {"input": _vectors(1)}

    values = runner.intermediates(feeds, ["relu_cast_fp16", "output", "no such variable"])
    zeros = {"linear_2_cast_fp16": {"x": torch.zeros(1, 32)}}

    assert set(values) == {"relu_cast_fp16", "output"}
    np.testing.assert_array_equal(values["output"], runner(feeds)["output"])
    bias = runner.intermediates(feeds, ["output"], zeros)["output"]  # the classifier reads zeros: its bias alone
    np.testing.assert_allclose(bias[0], OutlierMLP().classifier.bias.detach().numpy(), atol=1e-2)


@pytest.fixture(scope="module")
def outlier_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Return (model.pt2, data.npz) with labels the float model gets 100% right."""
    folder = tmp_path_factory.mktemp("outlier-cli")
    model, inputs = OutlierMLP().eval(), _vectors(300)
    with torch.no_grad():
        labels = model(torch.from_numpy(inputs)).argmax(1).numpy()
    torch.export.save(torch.export.export(model, (torch.from_numpy(inputs[:1]),)), str(folder / "outlier.pt2"))
    np.savez(folder / "data.npz", inputs=inputs, labels=labels)
    return folder / "outlier.pt2", folder / "data.npz"


def _ios_build(files: tuple[Path, Path], out: Path, *extra: str) -> list[str]:
    return ["build", str(files[0]), "--target", "ios", "--data", str(files[1]), "--out", str(out),
            "--set", "latency.enabled=false",
            "--set", "gate.max_top1_drop=2",  # the int8 classifier flips a few near-ties (~1.7 points)
            "--set", "quantize.scheme=w8a8", *extra]  # fmt: skip


def test_the_ios_proxy_check_fails_without_repair_and_passes_with_it(
    outlier_files: tuple[Path, Path], tmp_path: Path
) -> None:
    cli = CliRunner()

    plain = cli.invoke(main, _ios_build(outlier_files, tmp_path / "plain", "--no-repair"))
    repaired = cli.invoke(main, _ios_build(outlier_files, tmp_path / "repaired"))

    assert plain.exit_code == ExitStatus.ACCURACY_FAILED, plain.stderr
    assert "accuracy gate failed" in plain.stderr
    assert repaired.exit_code == 0, repaired.stderr
    manifest = json.loads((tmp_path / "repaired" / "outlier-ios" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["accuracy"]["status"] == "proxy" and manifest["accuracy"]["gate"]["passed"] is True
    assert [k["module"] for k in manifest["repair"]["float_layers"]] == ["hidden"]
    assert manifest["diagnosis"]["layers"][0]["module"] == "hidden"
    assert manifest["diagnosis"]["tool"].startswith("Core ML proxy intermediates")
    assert manifest["quantize"]["float_layers"][0]["native"] == ["linear_0_cast_fp16"]
