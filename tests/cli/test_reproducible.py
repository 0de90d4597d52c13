"""The same model, data, recipe and toolchain give byte-identical artifacts and bundles.

Each target is built twice into two output folders, from one model file and one data file; every
file of the artifact folder (the artifact, golden samples, recipe.lock.toml and manifest.json) and
the bundle must have the same sha256. What varies between runs (the time of the build, host latency,
stage timings) lives in `measured.json`, beside the manifest and outside both, with report.html that
shows it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import edgekit
from edgekit.manifest import MEASURED, OUTSIDE_REPRODUCIBLE
from tests.conftest import assert_valid_manifest
from tests.tiny_models import tiny_cnn

FACTORY = """
import torch
from torch import nn


def build() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )
    model.train()
    with torch.no_grad():
        model(torch.randn(64, 1, 8, 8))
    return model.eval()
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Return (tiny.pt2, data.npz): a seeded TinyCNN and 96 inputs labelled by the float model itself."""
    folder = tmp_path_factory.mktemp("tiny")
    model = tiny_cnn()
    inputs = np.random.default_rng(0).standard_normal((96, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        labels = model(torch.from_numpy(inputs)).argmax(1).numpy()
    torch.export.save(torch.export.export(model, (torch.from_numpy(inputs[:1]),)), str(folder / "tiny.pt2"))
    np.savez(folder / "data.npz", inputs=inputs, labels=labels)
    return folder / "tiny.pt2", folder / "data.npz"


def digests(folder: Path) -> dict[str, str]:
    """Return the sha256 of every file under `folder`, by relative path (inside .mlpackage too)."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def build_twice(model: str, data: Path, tmp_path: Path, **options: object) -> tuple[Path, Path]:
    built = []
    for run in ("first", "second"):
        result = edgekit.build(model, data=data, out_dir=tmp_path / run, **options)  # type: ignore[arg-type]
        assert_valid_manifest(result.path)
        built.append(result.path)
    return built[0], built[1]


def assert_identical(first: Path, second: Path, tmp_path: Path) -> None:
    found, again = digests(first), digests(second)
    assert MEASURED in found  # measured facts exist, beside the manifest ...
    for name in OUTSIDE_REPRODUCIBLE:  # ... and they, and the report that shows them, may differ
        found.pop(name, None), again.pop(name, None)
    assert sorted(found) == sorted(again)
    assert {k: v for k, v in found.items() if again[k] != v} == {}
    bundles = [edgekit.bundle(folder, tmp_path / "bundles" / f"{i}.tar.gz") for i, folder in enumerate((first, second))]
    assert bundles[0].read_bytes() == bundles[1].read_bytes()


@pytest.mark.parametrize("target", ["rpi", "android", "ios"])
def test_two_builds_give_identical_bytes(target: str, tiny: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = tiny
    first, second = build_twice(str(model), data, tmp_path, target=target, overrides=("latency.runs=5",))

    assert_identical(first, second, tmp_path)
    measured = json.loads((first / MEASURED).read_text())
    assert measured["created"] and "seconds_by_stage" in measured["build"]
    manifest = json.loads((first / "manifest.json").read_text())
    assert manifest["reproducibility"]["reproducible"] is True
    assert "created" not in manifest and "latency" not in manifest


def test_a_pruned_build_is_reproducible_stops_by_steps_and_compares_with_the_unpruned_float(
    tiny: tuple[Path, Path], tmp_path: Path
) -> None:
    factory = tmp_path / "pruned_net.py"
    factory.write_text(FACTORY)
    options = ("prune.ratio=0.3", "prune.recovery.steps=40", "latency.runs=5", "gate.max_top1_drop=100")
    first, second = build_twice(f"{factory}:build", tiny[1], tmp_path, target="rpi", overrides=options)

    assert_identical(first, second, tmp_path)
    manifest = json.loads((first / "manifest.json").read_text())
    recovery = manifest["prune"]["recovery"]
    assert recovery["steps"] == 40 and recovery["stopped_by"] == "steps" and "seconds" not in recovery
    # "vs float" is the user's model, unpruned; the pruned float is there for reference, and smaller.
    size = manifest["size"]
    assert size["pruned_float_bytes"] < size["float_reference_bytes"]
    assert size["artifact_over_float"] == size["artifact_bytes"] / size["float_reference_bytes"]
    latency = json.loads((first / MEASURED).read_text())["latency"]
    assert {"float", "pruned_float", "artifact"} <= set(latency)
    assert latency["artifact_over_float"] == latency["artifact"]["median_ms"] / latency["float"]["median_ms"]


def test_a_time_budget_is_recorded_as_making_the_build_not_reproducible(
    tiny: tuple[Path, Path], tmp_path: Path
) -> None:
    factory = tmp_path / "budget_net.py"
    factory.write_text(FACTORY)
    options = ("prune.ratio=0.3", "prune.recovery.steps=20", "prune.recovery.time_budget_s=600",
               "latency.enabled=false", "gate.max_top1_drop=100")  # fmt: skip

    result = edgekit.build(f"{factory}:build", target="rpi", data=tiny[1], out_dir=tmp_path, overrides=options)

    found = assert_valid_manifest(result.path)["reproducibility"]
    assert found["reproducible"] is False and "time_budget_s" in found["why_not"]
