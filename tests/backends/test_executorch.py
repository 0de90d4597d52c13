"""Conformance tests for the ExecuTorch backend (target android) on tiny seeded models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("executorch.runtime")
torch = pytest.importorskip("torch")

from edgekit import metrics  # noqa: E402
from edgekit.backends import get_backend  # noqa: E402
from edgekit.data import Dataset  # noqa: E402
from edgekit.errors import ConfigError, ExportError  # noqa: E402
from edgekit.pipeline import BuildContext, BuildState  # noqa: E402
from edgekit.recipe import build_recipe  # noqa: E402
from edgekit.targets import load_target  # noqa: E402
from tests.tiny_models import tiny_cnn, tiny_encoder  # noqa: E402


def _build(model, example, calibration, evaluation, scheme, workdir: Path):  # type: ignore[no-untyped-def]
    """Run quantize then export by hand, as the pipeline would, and return (state, ctx)."""
    backend = get_backend("executorch")
    target = load_target("android")
    ctx = BuildContext(
        recipe=build_recipe(target.defaults, {"quantize": {"scheme": scheme}}),
        target=target,
        backend=backend,
        workdir=workdir,
    )
    state = BuildState(
        float_model=model,
        model=model,
        example_input=example,
        data=Dataset(calibration=calibration, evaluation=evaluation),
    )
    state = backend.quantize(state, ctx)
    return backend.export(state, ctx), ctx


def _float_outputs(model, inputs: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(inputs[i : i + 1])).numpy() for i in range(len(inputs))])


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "example": rng.standard_normal((1, 1, 8, 8)).astype(np.float32),
        "calibration": rng.standard_normal((32, 1, 8, 8)).astype(np.float32),
        "evaluation": rng.standard_normal((64, 1, 8, 8)).astype(np.float32),
    }


@pytest.fixture(scope="module")
def cnn_int8(images, tmp_path_factory):  # type: ignore[no-untyped-def]
    model = tiny_cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state, ctx = _build(
        model,
        images["example"],
        images["calibration"],
        images["evaluation"],
        "int8-static",
        tmp_path_factory.mktemp("cnn"),
    )
    return model, before, state, ctx


def test_int8_static_pte_runs_in_runtime_and_agrees_with_float(cnn_int8, images) -> None:
    model, _, state, ctx = cnn_int8

    runner = ctx.backend.runner(state, ctx)
    outputs = runner.run(images["evaluation"])

    assert runner.mode == "runtime"
    assert state.artifact == ctx.workdir / "model.pte" and state.artifact.is_file()
    assert outputs.shape == (64, 10)
    reference = _float_outputs(model, images["evaluation"])
    assert metrics.sqnr_db(reference, outputs) >= 30.0
    assert metrics.top1_agreement(reference, outputs) >= 90.0


def test_int8_static_records_quantization_and_delegation_facts(cnn_int8) -> None:
    _, _, state, _ = cnn_int8

    quantize, export = state.facts["quantize"], state.facts["export"]

    assert quantize["scheme"] == "int8-static" and quantize["path"].startswith("pt2e")
    assert quantize["quantized_ops"] == {"aten.conv2d": 2, "aten.linear": 1}
    assert quantize["float_count"] == 0 and quantize["dequantize_nodes"] > 0
    assert export["delegate"] == "XnnpackBackend"
    assert export["delegated_subgraphs"] >= 1 and export["delegated_nodes"] > 0
    assert export["non_delegated_nodes"] == 0 and export["portable_ops"] == {}
    assert {row["op"] for row in export["ops"]} >= {"aten_convolution_default", "aten_linear_default"}
    assert state.warnings == ()


def test_reference_fp32_pte_is_larger_and_runs(cnn_int8, images) -> None:
    model, _, state, ctx = cnn_int8

    reference = ctx.backend.reference_runner(state, ctx)

    assert state.reference_artifact == ctx.workdir / "reference" / "model-fp32.pte"
    assert state.reference_artifact.stat().st_size > state.artifact.stat().st_size
    assert reference is not None and reference.mode == "runtime"
    outputs = reference.run(images["evaluation"][:4])
    np.testing.assert_allclose(outputs, _float_outputs(model, images["evaluation"][:4]), atol=1e-4)


def test_quantize_does_not_mutate_the_model(cnn_int8) -> None:
    model, before, state, _ = cnn_int8

    assert state.model is not model and state.float_model is model
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_runtime_contract_names_runtime_delegate_and_abi(cnn_int8) -> None:
    _, _, state, ctx = cnn_int8

    contract = ctx.backend.runtime_contract(state, ctx)

    assert contract["runtime"] == "executorch" and contract["delegate"] == "XnnpackBackend"
    assert contract["version"] == ctx.backend.versions()["executorch"]
    assert contract["abi"] == "arm64-v8a" and isinstance(contract["kernels"], list)


def test_auto_picks_dynamic_int8_for_the_encoder(tmp_path) -> None:
    model = tiny_encoder()
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 100, size=(24, 16)).astype(np.int64)

    state, ctx = _build(model, tokens[:1], tokens[:8], tokens[8:], "auto", tmp_path)
    outputs = ctx.backend.runner(state, ctx).run(tokens[8:])

    quantize = state.facts["quantize"]
    assert quantize["scheme"] == "int8-dynamic" and "token" in quantize["chosen_because"]
    assert quantize["quantized_ops"].get("aten.linear") == 4
    assert "aten.embedding" in quantize["float_ops"]
    assert metrics.cosine(_float_outputs(model, tokens[8:]), outputs) >= 0.999
    assert "aten_embedding_default" in state.facts["export"]["portable_ops"]  # the table lookup stays on CPU kernels


def test_fp32_scheme_quantizes_nothing_and_matches_float(images, tmp_path) -> None:
    model = tiny_cnn()

    state, ctx = _build(model, images["example"], images["calibration"], images["evaluation"][:8], "fp32", tmp_path)
    outputs = ctx.backend.runner(state, ctx).run(images["evaluation"][:8])

    assert state.facts["quantize"]["scheme"] == "fp32" and state.model is model
    assert state.facts["export"]["reference"]["same_as_artifact"] is True
    np.testing.assert_allclose(outputs, _float_outputs(model, images["evaluation"][:8]), atol=1e-4)


def test_static_int8_on_a_loaded_graph_module(images, tmp_path) -> None:
    # A .pt2 file arrives as torch.export.load(...).module(): a GraphModule without nn.Linear modules.
    graph = torch.export.export(tiny_cnn(), (torch.from_numpy(images["example"]),)).module()

    state, ctx = _build(graph, images["example"], images["calibration"], images["evaluation"][:8], "auto", tmp_path)

    assert state.facts["quantize"]["scheme"] == "int8-static"
    assert state.facts["quantize"]["quantized_count"] == 3


def test_quantizing_nothing_is_a_warning(images, tmp_path) -> None:
    class NoWeights(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(x) * 2

    state, _ = _build(
        NoWeights().eval(), images["example"], images["calibration"], images["evaluation"][:4], "int8-static", tmp_path
    )

    assert state.facts["quantize"]["quantized_count"] == 0
    assert any("quantized no compute op" in w for w in state.warnings)


def test_unsupported_op_is_an_export_error_naming_op_and_location(images, tmp_path) -> None:
    class CumulativeProduct(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 2, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cumprod(self.conv(x), 1)  # not in the Core ATen opset: exir refuses it

    with pytest.raises(ExportError) as caught:
        _build(
            CumulativeProduct().eval(),
            images["example"],
            images["calibration"],
            images["evaluation"][:4],
            "fp32",
            tmp_path,
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
        _build(Branchy().eval(), images["example"], images["calibration"], images["evaluation"][:4], "fp32", tmp_path)

    assert "if x.sum() > 0" in caught.value.message and "torch.cond" in caught.value.hint


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"thread": 4}, "did you mean 'threads'"),
        ({"abi": "arm64"}, "arm64-v8a"),
        ({"threads": -1}, "integer"),
        ({"min_sdk": 19}, "21"),
    ],
)
def test_bad_option_is_a_config_error(options, expected) -> None:
    with pytest.raises(ConfigError) as caught:
        get_backend("executorch").check_options(options)

    assert expected in str(caught.value)


def test_bundled_target_options_pass() -> None:
    target = load_target("android")

    get_backend("executorch").check_options(target.options)

    assert target.backend == "executorch" and target.default_recipe == "android-int8"


def test_backend_declares_its_protocol_values() -> None:
    backend = get_backend("executorch")

    backend.check_installed()

    assert backend.stage_order == ("quantize", "export") and backend.extra == "android"
    assert backend.artifact_name == "model.pte"
    assert set(backend.versions()) == {"torch", "executorch", "torchao"}


def test_importing_the_backend_module_stays_lean() -> None:
    code = "import sys, edgekit.backends.executorch; heavy = {'torch', 'executorch', 'torchao'} & set(sys.modules); print(sorted(heavy))"

    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )

    assert result.stdout.strip() == "[]"
