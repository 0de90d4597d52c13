"""The ExecuTorch backend (target android) on tiny seeded models: what it quantizes, delegates and refuses.

Building, running and golden-matching a tiny model, rejecting bad options and reporting a missing package are
checked for every backend in test_conformance.py; this module checks what only ExecuTorch does.
"""

from __future__ import annotations

import filecmp
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
import torch
from executorch.runtime import Runtime

from edgekit import metrics
from edgekit.api import resolve
from edgekit.backends import get_backend
from edgekit.backends.executorch import Abi, ExecuTorchOptions
from edgekit.errors import ConfigError, ExportError, InputError
from edgekit.recipe import Scheme, build_recipe, parse_table
from tests.tiny_models import TinyBuild, compile_tiny, tiny_cnn, tiny_encoder, torch_outputs

# Not the android target's defaults, so the runtime contract shows they came from the options.
OPTIONS = {"abi": "x86_64", "threads": 2, "min_sdk": 26}


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "example": rng.standard_normal((1, 1, 8, 8)).astype(np.float32),
        "calibration": rng.standard_normal((32, 1, 8, 8)).astype(np.float32),
        "evaluation": rng.standard_normal((64, 1, 8, 8)).astype(np.float32),
    }


@pytest.fixture(scope="module")
def cnn_int8(images, tmp_path_factory) -> tuple[torch.nn.Module, dict[str, torch.Tensor], TinyBuild]:
    model = tiny_cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    build = compile_tiny(
        "executorch",
        model,
        images["example"],
        images["calibration"],
        "int8-static",
        tmp_path_factory.mktemp("cnn"),
        **OPTIONS,
    )
    return model, before, build


@pytest.fixture(scope="module")
def encoder_auto(tmp_path_factory) -> tuple[torch.nn.Module, np.ndarray, TinyBuild]:
    model = tiny_encoder()
    tokens = np.random.default_rng(1).integers(0, 100, size=(24, 16)).astype(np.int64)
    build = compile_tiny("executorch", model, tokens[:1], tokens[:8], "auto", tmp_path_factory.mktemp("encoder"))
    return model, tokens[8:], build


def test_int8_static_pte_runs_in_the_runtime_and_agrees_with_float(cnn_int8, images) -> None:
    model, _, build = cnn_int8

    runner = build.open()
    outputs = runner.run({"input": images["evaluation"]})["output"]

    assert runner.mode == "runtime" and runner.checked_with == f"executorch {version('executorch')}"
    assert build.compiled.artifact.name == "model.pte" and build.compiled.scheme is Scheme.INT8_STATIC
    reference = torch_outputs(model, images["evaluation"])
    assert outputs.shape == reference.shape == (64, 10)
    assert metrics.sqnr_db(reference, outputs) >= 30.0
    assert metrics.top1_agreement(reference, outputs) >= 90.0
    assert not np.allclose(outputs, reference, atol=1e-4)  # int8 kernels ran, not the float program


def test_int8_static_records_quantization_and_delegation_facts(cnn_int8) -> None:
    _, _, build = cnn_int8

    quantize, export = build.compiled.facts["quantize"], build.compiled.facts["export"]

    assert quantize["scheme"] == "int8-static" and quantize["path"].startswith("pt2e")
    assert quantize["calibration_samples"] == 32 and quantize["chosen_because"] == "set by the recipe"
    assert quantize["quantized_ops"] == {"aten.conv2d": 2, "aten.linear": 1}
    assert quantize["float_count"] == 0 and quantize["dequantize_nodes"] > 0
    assert export["delegate"] == "XnnpackBackend"
    assert export["delegated_subgraphs"] >= 1 and export["delegated_nodes"] > 0
    assert export["non_delegated_nodes"] == 0 and export["portable_ops"] == {}
    assert {row["op"] for row in export["ops"]} >= {"aten_convolution_default", "aten_linear_default"}
    assert export["pte_bytes"] == build.compiled.artifact.stat().st_size
    assert build.compiled.warnings == ()


