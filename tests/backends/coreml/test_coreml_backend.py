"""The Core ML backend on tiny seeded models: compression facts, the host stand-in, metadata, sparse weights, checks.

Building, running and golden-matching a tiny model, rejecting bad options and reporting a missing package are
checked for every backend in test_conformance.py; this module checks what only Core ML does.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import coremltools as ct
import coremltools.optimize.coreml as cto
import numpy as np
import pytest
import torch

from edgekit import metrics
from edgekit.backends import RunnerUnavailable, get_backend
from edgekit.backends.coreml import proxy
from edgekit.backends.coreml.backend import PROXY_REASON, CoreMLOptions
from edgekit.metrics import sqnr_db
from edgekit.recipe import Scheme, build_recipe, parse_table
from tests.tiny_models import TinyBuild, compile_tiny, tiny_cnn, tiny_encoder, torch_outputs

off_macos = pytest.mark.skipif(sys.platform == "darwin", reason="macOS runs the Core ML runtime, not the stand-in")
on_macos = pytest.mark.skipif(sys.platform != "darwin", reason="the Core ML runtime exists only on macOS")
# Tiny models: every weight is below coremltools' default 2048-element threshold, so lower it.
TINY = {"weight_threshold": 0}
PREPROCESSING = {"layout": "NCHW", "color": "grayscale", "resize": [], "scale": 1 / 16, "mean": [], "std": []}
METADATA = {"preprocessing": PREPROCESSING, "labels": list("abcdefghij")}
SPEC_VERSION = {"iOS17": 8, "iOS18": 9}  # the Core ML model specification version each OS release reads


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "example": rng.standard_normal((1, 1, 8, 8)).astype(np.float32),
        "calibration": rng.standard_normal((16, 1, 8, 8)).astype(np.float32),
        "evaluation": rng.standard_normal((8, 1, 8, 8)).astype(np.float32),
    }


def _compile(images, workdir: Path, scheme: str, model=None, **kwargs) -> TinyBuild:
    model = tiny_cnn() if model is None else model
    return compile_tiny("coreml", model, images["example"], images["calibration"], scheme, workdir, **kwargs)


@pytest.fixture(scope="module")
def w8(images, tmp_path_factory) -> TinyBuild:
    return _compile(images, tmp_path_factory.mktemp("w8"), "w8", metadata=METADATA, **TINY)


@pytest.fixture(scope="module")
def w8a8(images, tmp_path_factory) -> TinyBuild:
    return _compile(images, tmp_path_factory.mktemp("w8a8"), "w8a8", **TINY)


@pytest.fixture(scope="module")
def fp16(images, tmp_path_factory) -> TinyBuild:
    return _compile(images, tmp_path_factory.mktemp("fp16"), "fp16", **TINY)


def half_zeroed_cnn() -> torch.nn.Module:
    """Return tiny_cnn with the smaller half of its second conv's weights zeroed, as the prune stage would."""
    model = tiny_cnn()
    with torch.no_grad():
        weight = model.features[4].weight
        weight[weight.abs() <= weight.abs().median()] = 0
    return model


@pytest.fixture(scope="module")
def sparse_w8(images, tmp_path_factory) -> tuple[torch.nn.Module, TinyBuild]:
    model = half_zeroed_cnn()
    build = _compile(
        images,
        tmp_path_factory.mktemp("sparse"),
        "w8",
        model=model,
        sparse_weights=True,
        minimum_deployment_target="iOS18",
        compute_units="CPU_AND_NE",
        **TINY,
    )
    return model, build


def _ops(package: Path) -> Counter[str]:
    return Counter(op.op_type for op in proxy.load_program(package).functions["main"].operations)


def _spec_version(package: Path) -> int:
    return ct.models.MLModel(str(package), skip_model_load=True).get_spec().specificationVersion


def test_w8_converts_saves_and_records_facts(w8) -> None:
    compiled = w8.compiled

    q, e = compiled.facts["quantize"], compiled.facts["export"]

    assert compiled.scheme is Scheme.W8 and (compiled.artifact / "Manifest.json").is_file()
    assert compiled.artifact.name == "model.mlpackage"
    assert compiled.float_reference == compiled.artifact.parent / "reference" / "model-fp32.mlpackage"
    assert q["scheme"] == "w8" and q["quantized_weights"] == 3 and q["float_weights"] == 0
    assert q["constexpr_ops"] == {"constexpr_affine_dequantize": 3} and q["activation_quantize_ops"] == 0
    assert e["frontend"] == "torch.export" and e["minimum_deployment_target"] == "iOS17"
    assert 0 < e["weights_bytes"]["artifact"] < e["weights_bytes"]["fp16"] < e["weights_bytes"]["fp32"]
    assert _ops(compiled.artifact)["constexpr_affine_dequantize"] == 3  # the facts describe the saved package
    assert not compiled.warnings


