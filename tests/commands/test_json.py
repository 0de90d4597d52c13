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