def test_float_reference_is_a_larger_fp32_pte_that_matches_float(cnn_int8, images) -> None:
    model, _, build = cnn_int8
    reference = build.compiled.float_reference
    inputs = images["evaluation"][:4]

    outputs = build.run(inputs, artifact=reference)

    assert reference == build.compiled.artifact.parent / "reference" / "model-fp32.pte"
    assert build.compiled.facts["export"]["reference"]["bytes"] == reference.stat().st_size
    assert reference.stat().st_size > build.compiled.artifact.stat().st_size
    np.testing.assert_allclose(outputs, torch_outputs(model, inputs), atol=1e-4)


def test_compile_does_not_mutate_the_model(cnn_int8) -> None:
    model, before, _ = cnn_int8

    after = model.state_dict()

    assert after.keys() == before.keys()
    assert all(torch.equal(before[k], v) for k, v in after.items())
    assert not model.training


def test_runtime_contract_carries_the_options(cnn_int8) -> None:
    _, _, build = cnn_int8

    runtime = build.compiled.runtime

    assert (runtime["abi"], runtime["threads"], runtime["min_sdk"]) == ("x86_64", 2, 26)
    assert runtime["version"] == version("executorch") and runtime["method"] == "forward"
    # Everything ran inside XNNPACK: the app needs no operator kernels besides the delegate.
    assert runtime["operators"] == [] and runtime["kernels"] == []


def test_wrong_sample_shape_is_an_input_error_naming_the_expected_shape(cnn_int8) -> None:
    _, _, build = cnn_int8
    runner = build.open()

    with pytest.raises(InputError, match=r"shape \(1, 8, 8\), got \(1, 8, 9\)"):
        runner.run({"input": np.zeros((2, 1, 8, 9), np.float32)})


def test_auto_picks_dynamic_int8_for_the_encoder(encoder_auto) -> None:
    model, tokens, build = encoder_auto

    outputs = build.run(tokens)

    quantize = build.compiled.facts["quantize"]
    assert build.compiled.scheme is Scheme.INT8_DYNAMIC
    assert quantize["requested"] == "auto" and quantize["scheme"] == "int8-dynamic"
    assert "token" in quantize["chosen_because"]
    assert quantize["quantized_ops"].get("aten.linear") == 4
    assert "aten.embedding" in quantize["float_ops"]
    reference = torch_outputs(model, tokens)
    assert metrics.cosine(reference, outputs) >= 0.999
    assert not np.allclose(outputs, reference, atol=1e-5)  # dynamic int8 kernels ran, not the float program


def test_runtime_contract_lists_the_operators_left_outside_xnnpack(encoder_auto) -> None:
    _, _, build = encoder_auto

    runtime, export = build.compiled.runtime, build.compiled.facts["export"]

    assert "aten_embedding_default" in export["portable_ops"]  # the table lookup stays on CPU kernels
    assert any("embedding" in op for op in runtime["operators"])
    assert set(runtime["operators"]) <= set(Runtime.get().operator_registry.operator_names)
    assert "kernels_optimized" in runtime["kernels"]


def test_fp32_scheme_quantizes_nothing_and_ships_the_reference(images, tmp_path) -> None:
    model = tiny_cnn()
    inputs = images["evaluation"][:8]

    build = compile_tiny("executorch", model, images["example"], images["calibration"], "fp32", tmp_path)
    outputs = build.run(inputs)

    compiled = build.compiled
    assert compiled.scheme is Scheme.FP32
    assert compiled.facts["quantize"]["path"] == "none" and compiled.facts["quantize"]["quantized_count"] == 0
    assert compiled.facts["export"]["same_as_reference"] is True
    assert filecmp.cmp(compiled.artifact, compiled.float_reference, shallow=False)
    np.testing.assert_allclose(outputs, torch_outputs(model, inputs), atol=1e-4)


