"""One suite every registered backend passes: a new backend gets these tests for free.

For each backend, through the contract in `edgekit/backends/base.py` only: compile a tiny seeded
model, run the artifact, match float, build and verify an artifact end to end (golden outputs),
refuse bad options with the key named, and report a missing package as exit 4 with its pip extra.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import edgekit
from edgekit.backends import REGISTRY, IoContract, TensorSpec, get_backend
from edgekit.errors import ConfigError, ExitStatus, MissingDependencyError
from edgekit.metrics import sqnr_db
from edgekit.recipe import QuantizeConfig, Scheme, build_recipe, parse_table
from edgekit.targets import available_targets, load_target
from tests.conftest import assert_valid_manifest
from tests.tiny_models import tiny_cnn

# One bundled target per backend: the conformance suite needs a real target file for each.
TARGETS = {
    load_target(str(p)).backend: name for name, p in available_targets().items() if name in ("rpi", "android", "ios")
}
BACKENDS = sorted(REGISTRY)
# Tiny models: Core ML leaves weights under 2048 elements uncompressed unless told otherwise.
TINY = {"coreml": {"weight_threshold": 0}}


def test_every_registered_backend_has_a_target() -> None:
    assert sorted(TARGETS) == BACKENDS


def _options(name: str) -> object:
    backend = get_backend(name)
    table = {**load_target(TARGETS[name]).options, **TINY.get(name, {})}
    return parse_table(backend.Options, table, "options", what="option")


def _io() -> IoContract:
    return IoContract(
        inputs=(TensorSpec(name="input", shape=(1, 1, 8, 8), dtype="float32"),),
        outputs=(TensorSpec(name="output", shape=(1, 10), dtype="float32"),),
    )


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"calibration": rng.standard_normal((32, 1, 8, 8)).astype(np.float32),
            "evaluation": rng.standard_normal((16, 1, 8, 8)).astype(np.float32)}  # fmt: skip


@pytest.mark.parametrize("name", BACKENDS)
def test_declares_the_contract(name: str) -> None:
    backend = get_backend(name)

    assert backend.name == name and backend.artifact_name.startswith("model.")
    assert Scheme.AUTO in backend.schemes and isinstance(backend.stores_sparse_weights, bool)
    assert dataclasses.is_dataclass(backend.Options) and backend.Options() == backend.Options()  # defaults in one place
    assert backend.check(build_recipe(), backend.Options()) == []  # everything installed, the defaults are valid
    assert set(backend.versions()) and "not installed" not in backend.versions().values()


@pytest.mark.parametrize("name", BACKENDS)
def test_compiles_a_tiny_model_that_runs_and_matches_float(
    name: str, images: dict[str, np.ndarray], tmp_path: Path
) -> None:
    backend, model, io = get_backend(name), tiny_cnn(), _io()

    compiled = backend.compile(model, io, {"input": images["evaluation"][:1]}, {"input": images["calibration"]},
                               QuantizeConfig(), _options(name), tmp_path)  # fmt: skip
    runner = backend.open(compiled.artifact, io, _options(name))
    out = runner.run({"input": images["evaluation"]})

    assert compiled.artifact.exists() and compiled.artifact.parent == tmp_path
    assert compiled.float_reference is not None and compiled.float_reference.exists()
    assert compiled.scheme is not Scheme.AUTO and compiled.scheme in backend.schemes
    assert {"quantize", "export"} <= set(compiled.facts) and compiled.runtime
    assert list(out) == ["output"] and out["output"].shape == (16, 10)
    with torch.no_grad():
        reference = model(torch.from_numpy(images["evaluation"])).numpy()
    assert sqnr_db(reference, out["output"]) > 20.0
    assert runner.mode == ("proxy" if name == "coreml" and sys.platform != "darwin" else "runtime")


@pytest.mark.parametrize("name", BACKENDS)
def test_float_scheme_is_the_float_reference(name: str, images: dict[str, np.ndarray], tmp_path: Path) -> None:
    backend, model, io = get_backend(name), tiny_cnn(), _io()
    float_scheme = Scheme.FP32 if Scheme.FP32 in backend.schemes else Scheme.FP16

    compiled = backend.compile(model, io, {"input": images["evaluation"][:1]}, {"input": images["calibration"]},
                               QuantizeConfig(scheme=float_scheme), _options(name), tmp_path)  # fmt: skip
    out = backend.open(compiled.artifact, io, _options(name)).run({"input": images["evaluation"]})

    with torch.no_grad():
        reference = model(torch.from_numpy(images["evaluation"])).numpy()
    assert compiled.scheme is float_scheme
    assert sqnr_db(reference, out["output"]) > 40.0  # float in the runtime: only rounding differs


@pytest.mark.parametrize("name", BACKENDS)
def test_builds_and_verifies_end_to_end_with_golden_outputs(name: str, tmp_path: Path) -> None:
    model = tiny_cnn()
    path, data = tmp_path / "tiny.pt2", tmp_path / "data.npz"
    torch.export.save(torch.export.export(model, (torch.zeros(1, 1, 8, 8),)), str(path))
    inputs = np.random.default_rng(1).standard_normal((96, 1, 8, 8)).astype(np.float32)
    np.savez(data, inputs=inputs)
    overrides = ("latency.enabled=false",)
    target = tmp_path / "target.toml"
    text = (Path(load_target(TARGETS[name]).path or "")).read_text()
    if name == "coreml":
        text = text.replace("weight_threshold = 2048", "weight_threshold = 0")
    target.write_text(text)

    result = edgekit.build(str(path), target=str(target), data=data, out_dir=tmp_path / "dist", overrides=overrides)
    found = edgekit.verify(result.path)

    manifest = assert_valid_manifest(result.path)
    assert manifest["golden"]["count"] == 4 and manifest["accuracy"]["status"] in ("passed", "proxy")
    assert found.golden.samples == 4 and found.golden.within_tolerance and found.exit_status == ExitStatus.OK
    assert found.status == manifest["accuracy"]["status"]
    options = get_backend(name).Options
    assert parse_table(options, manifest["runtime"]["options"], "options", what="option") == _options(name)


@pytest.mark.parametrize("name", BACKENDS)
def test_compile_refuses_a_scheme_it_cannot_build(name: str, images: dict[str, np.ndarray], tmp_path: Path) -> None:
    backend = get_backend(name)
    foreign = next(s for s in Scheme if s not in backend.schemes)

    with pytest.raises(ConfigError, match=foreign.value):
        backend.compile(tiny_cnn(), _io(), {"input": images["evaluation"][:1]}, {"input": images["calibration"]},
                        QuantizeConfig(scheme=foreign), _options(name), tmp_path)  # fmt: skip
    assert list(tmp_path.iterdir()) == []  # refused before any work


@pytest.mark.parametrize("name", BACKENDS)
def test_bad_options_are_refused_with_the_key_named(name: str) -> None:
    backend = get_backend(name)
    field = dataclasses.fields(backend.Options)[0]

    with pytest.raises(ConfigError, match="options.colour") as unknown:
        parse_table(backend.Options, {"colour": 1}, "options", what="option")
    with pytest.raises(ConfigError, match=f"options.{field.name}"):
        parse_table(backend.Options, {field.name: "no-such-value"}, "options", what="option")

    assert unknown.value.status == ExitStatus.CONFIG


@pytest.mark.parametrize("name", BACKENDS)
def test_a_missing_runtime_is_exit_4_with_the_pip_extra(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = get_backend(name)
    runtime = {"onnxruntime": "onnxruntime", "executorch": "executorch", "coreml": "coremltools"}.get(name, name)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda mod, *a: None if mod == runtime else real(mod, *a))

    with pytest.raises(MissingDependencyError) as caught:
        edgekit.resolve(TARGETS[name])

    assert caught.value.status == ExitStatus.MISSING_DEPENDENCY
    assert runtime in caught.value.message and f"pip install 'edgekit-deploy[{backend.extra}]'" in (
        caught.value.hint or ""
    )