def test_metadata_contract_is_written_into_artifact_and_reference(w8) -> None:
    compiled = w8.compiled

    meta = ct.models.MLModel(str(compiled.artifact), skip_model_load=True).user_defined_metadata
    reference = ct.models.MLModel(str(compiled.float_reference), skip_model_load=True).user_defined_metadata

    assert json.loads(meta["edgekit.preprocessing"]) == PREPROCESSING
    assert json.loads(meta["edgekit.labels"]) == list("abcdefghij")
    assert json.loads(meta["edgekit.input_dtypes"]) == {"input": "float32"}
    assert (meta["edgekit.compute_precision"], reference["edgekit.compute_precision"]) == ("fp16", "fp32")
    assert reference["edgekit.labels"] == meta["edgekit.labels"]
    assert compiled.facts["export"]["metadata_keys"] == sorted(k for k in meta if k.startswith("edgekit."))


def test_w8_proxy_applies_the_int8_weights(w8, fp16, images) -> None:
    reference = torch_outputs(tiny_cnn(), images["evaluation"])

    out = w8.run(images["evaluation"])

    assert sqnr_db(reference, out) > 30.0
    assert np.array_equal(out.argmax(1), reference.argmax(1))
    # int8 weights cost precision fp16 weights do not (about 50 dB against 70 dB here)
    assert sqnr_db(reference, out) < sqnr_db(reference, fp16.run(images["evaluation"])) - 10.0


def test_w8a8_inserts_activation_quantization_and_proxy_applies_it(w8a8, w8, images) -> None:
    model = tiny_cnn()
    in_range, out_of_range = images["evaluation"], 4 * images["evaluation"]

    out, clipped = w8a8.run(in_range), w8a8.run(out_of_range)

    q = w8a8.compiled.facts["quantize"]
    assert q["activation_quantize_ops"] > 0 and q["calibration_samples"] == 16 and q["quantized_weights"] == 3
    assert _ops(w8a8.compiled.artifact)["quantize"] == q["activation_quantize_ops"]
    assert sqnr_db(torch_outputs(model, in_range), out) > 20.0
    # Activations beyond the calibrated range saturate at int8's limit; W8, with float activations, does not.
    assert sqnr_db(torch_outputs(model, out_of_range), clipped) < 15.0
    assert sqnr_db(torch_outputs(model, out_of_range), w8.run(out_of_range)) > 30.0


def test_proxy_weights_equal_the_weights_stored_in_the_package(w8) -> None:
    """The stand-in's int8-decoded weights are exactly the ones coremltools reads from the .mlpackage."""
    artifact = w8.compiled.artifact
    program = proxy.load_program(artifact)
    runner = proxy.MilRunner(program)

    decoded = [op for op in program.functions["main"].operations if op.op_type == "constexpr_affine_dequantize"]
    stored = cto.get_weights_metadata(ct.models.MLModel(str(artifact), skip_model_load=True), weight_threshold=0)

    assert len(decoded) == 3
    for op in decoded:
        name = op.outputs[0].name
        fields = next(c.params_name_mapping for w in stored.values() for c in w.child_ops if c.name == name)
        data, scale, zero = (stored[fields[field]].val for field in ("quantized_data", "scale", "zero_point"))
        assert data.dtype == np.int8 and np.all(zero == 0)  # symmetric int8, one scale per output channel
        assert scale.shape == (data.shape[0],)
        per_channel = (-1, *[1] * (data.ndim - 1))
        from_package = (
            (data.astype(np.float32) - zero.reshape(per_channel)) * scale.astype(np.float32).reshape(per_channel)
        ).astype(np.float16)
        assert np.array_equal(runner.consts[name].numpy(), from_package.astype(np.float32))
        # coremltools' own decoding of the op agrees as well
        assert np.array_equal(runner.consts[name].numpy(), op.materialized_val_inference().astype(np.float32))


def test_fp16_scheme_is_not_compressed(fp16, images) -> None:
    reference = torch_outputs(tiny_cnn(), images["evaluation"])

    out = fp16.run(images["evaluation"])

    facts = fp16.compiled.facts
    assert facts["quantize"]["quantized_weights"] == 0 and facts["quantize"]["constexpr_ops"] == {}
    assert facts["export"]["weights_bytes"]["artifact"] == facts["export"]["weights_bytes"]["fp16"]
    assert facts["export"]["weights_ratio_to_fp16"] == 1.0
    assert sqnr_db(reference, out) > 40.0