def test_static_int8_on_a_loaded_graph_module(images, tmp_path) -> None:
    # A .pt2 file arrives as torch.export.load(...).module(): a GraphModule without nn.Linear modules.
    graph = torch.export.export(tiny_cnn(), (torch.from_numpy(images["example"]),)).module()

    build = compile_tiny("executorch", graph, images["example"], images["calibration"], "auto", tmp_path)

    assert build.compiled.scheme is Scheme.INT8_STATIC
    assert build.compiled.facts["quantize"]["quantized_count"] == 3


def test_quantizing_nothing_is_a_warning(images, tmp_path) -> None:
    class NoWeights(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(x) * 2

    build = compile_tiny(
        "executorch", NoWeights().eval(), images["example"], images["calibration"], "int8-static", tmp_path
    )

    assert build.compiled.facts["quantize"]["quantized_count"] == 0
    assert any("quantized no compute op" in w for w in build.compiled.warnings)


def test_unsupported_op_is_an_export_error_naming_op_and_location(images, tmp_path) -> None:
    class CumulativeProduct(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 2, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cumprod(self.conv(x), 1)  # not in the Core ATen opset: exir refuses it

    with pytest.raises(ExportError) as caught:
        compile_tiny(
            "executorch", CumulativeProduct().eval(), images["example"], images["calibration"], "fp32", tmp_path
        )

    assert "cumprod" in caught.value.message
    assert "test_executorch.py" in caught.value.message and caught.value.hint


def test_data_dependent_control_flow_is_an_export_error(images, tmp_path) -> None:
    class Branchy(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:
                return x * 2
            return x

    with pytest.raises(ExportError, match="torch.export cannot trace") as caught:
        compile_tiny("executorch", Branchy().eval(), images["example"], images["calibration"], "fp32", tmp_path)

    assert "if x.sum() > 0" in caught.value.message and "torch.cond" in caught.value.hint


@pytest.mark.parametrize(
    ("scheme", "method", "refused"),
    [
        ("int8-static", "entropy", True),
        ("auto", "percentile", True),  # auto may pick static int8 for a CNN
        ("int8-static", "minmax", False),
        ("int8-dynamic", "entropy", False),  # nothing is calibrated
        ("fp32", "percentile", False),
    ],
)
def test_check_refuses_calibration_methods_xnnpack_does_not_offer(scheme: str, method: str, refused: bool) -> None:
    backend = get_backend("executorch")
    recipe = build_recipe({"quantize": {"scheme": scheme, "calibration_method": method}})

    problems = backend.check(recipe, ExecuTorchOptions())

    calibration = [p for p in problems if p.key == "quantize.calibration_method"]
    assert [p.key for p in problems] == (["quantize.calibration_method"] if refused else [])
    if refused:
        assert f"'{method}'" in calibration[0].message and "minmax" in (calibration[0].hint or "")


def test_compile_refuses_a_calibration_method_check_would_have_refused(images, tmp_path) -> None:
    with pytest.raises(ConfigError, match="'entropy'"):
        compile_tiny(
            "executorch",
            tiny_cnn(),
            images["example"],
            images["calibration"],
            "int8-static",
            tmp_path,
            quantize={"calibration_method": "entropy"},
        )


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"thread": 4}, "did you mean 'threads'"),
        ({"abi": "arm64"}, "arm64-v8a"),
        ({"threads": -1}, "options.threads"),
        ({"min_sdk": 19}, ">= 21"),
    ],
)
def test_options_outside_their_declared_values_are_config_errors(options, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_table(ExecuTorchOptions, options, "options", what="option")

    assert expected in f"{caught.value.message} {caught.value.hint}"


def test_android_target_resolves_to_typed_executorch_options() -> None:
    plan = resolve("android")

    assert plan.backend.name == "executorch" and isinstance(plan.options, ExecuTorchOptions)
    assert plan.options.abi is Abi.ARM64_V8A and plan.options.threads == 4 and plan.options.min_sdk == 21


def test_importing_the_backend_module_stays_lean() -> None:
    code = (
        "import sys, edgekit.backends.executorch; "
        "heavy = {'torch', 'executorch', 'torchao'} & set(sys.modules); print(sorted(heavy))"
    )

    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )

    assert result.stdout.strip() == "[]"
