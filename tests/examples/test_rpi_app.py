"""The Raspberry Pi sample app classifies with only onnxruntime + numpy, driven by the manifest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.conftest import DIGITS, ROOT

APP = ROOT / "examples" / "rpi" / "classify.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(APP), *args], capture_output=True, text=True, timeout=120)


def test_app_imports_nothing_but_onnxruntime_and_numpy() -> None:
    imports = {
        line.split()[1].split(".")[0] for line in APP.read_text().splitlines() if line.startswith(("import ", "from "))
    }
    assert imports <= {"__future__", "argparse", "json", "sys", "pathlib", "numpy", "onnxruntime"}


def test_app_self_test_passes_on_a_built_artifact(digits_rpi: Path) -> None:
    result = _run(str(digits_rpi), "--self-test")
    assert result.returncode == 0, result.stderr
    assert "self-test passed" in result.stdout


def test_app_classifies_raw_pixels_with_the_manifest_preprocessing(digits_rpi: Path, tmp_path: Path) -> None:
    with np.load(DIGITS / "data.npz") as data:
        pixels, labels = data["pixels"][:50], data["labels"][:50]
    np.save(tmp_path / "pixels.npy", pixels)

    result = _run(str(digits_rpi), str(tmp_path / "pixels.npy"))

    assert result.returncode == 0, result.stderr
    predicted = [line.split("\t")[0] for line in result.stdout.splitlines()]
    manifest_labels = json.loads((digits_rpi / "manifest.json").read_text())["io"]["labels"]
    accuracy = np.mean([p == manifest_labels[y] for p, y in zip(predicted, labels, strict=True)])
    assert accuracy >= 0.9


def test_app_reads_a_pgm_image(digits_rpi: Path, tmp_path: Path) -> None:
    with np.load(DIGITS / "data.npz") as data:
        image, label = data["pixels"][0], int(data["labels"][0])
    (tmp_path / "digit.pgm").write_bytes(b"P5\n# a digit\n8 8\n255\n" + image.tobytes())

    result = _run(str(digits_rpi), str(tmp_path / "digit.pgm"))

    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\t")[0] == str(label)
