"""End to end on the android target: a .pte verified in the ExecuTorch runtime."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import edgekit
from tests.conftest import ROOT


def test_digits_android_is_int8_xnnpack_and_within_a_point(digits_android: Path) -> None:
    manifest = json.loads((digits_android / "manifest.json").read_text())

    assert (digits_android / "model.pte").is_file()
    accuracy = manifest["accuracy"]
    assert accuracy["status"] == "passed" and accuracy["checked_with"].startswith("executorch")
    assert accuracy["metrics"]["top1_drop"] <= 1.0
    assert manifest["quantize"]["scheme"] == "int8-static" and manifest["quantize"]["quantized_count"] >= 4
    assert manifest["export"]["delegated_nodes"] > 0
    runtime = manifest["runtime"]
    assert runtime["runtime"] == "executorch" and runtime["version"] == manifest["toolchain"]["executorch"]
    assert runtime["delegate"] == "XnnpackBackend" and runtime["abi"] == "arm64-v8a"
    assert json.loads((digits_android / "measured.json").read_text())["latency"]["measured"]
    assert manifest["size"]["artifact_over_float"] < 0.5


def test_verify_reruns_the_pte(digits_android: Path) -> None:
    assert edgekit.verify(digits_android).status == "passed"


def test_encoder_builds_with_the_dynamic_recipe(tmp_path: Path) -> None:
    spec = f"{ROOT / 'examples' / 'encoder' / 'model.py'}:build"

    manifest = edgekit.build(
        spec, target="android", recipe="android-int8-dynamic", out_dir=tmp_path, overrides=("latency.runs=10",)
    ).manifest.to_json()

    assert manifest["quantize"]["scheme"] == "int8-dynamic"
    assert manifest["accuracy"]["status"] == "skipped" and manifest["accuracy"]["metrics"]["cosine"] > 0.99
    assert manifest["io"]["inputs"][0]["dtype"] == "int64"


def _random_init(name: str, tmp_path: Path) -> Path:
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).train()
    with torch.no_grad():  # realistic BatchNorm statistics, weights unchanged
        for _ in range(2):
            model(torch.randn(8, 3, 224, 224))
    path = tmp_path / f"{name}.pt2"
    torch.export.save(torch.export.export(model.eval(), (torch.randn(1, 3, 224, 224),)), str(path))
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "max_size_ratio"), [("mobilenet_v2", 0.30), ("resnet18", 0.30), ("mobilenet_v3_small", 0.30)]
)
def test_torchvision_models_build_for_android(tmp_path: Path, name: str, max_size_ratio: float) -> None:
    manifest = edgekit.build(
        str(_random_init(name, tmp_path)), target="android", out_dir=tmp_path / "dist", overrides=("latency.runs=10",)
    ).manifest.to_json()

    assert manifest["accuracy"]["status"] == "skipped"
    assert manifest["size"]["artifact_over_float"] <= max_size_ratio
    assert manifest["export"]["delegated_nodes"] > 0