@off_macos
def test_float_reference_runs_in_fp32(w8, images) -> None:
    reference = torch_outputs(tiny_cnn(), images["evaluation"])

    out = w8.run(images["evaluation"], artifact=w8.compiled.float_reference)

    np.testing.assert_allclose(out, reference, atol=1e-5)  # the fp16 package misses by ~2e-4


def test_warns_when_nothing_is_quantized(images, tmp_path) -> None:
    build = _compile(images, tmp_path, "w8", weight_threshold=100_000)

    assert build.compiled.facts["quantize"]["quantized_weights"] == 0
    assert any("no weight was quantized" in w for w in build.compiled.warnings)


def test_encoder_takes_int32_tokens_and_says_so(tmp_path) -> None:
    model = tiny_encoder()
    tokens = np.random.default_rng(0).integers(0, 100, size=(24, 16)).astype(np.int64)

    build = compile_tiny("coreml", model, tokens[:1], tokens[:16], "w8", tmp_path, **TINY)
    out = build.run(tokens[16:])  # int64 ids, as the app's tokenizer gives them

    meta = ct.models.MLModel(str(build.compiled.artifact), skip_model_load=True).user_defined_metadata
    assert build.compiled.runtime["input_dtypes"] == {"input": "int32"}
    assert json.loads(meta["edgekit.input_dtypes"]) == {"input": "int32"}
    assert build.compiled.facts["quantize"]["quantized_weights"] >= 5
    assert sqnr_db(torch_outputs(model, tokens[16:]), out) > 25.0


def test_functional_max_pool_with_default_stride_converts(images, tmp_path) -> None:
    """apple/coremltools#2415: F.max_pool2d(x, 2) breaks torch.export conversion unless stride is spelled out."""

    class Pool(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.max_pool2d(torch.relu(self.conv(x)), 2).flatten(1)

    torch.manual_seed(0)
    model = Pool().eval()

    build = _compile(images, tmp_path, "fp16", model=model)
    out = build.run(images["evaluation"])

    assert build.compiled.facts["export"]["frontend"] == "torch.export" and not build.compiled.warnings
    assert sqnr_db(torch_outputs(model, images["evaluation"]), out) > 40.0


def test_options_shape_the_package_and_its_runtime_contract(w8, sparse_w8) -> None:
    _, ios18 = sparse_w8

    versions = {
        build.options.minimum_deployment_target.value: _spec_version(build.compiled.artifact) for build in (w8, ios18)
    }

    assert versions == SPEC_VERSION
    runtime = ios18.compiled.runtime
    assert runtime["minimum_deployment_target"] == "iOS18" and runtime["compute_units"] == "CPU_AND_NE"
    assert w8.compiled.runtime["compute_units"] == "ALL"
    assert runtime["coremltools"] == ct.__version__


def test_sparse_weights_on_ios18_are_stored_sparse_int8(sparse_w8, images, tmp_path) -> None:
    model, build = sparse_w8
    dense = _compile(images, tmp_path, "w8", model=model, minimum_deployment_target="iOS18", **TINY)

    ops = _ops(build.compiled.artifact)
    out = build.run(images["evaluation"])

    facts = build.compiled.facts["quantize"]
    assert ops["constexpr_sparse_to_dense"] == 1 and ops["constexpr_sparse_blockwise_shift_scale"] == 1
    assert facts["sparse_weights"] == 1 and facts["quantized_weights"] == 3  # sparse int8 counts as int8 too
    assert sqnr_db(torch_outputs(model, images["evaluation"]), out) > 25.0
    sizes = build.compiled.facts["export"]["weights_bytes"], dense.compiled.facts["export"]["weights_bytes"]
    assert sizes[0]["artifact"] < sizes[1]["artifact"]  # the same model's zeros, stored densely


def test_proxy_decodes_sparse_weights_with_the_zeros_in_place(sparse_w8) -> None:
    model, build = sparse_w8
    program = proxy.load_program(build.compiled.artifact)

    runner = proxy.MilRunner(program)

    dense = [
        op.outputs[0].name for op in program.functions["main"].operations if op.op_type == "constexpr_sparse_to_dense"
    ]
    weight = runner.consts[dense[0]].numpy()
    expected = model.features[4].weight.detach().numpy()
    assert weight.shape == expected.shape
    assert np.array_equal(weight == 0, expected == 0)


def test_sparse_fp16_before_ios18_stores_a_bit_mask_and_fp16_values(images, tmp_path) -> None:
    model = half_zeroed_cnn()

    build = _compile(images, tmp_path, "fp16", model=model, sparse_weights=True, **TINY)
    out = build.run(images["evaluation"])

    ops = _ops(build.compiled.artifact)
    facts = build.compiled.facts["quantize"]
    assert ops["constexpr_sparse_to_dense"] == 1 and ops["constexpr_sparse_blockwise_shift_scale"] == 0
    assert facts["sparse_weights"] == 1 and facts["quantized_weights"] == 0
    assert sqnr_db(torch_outputs(model, images["evaluation"]), out) > 40.0


@pytest.mark.parametrize(
    ("target", "quantize", "prune", "expected"),
    [
        ("iOS16", {"scheme": "w8a8"}, {}, ["quantize.scheme"]),
        ("macOS13", {"scheme": "w8a8"}, {}, ["quantize.scheme"]),
        ("iOS17", {"scheme": "w8a8"}, {}, []),
        ("iOS16", {"scheme": "auto"}, {}, []),  # auto is W8, which iOS 16 loads
        ("iOS17", {"scheme": "w8a8", "calibration_method": "entropy"}, {}, ["quantize.calibration_method"]),
        ("iOS17", {"scheme": "w8"}, {"ratio": 0.5, "method": "unstructured"}, ["prune.method"]),
        ("iOS18", {"scheme": "w8"}, {"ratio": 0.5, "method": "unstructured"}, []),
        ("iOS17", {"scheme": "fp16"}, {"ratio": 0.5, "method": "n:m"}, []),
        ("iOS15", {"scheme": "fp16"}, {"ratio": 0.5, "method": "unstructured"}, ["prune.method"]),
        ("iOS15", {"scheme": "fp16"}, {"ratio": 0.5, "method": "structured"}, []),
    ],
)
def test_check_refuses_what_the_deployment_target_cannot_load(target, quantize, prune, expected) -> None:
    recipe = build_recipe({"quantize": quantize, "prune": prune})
    options = parse_table(CoreMLOptions, {"minimum_deployment_target": target}, "options", what="option")

    problems = get_backend("coreml").check(recipe, options)

    assert [p.key for p in problems] == expected


def test_w8a8_below_ios17_names_the_release_and_a_way_out() -> None:
    options = parse_table(CoreMLOptions, {"minimum_deployment_target": "iOS16"}, "options", what="option")

    (problem,) = get_backend("coreml").check(build_recipe({"quantize": {"scheme": "w8a8"}}), options)

    assert "iOS 17" in problem.message and "iOS16" in problem.message
    assert "quantize.scheme=w8" in (problem.hint or "")


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"minimum_deployment_target": "iOS19"}, "options.minimum_deployment_target"),
        ({"compute_units": "NPU"}, "options.compute_units"),
        ({"weight_threshold": -1}, "options.weight_threshold"),
    ],
)
def test_options_outside_their_declared_values_are_config_errors(options, key: str) -> None:
    from edgekit.errors import ConfigError

    with pytest.raises(ConfigError, match=key):
        parse_table(CoreMLOptions, options, "options", what="option")


