"""Core ML backend: conversion, compression, the host-side stand-in, and option checks."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("coremltools")
torch = pytest.importorskip("torch")

from edgekit.backends import get_backend  # noqa: E402
from edgekit.data import Dataset  # noqa: E402
from edgekit.errors import ConfigError  # noqa: E402
from edgekit.metrics import sqnr_db  # noqa: E402
from edgekit.pipeline import BuildContext, BuildState  # noqa: E402
from edgekit.recipe import build_recipe  # noqa: E402
from edgekit.targets import load_target  # noqa: E402
from tests.tiny_models import tiny_cnn, tiny_encoder  # noqa: E402

macos = pytest.mark.skipif(sys.platform != "darwin", reason="the Core ML runtime exists only on macOS")
# Tiny models: every weight is below coremltools' default 2048-element threshold, so lower it.
TINY_OPTIONS = {"weight_threshold": 0}


def make(model, example: np.ndarray, tmp_path: Path, scheme: str = "w8", **options) -> tuple[BuildState, BuildContext]:
    target = load_target("ios")
    target = dataclasses.replace(target, options={**target.options, **TINY_OPTIONS, **options})
    backend = get_backend("coreml")
    backend.check_options(target.options)
    rng = np.random.default_rng(0)
    if np.issubdtype(example.dtype, np.integer):
        inputs = rng.integers(0, 100, size=(24, *example.shape[1:])).astype(np.int64)
    else:
        inputs = rng.standard_normal((24, *example.shape[1:])).astype(np.float32)
    data = Dataset(
        calibration=inputs[:16],
        evaluation=inputs[16:],
        label_names=tuple("abcdefghij"),
        preprocessing={"layout": "NCHW", "color": "grayscale", "resize": [], "scale": 1 / 16, "mean": [], "std": []},
    )
    ctx = BuildContext(
        recipe=build_recipe({"quantize": {"scheme": scheme}}), target=target, backend=backend, workdir=tmp_path
    )
    state = BuildState(float_model=model, model=model, example_input=example, data=data)
    return state, ctx


def build(state: BuildState, ctx: BuildContext) -> BuildState:
    return ctx.backend.quantize(ctx.backend.export(state, ctx), ctx)


def float_outputs(model, inputs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(inputs)).numpy()


@pytest.fixture(scope="module")
def cnn_example() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((1, 1, 8, 8)).astype(np.float32)


def test_w8_converts_saves_and_records_facts(tmp_path, cnn_example):
    state, ctx = make(tiny_cnn(), cnn_example, tmp_path, "w8")

    state = build(state, ctx)

    assert state.artifact == tmp_path / "model.mlpackage" and (state.artifact / "Manifest.json").is_file()
    assert state.reference_artifact == tmp_path / "reference" / "model-fp32.mlpackage"
    q, e = state.facts["quantize"], state.facts["export"]
    assert q["scheme"] == "w8" and q["quantized_weights"] == 3 and q["float_weights"] == 0
    assert q["constexpr_ops"] == {"constexpr_affine_dequantize": 3} and q["activation_quantize_ops"] == 0
    assert e["frontend"] == "torch.export" and e["minimum_deployment_target"] == "iOS17"
    assert 0 < e["weights_bytes"]["artifact"] < e["weights_bytes"]["fp16"] < e["weights_bytes"]["fp32"]
    assert not state.warnings


def test_metadata_carries_the_preprocessing_contract(tmp_path, cnn_example):
    import coremltools as ct

    state, ctx = make(tiny_cnn(), cnn_example, tmp_path, "w8")

    state = build(state, ctx)

    meta = ct.models.MLModel(str(state.artifact), skip_model_load=True).user_defined_metadata
    assert '"scale": 0.0625' in meta["edgekit.preprocessing"]
    assert meta["edgekit.labels"].startswith('["a", "b"')
    assert meta["edgekit.input_dtype"] == "float32"


def test_w8a8_inserts_activation_quantization_and_proxy_agrees(tmp_path, cnn_example):
    model = tiny_cnn()
    state, ctx = make(model, cnn_example, tmp_path, "w8a8")

    state = build(state, ctx)
    runner = ctx.backend.runner(state, ctx)

    q = state.facts["quantize"]
    assert q["activation_quantize_ops"] > 0 and q["calibration_samples"] == 16 and q["quantized_weights"] == 3
    if sys.platform != "darwin":
        assert runner.mode == "proxy" and "Core ML runtime" in runner.reason
    out = runner.run(state.data.evaluation)
    reference = float_outputs(model, state.data.evaluation)
    assert out.shape == reference.shape
    assert sqnr_db(reference, out) > 20.0


def test_w8_proxy_agrees_with_float(tmp_path, cnn_example):
    model = tiny_cnn()
    state, ctx = make(model, cnn_example, tmp_path, "w8")

    state = build(state, ctx)
    out = ctx.backend.runner(state, ctx).run(state.data.evaluation)

    reference = float_outputs(model, state.data.evaluation)
    assert sqnr_db(reference, out) > 30.0
    assert np.array_equal(out.argmax(1), reference.argmax(1))


def test_proxy_weights_equal_the_weights_stored_in_the_package(tmp_path, cnn_example):
    """The stand-in's int8-decoded weights are exactly the ones coremltools reads from the .mlpackage."""
    import coremltools as ct
    import coremltools.optimize.coreml as cto

    from edgekit.backends.coreml.proxy import MilRunner, load_program

    state, ctx = make(tiny_cnn(), cnn_example, tmp_path, "w8")
    state = build(state, ctx)

    program = load_program(state.artifact)
    runner = MilRunner(program)
    decoded = [op for op in program.functions["main"].operations if op.op_type == "constexpr_affine_dequantize"]
    stored = cto.get_weights_metadata(ct.models.MLModel(str(state.artifact), skip_model_load=True), weight_threshold=0)
    assert len(decoded) == 3
    for op in decoded:
        name = op.outputs[0].name
        fields = next(c.params_name_mapping for w in stored.values() for c in w.child_ops if c.name == name)
        data, scale, zero = (stored[fields[field]].val for field in ("quantized_data", "scale", "zero_point"))
        assert data.dtype == np.int8 and np.all(zero == 0)  # symmetric int8, one scale per output channel
        assert scale.shape == (data.shape[0],)
        from_package = (
            (data.astype(np.float32) - zero.reshape(-1, *[1] * (data.ndim - 1)))
            * scale.astype(np.float32).reshape(-1, *[1] * (data.ndim - 1))
        ).astype(np.float16)
        assert np.array_equal(runner.consts[name].numpy(), from_package.astype(np.float32))
        # coremltools' own decoding of the op agrees as well
        assert np.array_equal(runner.consts[name].numpy(), op.materialized_val_inference().astype(np.float32))


