"""examples/iot-pipeline: build for every target, verify, bundle and index, through edgekit's Python API only."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "examples" / "iot-pipeline" / "pipeline.py"


def _pipeline(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    out = tmp_path / "iot"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), *args], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=1200, check=False)  # fmt: skip
    return done, json.loads((out / "index.json").read_text(encoding="utf-8"))


@pytest.mark.slow
def test_the_pipeline_builds_verifies_bundles_and_indexes_every_target(tmp_path: Path) -> None:
    done, index = _pipeline(tmp_path, "--set", "latency.enabled=false", "--bench")

    assert done.returncode == 0, done.stderr[-3000:]
    entries = {entry["target"]: entry for entry in index["artifacts"]}
    assert list(entries) == ["rpi", "android", "ios"] and index["ok"]
    out = tmp_path / "iot"
    for target, entry in entries.items():
        bundle = out / entry["bundle"]["path"]
        assert hashlib.sha256(bundle.read_bytes()).hexdigest() == entry["bundle"]["sha256"]
        assert bundle.stat().st_size == entry["bundle"]["bytes"] and (out / entry["artifact"]).exists()
        metrics = entry["accuracy"]["metrics"]
        assert entry["accuracy"]["gate"]["passed"] and metrics["top1_drop"] <= 1.0 and metrics["float_top1"] > 95
        assert 0 < entry["size"]["over_float"] < 0.5, target  # int8 weights: well under half the float model
    assert entries["rpi"]["verify"]["status"] == entries["android"]["verify"]["status"] == "passed"
    assert entries["ios"]["verify"]["status"] == "proxy"  # no Core ML runtime here, said so
    assert entries["rpi"]["bench"]["median_ms"] > 0 and entries["android"]["bench"]["peak_memory_growth_bytes"] > 0
    assert not entries["ios"]["bench"]["measured"] and "cannot benchmark" in entries["ios"]["bench"]["reason"]


def test_a_model_that_fails_its_gate_is_indexed_as_failed_and_sets_the_exit_status(tmp_path: Path) -> None:
    import numpy as np
    import torch

    from tests.cli.test_trust import OutlierMLP

    model = OutlierMLP().eval()
    inputs = np.random.default_rng(2).standard_normal((200, 16)).astype(np.float32)
    with torch.no_grad():
        labels = model(torch.from_numpy(inputs)).argmax(1).numpy()
    torch.export.save(torch.export.export(model, (torch.from_numpy(inputs[:1]),)), str(tmp_path / "collapse.pt2"))
    np.savez(tmp_path / "collapse.npz", inputs=inputs, labels=labels)

    # repair off: the repair ladder would rescue this model, and the test is about an unrepaired failure
    done, index = _pipeline(tmp_path, "--targets", "rpi", "--model", "collapse=collapse.pt2,collapse.npz",
                            "--set", "latency.enabled=false", "--set", "quantize.scheme=int8-static",
                            "--set", "repair.enabled=false")  # fmt: skip

    (entry,) = index["artifacts"]
    assert done.returncode == 7 and not index["ok"], done.stderr[-3000:]
    assert entry["status"] == "error" and entry["exit_status"] == 7 and "accuracy gate failed" in entry["error"]
    assert entry["accuracy"]["status"] == "failed" and entry["accuracy"]["metrics"]["top1_drop"] > 50
    assert entry["verify"]["status"] == "failed" and (tmp_path / "iot" / entry["bundle"]["path"]).is_file()