@off_macos
def test_off_macos_the_stand_in_runs_and_says_so(w8) -> None:
    runner = w8.open()

    assert runner.mode == "proxy" and runner.reason == PROXY_REASON and "proxy" in runner.checked_with


@off_macos
def test_off_macos_an_op_without_a_kernel_leaves_nothing_to_run(w8, monkeypatch) -> None:
    monkeypatch.delitem(proxy.OPS, "linear")

    with pytest.raises(RunnerUnavailable) as caught:
        w8.open()

    assert "linear" in caught.value.reason and "Mac" in caught.value.reason


@pytest.mark.macos
@on_macos
@pytest.mark.parametrize("scheme", ["w8", "w8a8"])
def test_the_proxy_matches_the_core_ml_runtime_on_macos(scheme, images, tmp_path) -> None:
    """What Linux CI labels `proxy` must be what Core ML computes: run both on one package, on a Mac.

    Linux CI cannot run this test (there is no Core ML runtime there); README says so.
    """
    from edgekit.backends.coreml.backend import open_proxy

    build = _compile(images, tmp_path, scheme, **TINY)
    runtime = build.open()
    proxy_runner = open_proxy(build.compiled.artifact, build.io)
    feeds = {build.io.input_names[0]: images["evaluation"]}
    output = build.io.output_names[0]

    by_core_ml, by_proxy = runtime.run(feeds)[output], proxy_runner.run(feeds)[output]

    assert runtime.mode == "runtime" and proxy_runner.mode == "proxy"
    assert sqnr_db(by_core_ml, by_proxy) > 30.0  # Core ML computes in fp16 on the device: not bit-equal
    assert metrics.top1_agreement(by_core_ml, by_proxy) == 100.0


def test_importing_the_backend_stays_lean() -> None:
    code = (
        "import sys, edgekit.backends.coreml; heavy = {'torch', 'coremltools'} & set(sys.modules); print(sorted(heavy))"
    )

    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[3],
    )

    assert result.stdout.strip() == "[]"