def test_fp16_scheme_is_not_compressed(tmp_path, cnn_example):
    model = tiny_cnn()
    state, ctx = make(model, cnn_example, tmp_path, "fp16")

    state = build(state, ctx)

    assert state.facts["quantize"]["quantized_weights"] == 0
    assert state.facts["export"]["weights_ratio_to_fp16"] == 1.0
    out = ctx.backend.runner(state, ctx).run(state.data.evaluation)
    assert sqnr_db(float_outputs(model, state.data.evaluation), out) > 40.0


def test_warns_when_nothing_is_quantized(tmp_path, cnn_example):
    state, ctx = make(tiny_cnn(), cnn_example, tmp_path, "w8", weight_threshold=100_000)

    state = build(state, ctx)

    assert state.facts["quantize"]["quantized_weights"] == 0
    assert any("no weight was quantized" in w for w in state.warnings)


def test_encoder_with_int64_tokens_converts(tmp_path):
    model = tiny_encoder()
    example = model.example_input().numpy()
    state, ctx = make(model, example, tmp_path, "w8")

    state = build(state, ctx)
    out = ctx.backend.runner(state, ctx).run(state.data.evaluation)

    assert state.facts["export"]["input"]["dtype"] == "int32"
    assert state.facts["quantize"]["quantized_weights"] >= 5
    assert sqnr_db(float_outputs(model, state.data.evaluation), out) > 25.0


def test_functional_max_pool_with_default_stride_converts(tmp_path):
    """apple/coremltools#2415: F.max_pool2d(x, 2) breaks torch.export conversion unless stride is spelled out."""

    class Pool(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)

        def forward(self, x):
            return torch.nn.functional.max_pool2d(torch.relu(self.conv(x)), 2).flatten(1)

    torch.manual_seed(0)
    model = Pool().eval()
    example = np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32)
    state, ctx = make(model, example, tmp_path, "fp16")

    state = ctx.backend.export(state, ctx)
    out = ctx.backend.runner(state, ctx).run(state.data.evaluation)

    assert state.facts["export"]["frontend"] == "torch.export"
    assert sqnr_db(float_outputs(model, state.data.evaluation), out) > 40.0


@pytest.mark.parametrize(
    "options", [{"minimum_deploy_target": "iOS17"}, {"compute_units": "NPU"}, {"weight_threshold": -1}]
)
def test_bad_option_is_a_config_error(options):
    with pytest.raises(ConfigError):
        get_backend("coreml").check_options(options)


def test_unknown_option_suggests_the_right_key():
    with pytest.raises(ConfigError) as info:
        get_backend("coreml").check_options({"compute_unit": "ALL"})
    assert "compute_units" in (info.value.hint or "")


def test_w8a8_on_ios16_is_a_config_error(tmp_path, cnn_example):
    state, ctx = make(tiny_cnn(), cnn_example, tmp_path, "w8a8", minimum_deployment_target="iOS16")

    with pytest.raises(ConfigError, match="iOS 17"):
        ctx.backend.export(state, ctx)


def test_versions_and_contract(tmp_path, cnn_example):
    state, ctx = make(tiny_cnn(), cnn_example, tmp_path, "w8", compute_units="CPU_AND_NE")

    contract = ctx.backend.runtime_contract(state, ctx)

    assert contract["runtime"] == "coreml" and contract["format"] == "mlprogram"
    assert contract["minimum_deployment_target"] == "iOS17" and contract["compute_units"] == "CPU_AND_NE"
    assert set(ctx.backend.versions()) == {"coremltools", "torch"}


@pytest.mark.macos
@macos
def test_runtime_matches_proxy_on_macos(tmp_path, cnn_example):
    model = tiny_cnn()
    state, ctx = make(model, cnn_example, tmp_path, "w8")
    state = build(state, ctx)

    runner = ctx.backend.runner(state, ctx)
    out = runner.run(state.data.evaluation)

    assert runner.mode == "runtime"
    assert sqnr_db(float_outputs(model, state.data.evaluation), out) > 25.0
    assert ctx.backend.reference_runner(state, ctx) is not None


def test_no_reference_runner_off_macos(tmp_path, cnn_example):
    if sys.platform == "darwin":
        pytest.skip("macOS has the Core ML runtime")
    state, ctx = make(tiny_cnn(), cnn_example, tmp_path, "w8")

    assert ctx.backend.reference_runner(state.evolve(reference_artifact=tmp_path), ctx) is None
