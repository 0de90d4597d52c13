"""End to end on the ios target: an ML program, checked by an honest proxy on Linux."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import edgekit
from tests.cli.test_build_android import _random_init
from tests.conftest import DIGITS, ROOT


@pytest.mark.parametrize("recipe", ["ios-w8", "ios-w8a8"])
def test_digits_ios_within_a_point(tmp_path: Path, recipe: str) -> None:
    manifest = edgekit.build(
        str(DIGITS / "model.pt2"), target="ios", recipe=recipe, data=DIGITS / "data.npz", out_dir=tmp_path
    ).manifest.to_json()

    accuracy = manifest["accuracy"]
    expected = "passed" if sys.platform == "darwin" else "proxy"
    assert accuracy["status"] == expected and accuracy["metrics"]["top1_drop"] <= 1.0
    if expected == "proxy":
        assert "macOS" in accuracy["reason"] and manifest["latency"]["measured"] is False
    assert manifest["quantize"]["scheme"] == recipe.removeprefix("ios-")
    assert manifest["runtime"]["minimum_deployment_target"] == "iOS17"
    assert (tmp_path / "digits-ios" / "model.mlpackage" / "Manifest.json").is_file()


def test_encoder_builds_for_ios(tmp_path: Path) -> None:
    manifest = edgekit.build(
        f"{ROOT / 'examples' / 'encoder' / 'model.py'}:build", target="ios", out_dir=tmp_path
    ).manifest.to_json()
    assert manifest["accuracy"]["metrics"]["cosine"] > 0.99


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18"])
def test_torchvision_w8_weights_shrink(tmp_path: Path, name: str) -> None:
    manifest = edgekit.build(
        str(_random_init(name, tmp_path)), target="ios", out_dir=tmp_path / "dist"
    ).manifest.to_json()

    assert manifest["export"]["weights_ratio_to_fp16"] <= 0.55
    assert manifest["export"]["weights_ratio_to_fp32"] <= 0.28


@pytest.mark.skipif(sys.platform == "darwin", reason="on macOS the Core ML runtime runs every op")
def test_an_op_the_stand_in_lacks_keeps_the_package_with_status_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgekit.backends.coreml import proxy

    monkeypatch.delitem(proxy.OPS, "relu")  # the digits CNN's ReLUs now have no kernel on this host

    result = edgekit.build(
        str(DIGITS / "model.pt2"), target="ios", data=DIGITS / "data.npz", out_dir=tmp_path,
        overrides=("latency.enabled=false",),
    )  # fmt: skip

    accuracy = result.manifest.accuracy
    assert accuracy.status == "skipped" and "relu" in accuracy.reason and accuracy.gate is None
    assert (result.path / "model.mlpackage" / "Manifest.json").is_file() and result.manifest.golden.count == 0
    assert any("relu" in w for w in result.manifest.warnings)
    assert edgekit.verify(result.path).status == "skipped"
