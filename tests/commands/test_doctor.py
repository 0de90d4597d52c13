"""`edgekit doctor`: the tested set and what each target needs, without importing any runtime."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

import edgekit
from edgekit.cli import main
from edgekit.compat import TESTED
from edgekit.errors import ExitStatus

HEAVY = ("torch", "onnx", "onnxruntime", "executorch", "coremltools", "torchao", "torch_pruning")


def test_doctor_lists_the_tested_set_and_every_target_without_importing_them() -> None:
    probe = f"""
import json, sys
from click.testing import CliRunner
from edgekit.cli import main
result = CliRunner().invoke(main, ["doctor", "--json"])
print(json.dumps({{"code": result.exit_code, "found": json.loads(result.stdout),
                  "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""
    ran = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    report = json.loads(ran.stdout)
    found = report["found"]

    assert report["heavy"] == []
    assert report["code"] == 0 and found["status"] == "ok"  # the test extra installs every backend
    assert [p["name"] for p in found["packages"]] == list(TESTED)
    assert {t["name"] for t in found["targets"]} == {t.name for t in edgekit.list_targets()}
    assert all(t["ready"] and t["extra"] for t in found["targets"])


def test_doctor_exits_4_and_names_the_extra_when_a_runtime_is_missing(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))

    result = cli.invoke(main, ["doctor"])

    assert result.exit_code == ExitStatus.MISSING_DEPENDENCY
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert "missing onnxruntime" in rows["rpi"] and "pip install 'edgekit-deploy[rpi]'" in rows["rpi"]
    assert rows["android"].rstrip().endswith("ready")  # the full table is printed
    assert "broken" in rows["onnxruntime"]  # installed, but it cannot be imported
