"""ExecuTorch repair abilities on tiny seeded models: layers kept float, per-layer errors, calibration, reuse.

OutlierMLP (tests/cli/test_trust.py) has one hidden unit 10^4 larger than the rest, which the output ignores:
per-tensor int8 activations drown every other hidden unit, so static int8 collapses and only float repairs it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from edgekit import metrics
from edgekit.backends import _executorch_lower, get_backend
from edgekit.backends import _executorch_quantize as q
from edgekit.backends.base import Inspectable, KeepsFloat
from edgekit.backends.executorch import ExecuTorchBackend
from edgekit.cli import main
from edgekit.errors import ConfigError, ExitStatus
from edgekit.recipe import CalibrationMethod, QuantizeConfig, Scheme, build_recipe, parse_table
from tests.cli.test_trust import OutlierMLP
from tests.conftest import assert_valid_manifest
from tests.tiny_models import compile_tiny, torch_outputs


@pytest.fixture(scope="module")
def inputs() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)


@pytest.fixture(scope="module")
def plain(inputs, tmp_path_factory):
    """OutlierMLP built int8-static with nothing kept float: it collapses."""
    return compile_tiny("executorch", OutlierMLP().eval(), inputs[:1], inputs[:64], "int8-static",
                        tmp_path_factory.mktemp("plain"))  # fmt: skip


def _static(**changes) -> QuantizeConfig:
    return parse_table(QuantizeConfig, {"scheme": "int8-static", **changes}, "quantize")


def _is_q(node) -> bool:
    return "quantized_decomposed.quantize" in q.op_name(node.target)


def _is_dq(node) -> bool:
    return "quantized_decomposed.dequantize" in q.op_name(node.target)


def test_the_backend_declares_keep_float_without_16_bit_activations() -> None:
    backend = get_backend("executorch")

    assert isinstance(backend, KeepsFloat) and isinstance(backend, Inspectable)
    assert backend.keeps_float and not backend.sixteen_bit_activations
    recipe = build_recipe({"quantize": {"int16_activations": ["hidden"]}})
    problems = backend.check(recipe, backend.Options())
    assert [p.key for p in problems] == ["quantize.int16_activations"]


def test_keep_float_leaves_the_layer_and_its_readers_float_and_the_rest_int8(inputs) -> None:
    model = OutlierMLP().eval()
    converted, _, _ = q.static_int8(model, (inputs[:1],), (inputs[:32],), _static(keep_float=["hidden"]))

    hidden, head, classifier = (n for n in converted.graph.nodes if "linear" in str(n.target))
    assert not any(_is_dq(a) for a in hidden.all_input_nodes) and not any(_is_q(u) for u in hidden.users)
    assert not any(_is_dq(a) for a in head.all_input_nodes)  # reads hidden's output in float (through relu)
    assert any(_is_dq(a) for a in classifier.all_input_nodes)  # further on, int8 again
    facts = q.quantize_facts(q.op_census(converted), converted)
    assert facts["float_layers"] == ["head", "hidden"] and facts["quantized_count"] == 1


def test_keep_float_artifact_runs_with_the_float_layers_still_delegated(inputs, plain, tmp_path) -> None:
    model = OutlierMLP().eval()
    build = compile_tiny("executorch", model, inputs[:1], inputs[:64], "int8-static", tmp_path,
                         quantize={"keep_float": ["hidden", "head"]})  # fmt: skip

    reference = torch_outputs(model, inputs)
    facts = build.compiled.facts
    float_layers = facts["quantize"]["float_layers"]  # classifier reads head in float
    assert float_layers == ["classifier", "head", "hidden"] and facts["quantize"]["quantized_count"] == 0
    assert facts["export"]["non_delegated_nodes"] == 0 and facts["export"]["delegated_nodes"] > 0  # XNNPACK fp32
    assert metrics.top1_agreement(reference, build.run(inputs)) == 100.0
    assert metrics.top1_agreement(reference, plain.run(inputs)) < 60.0  # all-int8 collapses


def test_an_unknown_keep_float_path_is_a_config_error_naming_it(inputs, tmp_path) -> None:
    with pytest.raises(ConfigError) as raised:
        compile_tiny("executorch", OutlierMLP().eval(), inputs[:1], inputs[:8], "int8-static", tmp_path,
                     quantize={"keep_float": ["hiden"]})  # fmt: skip

    assert raised.value.status == ExitStatus.CONFIG == 3
    assert "quantize.keep_float names no layer of this model: hiden" in raised.value.message
    assert "hidden" in (raised.value.hint or "")


def test_layer_errors_rank_the_outlier_layer_first(plain, inputs) -> None:
    args = (plain.compiled, OutlierMLP().eval(), plain.io, {"input": inputs[:64]}, {"input": inputs[100:116]},
            _static(), plain.options, Path("unused"))  # fmt: skip
    report = plain.backend.layer_errors(*args)

    assert report.tool.startswith("torchao PT2E quantized graph")
    assert [(layer.module, layer.op) for layer in report.layers][0] == ("hidden", "linear")
    assert sorted(layer.module for layer in report.layers) == ["classifier", "head", "hidden"]
    hidden, head = report.layers[0], next(layer for layer in report.layers if layer.module == "head")
    assert hidden.native[0] == "linear" and head.native[0] == "linear_1"
    assert hidden.sqnr_db < 3.0 < 30.0 < head.sqnr_db  # the drowned hidden units; head's own error is small


def test_layer_errors_rebuild_the_same_graph_in_a_fresh_backend(plain, inputs) -> None:
    fresh = ExecuTorchBackend()  # no graphs cached: it quantizes again with the same settings
    args = (plain.compiled, OutlierMLP().eval(), plain.io, {"input": inputs[:64]}, {"input": inputs[100:116]},
            _static(), plain.options, Path("unused"))  # fmt: skip

    assert fresh.layer_errors(*args) == plain.backend.layer_errors(*args)


def test_histogram_calibration_narrows_a_heavy_tailed_range_that_minmax_keeps() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1024, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    data = np.random.default_rng(1).standard_t(1.5, (64, 1024)).astype(np.float32)  # rare huge values
    scales, outputs = {}, {}
    for method in ("minmax", "histogram"):
        converted, _, how = q.static_int8(model, (data[:1],), (data,), _static(calibration_method=method))
        first = next(n for n in converted.graph.nodes if "quantize_per_tensor" in q.op_name(n.target))
        scales[method] = float(first.args[1])
        outputs[method] = converted(torch.from_numpy(data[:8])).detach().numpy()
        assert how["activation_observer"] == {"minmax": "MinMaxObserver", "histogram": "HistogramObserver"}[method]

    # HistogramObserver minimises L2 error, so it clips little: 7% narrower here, not just a new label
    assert scales["histogram"] < 0.97 * scales["minmax"]
    assert not np.allclose(outputs["histogram"], outputs["minmax"])


def test_check_offers_minmax_and_histogram_only() -> None:
    backend = get_backend("executorch")
    recipes = {m: build_recipe({"quantize": {"calibration_method": m.value}}) for m in CalibrationMethod}
    offered = [m for m, recipe in recipes.items() if not backend.check(recipe, backend.Options())]

    assert offered == [CalibrationMethod.MINMAX, CalibrationMethod.HISTOGRAM]


def test_repeated_compiles_reuse_the_float_reference(inputs, plain, tmp_path, monkeypatch) -> None:
    lowered: list[Path] = []
    real = _executorch_lower.lower_to_pte
    monkeypatch.setattr(
        _executorch_lower, "lower_to_pte", lambda program, path: lowered.append(path) or real(program, path)
    )
    backend, model = ExecuTorchBackend(), OutlierMLP().eval()
    io = plain.io
    build = {"example_inputs": {"input": inputs[:1]}, "calibration": {"input": inputs[:16]}, "options": plain.options}

    a = backend.compile(model, io, quantize=_static(), workdir=tmp_path / "b", **build)
    b = backend.compile(model, io, quantize=_static(keep_float=["hidden"]), workdir=tmp_path / "c", **build)
    with torch.no_grad():
        model.head.bias.add_(1.0)  # changed in place: the reference must be lowered again
    c = backend.compile(model, io, quantize=_static(), workdir=tmp_path / "d", **build)

    names = [p.relative_to(tmp_path).as_posix() for p in lowered]
    assert names == ["b/reference/model-fp32.pte", "b/model.pte", "c/model.pte", "d/reference/model-fp32.pte",
                     "d/model.pte"]  # fmt: skip
    assert a.float_reference.read_bytes() == b.float_reference.read_bytes() != c.float_reference.read_bytes()


def _build(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["build", str(model), "--target", "android", "--data", str(data), "--out", str(out),
            "--set", "latency.enabled=false",
            "--set", "gate.max_top1_drop=2",  # the int8 classifier flips a few near-ties (~1.7 points)
            "--set", "quantize.scheme=int8-static", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def outlier_files(inputs, tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("outlier")
    model = OutlierMLP().eval()
    with torch.no_grad():
        labels = model(torch.from_numpy(inputs)).argmax(1).numpy()
    torch.export.save(torch.export.export(model, (torch.from_numpy(inputs[:1]),)), str(folder / "outlier.pt2"))
    np.savez(folder / "data.npz", inputs=inputs, labels=labels)
    return folder / "outlier.pt2", folder / "data.npz"


def test_android_build_repairs_the_outlier_model_by_keeping_hidden_float(outlier_files, tmp_path) -> None:
    result = CliRunner().invoke(main, _build(*outlier_files, tmp_path))

    assert result.exit_code == 0, result.stderr
    manifest = assert_valid_manifest(tmp_path / "outlier-android")
    repair, diagnosis = manifest["repair"], manifest["diagnosis"]
    assert "hidden" in [layer["module"] for layer in repair["float_layers"]]
    assert diagnosis["layers"][0]["module"] == "hidden" and diagnosis["tool"].startswith("torchao PT2E")
    assert [s["name"] for s in repair["steps"]][:2] == ["as built", "calibration minmax"]  # android: histogram
    assert manifest["accuracy"]["status"] == "passed"
    print(json.dumps({"steps": repair["steps"]}, indent=1))


def test_android_build_without_repair_fails_the_gate(outlier_files, tmp_path) -> None:
    result = CliRunner().invoke(main, _build(*outlier_files, tmp_path, "--no-repair"))

    assert result.exit_code == ExitStatus.ACCURACY_FAILED == 7, result.stderr
    assert "accuracy gate failed" in result.stderr


def test_scheme_is_int8_static_for_the_plain_build(plain) -> None:
    assert plain.compiled.scheme is Scheme.INT8_STATIC and plain.compiled.facts["quantize"]["float_layers"] == []
