"""End to end through the CLI on the rpi target: the artifact, its manifest, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgekit.cli import main
from edgekit.errors import ExitStatus
from tests.conftest import DIGITS
from tests.tiny_models import tiny_cnn


def _build(cli: CliRunner, *args: str) -> tuple[int, str, str]:
    result = cli.invoke(main, ["build", *args])
    return result.exit_code, result.stdout, result.stderr


def test_digits_artifact_is_int8_verified_and_self_describing(digits_rpi: Path) -> None:
    manifest = json.loads((digits_rpi / "manifest.json").read_text())

    assert sorted(p.name for p in digits_rpi.iterdir()) == [
        "golden",
        "manifest.json",
        "measured.json",
        "model.onnx",
        "recipe.lock.toml",
        "report.html",
    ]
    measured = json.loads((digits_rpi / "measured.json").read_text())  # what varies between two builds
    accuracy = manifest["accuracy"]
    assert accuracy["status"] == "passed" and accuracy["checked_with"].startswith("onnxruntime")
    assert accuracy["metrics"]["top1_drop"] <= 1.0
    assert accuracy["metrics"]["float_top1"] > 95.0
    quantize = manifest["quantize"]
    assert quantize["scheme"] == "int8-static" and quantize["format"] == "QDQ" and quantize["per_channel"] is True
    assert quantize["quantized_ops"].get("Conv") == 3 and not quantize["float_ops"]
    assert manifest["runtime"]["opset"] == 18 and manifest["target"]["device"]["name"] == "Raspberry Pi 5"
    assert manifest["io"]["labels"] == [str(d) for d in range(10)]
    assert manifest["io"]["preprocessing"]["std"] == [0.5]
    assert measured["latency"]["measured"] and measured["latency"]["artifact_over_float"] > 0
    assert manifest["size"]["artifact_over_float"] < 0.5
    assert manifest["data"]["calibration_size"] == 128 and manifest["data"]["evaluation_size"] == 472
    assert set(manifest["files"]) >= {"model.onnx", "recipe.lock.toml", "golden/0/inputs/input.npy"}
    assert manifest["reproducibility"]["reproducible"] and "report.html" not in manifest["files"]


def test_the_lock_file_holds_what_ran_not_auto(digits_rpi: Path) -> None:
    import tomllib

    from edgekit.recipe import build_recipe

    lock = tomllib.loads((digits_rpi / "recipe.lock.toml").read_text(encoding="utf-8"))
    manifest = json.loads((digits_rpi / "manifest.json").read_text())

    assert lock["quantize"]["scheme"] == "int8-static" and manifest["recipe"] == lock
    assert lock["data"]["calibration_size"] == 128 and lock["data"]["evaluation_size"] == 472
    assert build_recipe(lock).quantize.scheme.value == "int8-static"  # a rebuild from the lock reads it back
    assert "pid" not in json.loads((digits_rpi / "measured.json").read_text())["build"]
    assert manifest["source_model"]["sha256"]


def test_int8_weights_really_are_int8_in_the_file(digits_rpi: Path) -> None:
    import onnx

    model = onnx.load(str(digits_rpi / "model.onnx"))
    conv_weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    assert len(conv_weights) == 3


def test_inspect_and_verify_read_the_artifact(cli: CliRunner, digits_rpi: Path) -> None:
    inspected = cli.invoke(main, ["inspect", str(digits_rpi), "--json"])
    verified = cli.invoke(main, ["verify", str(digits_rpi), "--json"])

    assert inspected.exit_code == 0 and json.loads(inspected.stdout)["accuracy_status"] == "passed"
    assert verified.exit_code == 0 and json.loads(verified.stdout)["status"] == "passed"


def test_tampered_artifact_is_caught(cli: CliRunner, digits_rpi: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(digits_rpi, copy)
    np.save(copy / "golden" / "0" / "outputs" / "output.npy", np.zeros((1, 10), np.float32))

    result = cli.invoke(main, ["verify", str(copy)])

    assert result.exit_code == ExitStatus.BAD_INPUT and "sha256" in result.stderr


def test_json_summary_is_the_only_stdout(cli: CliRunner, tmp_path: Path) -> None:
    code, out, _ = _build(
        cli,
        str(DIGITS / "model.pt2"),
        "--target",
        "rpi",
        "--data",
        str(DIGITS / "data.npz"),
        "--out",
        str(tmp_path),
        "--json",
        "--set",
        "latency.enabled=false",
    )
    summary = json.loads(out)
    assert code == 0 and summary["ok"] and summary["accuracy_status"] == "passed"


def test_factory_spec_with_weights_builds(cli: CliRunner, tmp_path: Path) -> None:
    code, out, err = _build(
        cli,
        f"{DIGITS / 'model.py'}:build",
        "--weights",
        str(DIGITS / "weights.pt"),
        "--target",
        "rpi4",
        "--data",
        str(DIGITS / "data.npz"),
        "--out",
        str(tmp_path),
    )
    assert code == 0, err
    manifest = json.loads((tmp_path / "digits-rpi4" / "manifest.json").read_text())
    assert manifest["accuracy"]["status"] == "passed" and manifest["target"]["device"]["int8_dot_product"] is False


def test_torchscript_model_builds(cli: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "tiny.ts"
    torch.jit.save(torch.jit.trace(tiny_cnn(), torch.zeros(1, 1, 8, 8)), str(path))
    code, _, err = _build(
        cli,
        str(path),
        "--target",
        "rpi",
        "--input-shape",
        "1,1,8,8",
        "--out",
        str(tmp_path / "dist"),
        "--set",
        "latency.enabled=false",
    )
    assert code == 0, err
    manifest = json.loads((tmp_path / "dist" / "tiny-rpi" / "manifest.json").read_text())
    assert manifest["accuracy"]["status"] == "skipped" and manifest["source_model"]["format"] == "torchscript"


def test_encoder_gets_dynamic_int8_and_says_why(cli: CliRunner, tmp_path: Path) -> None:
    spec = f"{Path(__file__).resolve().parents[2] / 'examples' / 'encoder' / 'model.py'}:build"
    code, _, err = _build(cli, spec, "--target", "rpi", "--out", str(tmp_path), "--set", "latency.enabled=false")
    assert code == 0, err
    quantize = json.loads((tmp_path / "encoder-rpi" / "manifest.json").read_text())["quantize"]
    assert quantize["scheme"] == "int8-dynamic" and "integer token input" in quantize["chosen_because"]
    assert quantize["quantized_ops"].get("MatMulInteger", 0) >= 6


def test_pickled_module_needs_opt_in(cli: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "whole.pt"
    torch.save(tiny_cnn(), path)

    code, _, err = _build(
        cli, str(path), "--target", "rpi", "--input-shape", "1,1,8,8", "--out", str(tmp_path / "dist")
    )
    assert code == ExitStatus.BAD_INPUT and "execute code" in err and "--allow-pickle" in err
    assert not (tmp_path / "dist" / "whole-rpi").exists()

    code, _, err = _build(
        cli,
        str(path),
        "--target",
        "rpi",
        "--input-shape",
        "1,1,8,8",
        "--out",
        str(tmp_path / "dist"),
        "--allow-pickle",
        "--set",
        "latency.enabled=false",
    )
    assert code == 0, err


def test_state_dict_file_points_to_factory(cli: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(tiny_cnn().state_dict(), path)
    code, _, err = _build(cli, str(path), "--target", "rpi")
    assert code == ExitStatus.BAD_INPUT and "state dict" in err and "MODULE:FACTORY" in err


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("model.pt2", b"garbage", "not a readable torch.export file"),
        ("model.pt", b"garbage", "not a PyTorch archive"),
        ("model.onnx", b"x", "not a model file"),
    ],
)
def test_corrupt_or_wrong_model_file(cli: CliRunner, tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    code, _, err = _build(cli, str(path), "--target", "rpi", "--out", str(tmp_path / "dist"))
    assert code == ExitStatus.BAD_INPUT and message in err
    assert "Traceback" not in err


def test_shape_mismatch_between_model_and_data(cli: CliRunner, tmp_path: Path) -> None:
    data = tmp_path / "wrong.npz"
    np.savez(data, inputs=np.zeros((10, 3, 8, 8), np.float32))
    code, _, err = _build(
        cli, str(DIGITS / "model.pt2"), "--target", "rpi", "--data", str(data), "--out", str(tmp_path / "dist")
    )
    assert code == ExitStatus.BAD_INPUT and "(3, 8, 8)" in err and "(1, 8, 8)" in err


def test_input_shape_contradicting_the_pt2_is_refused(cli: CliRunner, tmp_path: Path) -> None:
    code, _, err = _build(
        cli, str(DIGITS / "model.pt2"), "--target", "rpi", "--input-shape", "1,1,16,16", "--out", str(tmp_path)
    )
    assert code == ExitStatus.BAD_INPUT and "(1, 1, 8, 8)" in err


def test_empty_and_missing_data(cli: CliRunner, tmp_path: Path) -> None:
    empty = tmp_path / "empty.npz"
    np.savez(empty, inputs=np.zeros((0, 1, 8, 8), np.float32))
    code, _, err = _build(
        cli, str(DIGITS / "model.pt2"), "--target", "rpi", "--data", str(empty), "--out", str(tmp_path / "dist")
    )
    assert code == ExitStatus.BAD_INPUT and "0 samples" in err
    code, _, err = _build(cli, str(DIGITS / "model.pt2"), "--target", "rpi", "--data", str(tmp_path / "nope.npz"))
    assert code == ExitStatus.BAD_INPUT and "does not exist" in err


def test_config_errors_exit_3_with_did_you_mean(cli: CliRunner) -> None:
    code, _, err = _build(cli, str(DIGITS / "model.pt2"), "--target", "rpii")
    assert code == ExitStatus.CONFIG and "did you mean 'rpi'" in err
    code, _, err = _build(cli, str(DIGITS / "model.pt2"), "--target", "rpi", "--set", "prune.ration=0.3")
    assert code == ExitStatus.CONFIG and "prune.ration" in err and "ratio" in err


def test_errors_have_no_traceback_unless_asked(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.pt2")
    plain = subprocess.run(
        [sys.executable, "-m", "edgekit.cli", "build", missing, "--target", "rpi"], capture_output=True, text=True
    )
    traced = subprocess.run(
        [sys.executable, "-m", "edgekit.cli", "build", missing, "--target", "rpi", "--traceback"],
        capture_output=True,
        text=True,
    )

    assert (
        plain.returncode == ExitStatus.BAD_INPUT and plain.stderr.count("\n") <= 3 and "Traceback" not in plain.stderr
    )
    assert "Traceback" in traced.stderr


@pytest.mark.slow
def test_random_init_mobilenet_v2_reports_skipped_and_shrinks(tmp_path: Path) -> None:
    import torchvision

    import edgekit

    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(weights=None).train()
    with torch.no_grad():  # realistic BatchNorm statistics (weights unchanged)
        model(torch.randn(8, 3, 224, 224))
    path = tmp_path / "mobilenet_v2.pt2"
    torch.export.save(torch.export.export(model.eval(), (torch.randn(1, 3, 224, 224),)), str(path))

    manifest = edgekit.build(str(path), target="rpi", out_dir=tmp_path / "dist").manifest.to_json()

    assert manifest["accuracy"]["status"] == "skipped" and manifest["accuracy"]["gate"]["passed"] is None
    assert any("synthetic" in w for w in manifest["warnings"])
    assert manifest["size"]["artifact_over_float"] <= 0.30


def test_missing_runtime_exits_4_naming_the_extra(cli: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))

    code, _, err = _build(cli, str(DIGITS / "model.pt2"), "--target", "rpi")

    assert code == ExitStatus.MISSING_DEPENDENCY and "pip install 'edgekit-deploy[rpi]'" in err


def test_the_summary_shows_only_the_metrics_an_output_has() -> None:
    from edgekit.cli import render_summary

    summary = {"artifact": "a/model.onnx", "target": "rpi", "scheme": "int8-static", "accuracy_status": "passed",
               "metrics": {"sqnr_db": 31.0, "cosine": 0.99, "max_abs_error": 0.1}, "gate": None,
               "size_bytes": 1000, "size_over_float": 0.3, "latency_ms": None}  # fmt: skip

    text = render_summary(summary)

    assert "SQNR 31.0 dB" in text and "top-1" not in text  # a (N, 1) probability has no top-1
