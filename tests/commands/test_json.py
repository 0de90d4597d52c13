"""`--json` prints exactly one object on every exit of build, verify, inspect, run and bundle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgekit.cli import main
from edgekit.commands.output import Console, fail
from edgekit.errors import ExitStatus
from tests.commands.conftest import copy_artifact
from tests.conftest import DIGITS

BUILD = ["build", str(DIGITS / "model.pt2"), "--data", str(DIGITS / "data.npz"), "--set", "latency.enabled=false"]


def test_a_kept_gate_failure_reports_its_path_metrics_and_gate(cli: CliRunner, tmp_path: Path) -> None:
    strict = tmp_path / "strict.toml"
    strict.write_text('[[gate.rules]]\nmetric = "sqnr_db"\nop = ">="\nvalue = 200.0\n')
    out = tmp_path / "dist"

    result = cli.invoke(main, [*BUILD, "--target", "rpi", "--recipe", str(strict), "--out", str(out),
                               "--allow-accuracy-failure", "--json"])  # fmt: skip

    found = json.loads(result.stdout)
    assert result.exit_code == ExitStatus.ACCURACY_FAILED
    assert found["status"] == "error" and found["exit_status"] == 7 and not found["ok"]
    assert found["artifact_dir"] == str(out / "digits-rpi") and Path(found["artifact"]).is_file()
    assert found["accuracy_status"] == "failed" and found["gate"]["passed"] is False
    assert found["gate"]["rule"] == "sqnr_db >= 200.0" and found["metrics"]["sqnr_db"] < 200
    assert "accuracy gate failed" in found["message"]


@pytest.fixture(scope="module")
def collapsing_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Return (model.pt2, data.npz) of a model whose static int8 build really loses accuracy (see OutlierMLP)."""
    import numpy as np
    import torch

    from tests.cli.test_trust import OutlierMLP

    folder = tmp_path_factory.mktemp("collapse")
    model = OutlierMLP().eval()
    inputs = np.random.default_rng(1).standard_normal((200, 16)).astype(np.float32)
    with torch.no_grad():
        labels = model(torch.from_numpy(inputs)).argmax(1).numpy()
    torch.export.save(torch.export.export(model, (torch.from_numpy(inputs[:1]),)), str(folder / "collapse.pt2"))
    np.savez(folder / "data.npz", inputs=inputs, labels=labels)
    return folder / "collapse.pt2", folder / "data.npz"


@pytest.mark.parametrize("keep", [False, True], ids=["nothing-kept", "kept"])
def test_a_real_accuracy_drop_reports_metrics_gate_error_and_hint(
    cli: CliRunner, collapsing_model: tuple[Path, Path], tmp_path: Path, keep: bool
) -> None:
    model, data = collapsing_model
    out = tmp_path / "dist"
    # repair off: the repair ladder would rescue this model, and the test is about an unrepaired failure
    args = ["build", str(model), "--target", "rpi", "--data", str(data), "--out", str(out),
            "--set", "latency.enabled=false", "--set", "quantize.scheme=int8-static",
            "--set", "repair.enabled=false", "--json"]  # fmt: skip

    result = cli.invoke(main, args + (["--allow-accuracy-failure"] if keep else []))

    found = json.loads(result.stdout)  # one object, nothing else on stdout
    assert result.exit_code == ExitStatus.ACCURACY_FAILED == found["exit_status"], result.stderr
    assert found["status"] == "error" and not found["ok"] and found["accuracy_status"] == "failed"
    assert found["metrics"]["top1_drop"] > 50 and found["metrics"]["float_top1"] == 100.0  # int8 collapsed
    assert found["gate"] == {"rule": "top1_drop <= 1.0", "value": found["metrics"]["top1_drop"], "passed": False}
    assert found["message"].startswith("accuracy gate failed: top1_drop <= 1.0") and isinstance(found["warnings"], list)
    if keep:
        assert found["artifact_dir"] == str(out / "collapse-rpi") and Path(found["artifact"]).is_file()
    else:
        assert found["artifact_dir"] is None and "artifact" not in found and not list(out.iterdir())
        assert "--allow-accuracy-failure" in found["hint"]


@pytest.mark.parametrize(
    ("args", "status", "needle"),
    [
        (["--target", "rpii"], ExitStatus.CONFIG, "rpii"),
        (["--target", "rpi", "--set", "latency.runs=0"], ExitStatus.CONFIG, "latency.runs"),
        ([], ExitStatus.USAGE, "--target"),  # click's own usage error
    ],
)
def test_a_failed_build_prints_one_object_with_message_and_hint(
    cli: CliRunner, tmp_path: Path, args: list[str], status: int, needle: str
) -> None:
    result = cli.invoke(main, [*BUILD, *args, "--out", str(tmp_path), "--json"])

    found = json.loads(result.stdout)  # one object, nothing else on stdout
    assert result.exit_code == status == found["exit_status"]
    assert found["status"] == "error" and needle in found["message"] and "hint" in found
    assert found["artifact_dir"] is None and found["warnings"] == []
    if status != ExitStatus.USAGE:  # nothing was measured before the error: the fields are there, empty
        assert found["metrics"] == {} and found["gate"] is None


def test_a_successful_build_prints_status_ok(cli: CliRunner, tmp_path: Path) -> None:
    result = cli.invoke(main, [*BUILD, "--target", "rpi", "--out", str(tmp_path), "--json"])

    found = json.loads(result.stdout)
    assert result.exit_code == 0, result.stderr
    assert found["status"] == "ok" and found["exit_status"] == 0 and found["accuracy_status"] == "passed"
    assert found["artifact_dir"] == str(tmp_path / "digits-rpi") and isinstance(found["warnings"], list)


@pytest.mark.parametrize("command", ["inspect", "verify", "bundle"])
def test_a_tampered_artifact_is_one_error_object(
    cli: CliRunner, digits_rpi: Path, tmp_path: Path, command: str
) -> None:
    folder = copy_artifact(digits_rpi, tmp_path)
    (folder / "recipe.lock.toml").write_text("# changed\n")

    result = cli.invoke(main, [command, str(folder), "--json"])

    found = json.loads(result.stdout)
    assert result.exit_code == ExitStatus.BAD_INPUT == found["exit_status"]
    assert found["status"] == "error" and "recipe.lock.toml" in found["message"]
    assert found["artifact_dir"] == str(folder)


def test_verify_json_keeps_its_verdict_and_adds_the_exit_status(cli: CliRunner, digits_rpi: Path) -> None:
    result = cli.invoke(main, ["verify", str(digits_rpi), "--json"])

    found = json.loads(result.stdout)
    assert result.exit_code == 0 and found["status"] == "passed" and found["exit_status"] == 0 and found["ok"]


def test_a_failure_points_to_the_log_of_third_party_output(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    log = tmp_path / "digits-ios.log"
    log.write_text("Failed to load _MLModelProxy\n")

    with pytest.raises(SystemExit) as stop:
        fail(Console(as_json=True, log=log), ExitStatus.EXPORT_FAILED, "conversion failed", "see the log")

    captured = capsys.readouterr()
    assert stop.value.code == ExitStatus.EXPORT_FAILED
    assert captured.err.strip() == f"edgekit: what converters and runtimes printed is in {log}"
    assert json.loads(captured.out)["log"] == str(log)
