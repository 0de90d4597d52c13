"""Pruning shows in the artifact: fewer parameters and a smaller file, accuracy held by recovery."""

from __future__ import annotations

from pathlib import Path

import pytest

import edgekit
from tests.conftest import DIGITS

FACTORY = f"{DIGITS / 'model.py'}:build"
FAST = ("latency.runs=10", "prune.recovery.steps=150")


@pytest.mark.slow
@pytest.mark.parametrize(("target", "recipe"), [("rpi", "rpi-pruned-int8"), ("android", "android-pruned-int8")])
def test_digits_30pct_structured_is_smaller_and_within_1_5_points(tmp_path: Path, target: str, recipe: str) -> None:
    common = {"target": target, "weights": DIGITS / "weights.pt", "data": DIGITS / "data.npz"}
    plain = edgekit.build(
        FACTORY, out_dir=tmp_path / "plain", overrides=("latency.runs=10",), **common
    ).manifest.to_json()

    pruned = edgekit.build(
        FACTORY, recipe=recipe, out_dir=tmp_path / "pruned", overrides=FAST, **common
    ).manifest.to_json()

    prune = pruned["prune"]
    assert prune["method"] == "structured" and prune["ratio"] == 0.3
    assert prune["parameters"]["after"] < prune["parameters"]["before"]
    assert prune["macs"]["after"] < prune["macs"]["before"]
    assert prune["recovery"]["loss_after"] < prune["recovery"]["loss_before"]
    assert pruned["accuracy"]["status"] == "passed" and pruned["accuracy"]["metrics"]["top1_drop"] <= 1.5
    assert pruned["size"]["artifact_bytes"] < plain["size"]["artifact_bytes"]


@pytest.mark.slow
def test_ios18_50pct_sparse_package_is_smaller_than_w8(tmp_path: Path) -> None:
    common = {"target": "ios18", "weights": DIGITS / "weights.pt", "data": DIGITS / "data.npz"}
    w8 = edgekit.build(FACTORY, out_dir=tmp_path / "w8", **common).manifest.to_json()

    sparse = edgekit.build(
        FACTORY, recipe="ios-sparse-w8", out_dir=tmp_path / "sparse", overrides=FAST, **common
    ).manifest.to_json()

    assert sparse["prune"]["sparsity"]["overall"] >= 0.4
    assert sparse["accuracy"]["status"] == "proxy" and sparse["accuracy"]["metrics"]["top1_drop"] <= 1.5
    assert sparse["size"]["artifact_bytes"] < w8["size"]["artifact_bytes"]


def test_pruning_a_pt2_asks_for_the_python_class(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from edgekit.cli import main
    from edgekit.errors import ExitStatus

    result = cli.invoke(
        main,
        ["build", str(DIGITS / "model.pt2"), "--target", "rpi", "--set", "prune.ratio=0.3", "--out", str(tmp_path)],
    )

    assert result.exit_code == ExitStatus.BAD_INPUT and "--weights" in result.stderr
