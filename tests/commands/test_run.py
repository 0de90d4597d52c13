"""`edgekit run` and `edgekit.run`: an artifact in its runtime on named inputs, from its folder alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import edgekit
from edgekit.cli import main
from edgekit.errors import ExitStatus, InputError
from tests.commands.conftest import copy_artifact


def _golden(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Return the first golden input and output of a one-input, one-output artifact."""
    manifest = json.loads((folder / "manifest.json").read_text())
    sample = manifest["golden"]["samples"][0]
    return np.load(folder / sample["inputs"]["input"]), np.load(folder / sample["outputs"]["output"])


@pytest.mark.parametrize("fixture", ["digits_rpi", "digits_android"])
def test_api_run_reproduces_the_golden_outputs(fixture: str, request: pytest.FixtureRequest) -> None:
    folder = request.getfixturevalue(fixture)
    inputs, expected = _golden(folder)
    atol = json.loads((folder / "manifest.json").read_text())["golden"]["atol"]

    outputs = edgekit.run(folder, {"input": inputs})

    assert list(outputs) == ["output"] and outputs["output"].shape == (1, 10)
    np.testing.assert_allclose(outputs["output"], expected, atol=atol, rtol=0)


def test_cli_run_prints_shape_dtype_and_top5_per_sample(cli: CliRunner, digits_rpi: Path, four_digits: Path) -> None:
    result = cli.invoke(main, ["run", str(digits_rpi), "--input", str(four_digits)])

    assert result.exit_code == 0, result.stderr
    assert "output  float32 (4, 10)" in result.stdout
    assert result.stdout.count("top-5:") == 3 and "1 more sample" in result.stdout
    assert "with onnxruntime" in result.stderr


def test_cli_run_saves_every_output_by_name(
    cli: CliRunner, digits_android: Path, four_digits: Path, tmp_path: Path
) -> None:
    out = tmp_path / "outputs.npz"

    result = cli.invoke(main, ["run", str(digits_android), "--input", str(four_digits), "--out", str(out)])

    assert result.exit_code == 0, result.stderr
    with np.load(out) as saved:
        assert saved.files == ["output"] and saved["output"].shape == (4, 10)
        np.testing.assert_array_equal(saved["output"], edgekit.run(digits_android, four_digits)["output"])


def test_cli_run_json_is_one_object_with_top5(cli: CliRunner, digits_rpi: Path, four_digits: Path) -> None:
    result = cli.invoke(main, ["run", str(digits_rpi), "--input", str(four_digits), "--json"])

    found = json.loads(result.stdout)
    assert result.exit_code == 0 and found["status"] == "ok" and found["exit_status"] == 0
    assert found["mode"] == "runtime" and found["artifact_dir"] == str(digits_rpi)
    top = found["outputs"]["output"]["top5"]
    assert len(top) == 4 and len(top[0]) == 5 and top[0][0]["score"] >= top[0][1]["score"]


@pytest.mark.parametrize(
    ("arrays", "named"),
    [
        ({"pixels": np.zeros((2, 1, 8, 8), np.float32)}, "input"),  # missing
        ({"input": np.zeros((2, 1, 8, 8), np.float32), "mask": np.zeros(2)}, "mask"),  # extra
        ({"inputs": np.zeros((2, 1, 8, 4), np.float32)}, "input"),  # mis-shaped
        ({"input": np.zeros((1, 8, 8), np.float32)}, "x[None]"),  # no batch axis
        ({"input": np.zeros((2, 1, 8, 8), np.int64)}, "dtype int64"),  # wrong kind of dtype
    ],
)
def test_cli_run_names_the_input_that_does_not_fit(
    cli: CliRunner, digits_rpi: Path, tmp_path: Path, arrays: dict[str, np.ndarray], named: str
) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)

    result = cli.invoke(main, ["run", str(digits_rpi), "--input", str(path), "--json"])

    assert result.exit_code == ExitStatus.BAD_INPUT
    assert named in result.stderr
    found = json.loads(result.stdout)
    assert found["status"] == "error" and found["exit_status"] == 5 and named in found["message"] + str(found["hint"])


def test_api_run_accepts_float64_and_ignores_labels(digits_rpi: Path) -> None:
    inputs, expected = _golden(digits_rpi)

    outputs = edgekit.run(digits_rpi, {"input": inputs.astype(np.float64), "labels": np.zeros(1)})

    np.testing.assert_allclose(outputs["output"], expected, atol=1e-3)


def test_run_warns_when_the_installed_runtime_differs_from_the_build(
    cli: CliRunner, digits_rpi: Path, four_digits: Path, tmp_path: Path
) -> None:
    folder = copy_artifact(digits_rpi, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["toolchain"]["onnxruntime"] = "1.0.0"  # the manifest is not in its own file hashes
    (folder / "manifest.json").write_text(json.dumps(manifest))

    result = cli.invoke(main, ["run", str(folder), "--input", str(four_digits)])

    assert result.exit_code == 0, result.stderr
    assert "warning: onnxruntime" in result.stderr and "built with 1.0.0" in result.stderr


def test_run_refuses_a_tampered_artifact(digits_rpi: Path, four_digits: Path, tmp_path: Path) -> None:
    folder = copy_artifact(digits_rpi, tmp_path)
    with (folder / "model.onnx").open("ab") as model:
        model.write(b"\0")

    with pytest.raises(InputError, match="model.onnx: sha256 differs"):
        edgekit.run(folder, four_digits)
