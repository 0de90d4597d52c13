"""`benchmarks/run.py --quick` runs end to end on the digits model and reports in the promised format.

Checks the shape of the output (table header, JSON keys, ratios are numbers), never the timings:
this machine is shared and noisy.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_benchmark_reports_table_and_json(tmp_path: Path) -> None:
    # Arrange
    json_out = tmp_path / "results.json"
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "run.py"),
        "--quick",
        "--json-out",
        str(json_out),
        "--workdir",
        str(tmp_path / "work"),
    ]

    # Act
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1200)

    # Assert
    assert proc.returncode == 0, proc.stderr[-3000:]
    from benchmarks.report import HEADER

    assert HEADER in proc.stdout
    results = json.loads(json_out.read_text())
    assert {"date", "machine", "versions", "settings", "comparisons", "failures", "scaling"} <= results.keys()
    assert results["machine"]["cores"] >= 1
    pairs = {(c["target"], c["reference"]) for c in results["comparisons"]}
    assert {("rpi", "onnxruntime"), ("android", "executorch")} <= pairs
    for row in results["comparisons"]:
        assert row["model"] == "digits"
        for key in ("size", "build", "peak_rss", "latency_median", "latency_p90"):
            value = row["ratios"][key]
            assert isinstance(value, float) and math.isfinite(value) and value > 0, (key, value)
        assert {"top1", "sqnr_db", "top1_agreement"} <= row["edgekit"]["quality"].keys()
        assert set(row["goals_met"]) == {"latency", "size", "accuracy", "build"}
        assert "seconds_by_stage" in row["edgekit"]
    assert results["scaling"]["calibration"] and all(r["ok"] for r in results["scaling"]["calibration"])
