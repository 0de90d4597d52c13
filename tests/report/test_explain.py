"""`edgekit explain`: the diagnosis and the repair in the terminal, from hand-made manifests and a real digits build."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edgekit.cli import main
from edgekit.commands.explain import explanation, render
from tests.conftest import assert_valid_manifest
from tests.report import manifests


def test_a_repaired_build_is_explained_layer_by_layer_and_step_by_step() -> None:
    text = render(explanation(manifests.repaired()), Path("dist/outlier-rpi"))
    lines = text.splitlines()

    assert lines[0] == "outlier -> rpi: PASSED"
    assert "  gate      top1_drop <= 1.0: pass (measured 0.700)" in lines
    assert (
        "sensitive layers, most first (measured with onnxruntime.quantization.qdq_loss_debug, 16 samples, 12.3 s)"
        in lines
    )
    first, second = (
        next(i for i, line in enumerate(lines) if line.startswith(f"  {m} ")) for m in ("fc1", "features.3.conv.0")
    )
    assert first < second and "/fc1/Gemm" in lines[first]
    chosen = [line for line in lines if line.startswith("  > ")]
    assert len(chosen) == 1 and "2: keep fc1 in float" in chosen[0] and "pass" in chosen[0]
    assert "  in float  fc1: SQNR 3.4 dB at its output; the output reaches 31.0 dB with it in float" in lines
    assert "repair    ran, outcome: passed (budget: max_float_layers 4, max_steps 8)" in lines
    assert "worst class cat: drop 2.00 points on 50 samples" in lines
    assert "warnings (4)" in lines and any(line.startswith("  layers left in float: ") for line in lines)
    assert text.endswith("report    dist/outlier-rpi/report.html (with plots)")


def test_what_was_not_measured_is_said_not_invented() -> None:
    text = render(explanation(manifests.proxy()), Path("a"))

    assert "  checked   by the PROXY: proxy: host-side MIL interpreter" in text
    assert "sensitive layers: not diagnosed for this build" in text and "repair: not recorded for this build" in text
    assert "  proxy check: accuracy was checked on a stand-in" in text and "worst class" not in text


@pytest.fixture
def digits_copy(digits_rpi: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "digits-rpi"
    shutil.copytree(digits_rpi, folder)
    return folder


def _rewrite(folder: Path, change: dict[str, Any]) -> None:
    """Give the artifact's manifest new sections and re-hash its files, as a build that recorded them would."""
    from edgekit.manifest import Manifest, read_manifest, write_manifest

    table = read_manifest(folder).to_json()
    for key, value in change.items():
        table[key] = table[key] | value if isinstance(table.get(key), dict) and key == "accuracy" else value
    write_manifest(folder, Manifest.from_json(table))
    assert_valid_manifest(folder)


def test_explain_on_the_digits_build_exits_0_and_names_the_runtime(cli: CliRunner, digits_copy: Path) -> None:
    ran = cli.invoke(main, ["explain", str(digits_copy)])

    assert ran.exit_code == 0, ran.output
    assert ran.stdout.startswith("digits -> rpi: PASSED\n")
    assert "  checked   by the runtime: onnxruntime " in ran.stdout
    assert "  top-1 accuracy (labels)        98.52% -> 98.52%, drop 0.00 [0.00, 0.00]" in ran.stdout
    assert "sensitive layers: not diagnosed for this build" in ran.stdout


def test_explain_json_of_a_failed_repaired_build_exits_7_with_every_step(cli: CliRunner, digits_copy: Path) -> None:
    failed = manifests.failed()
    _rewrite(
        digits_copy, {"accuracy": failed["accuracy"], "diagnosis": failed["diagnosis"], "repair": failed["repair"]}
    )

    ran = cli.invoke(main, ["explain", str(digits_copy), "--json"])
    body = json.loads(ran.stdout)

    assert ran.exit_code == 7 and body["exit_status"] == 7 and body["ok"] is False
    assert body["message"] == "this artifact FAILED its accuracy gate"
    assert body["verdict"]["status"] == "failed" and body["verdict"]["rules"][0]["passed"] is False
    assert [s["name"] for s in body["repair"]["steps"]] == ["plain int8", "percentile calibration", "keep fc1 in float"]
    assert body["repair"]["outcome"] == "budget exhausted"
    assert [layer["module"] for layer in body["sensitivity"]["layers"]][:2] == ["fc1", "features.3.conv.0"]
    assert body["sensitivity"]["tool"] == "onnxruntime.quantization.qdq_loss_debug"
    assert any(w.startswith("small evaluation set: ") for w in body["warnings"])  # the interval straddles the limit


def test_explain_an_inconclusive_build_exits_8(cli: CliRunner, digits_copy: Path) -> None:
    _rewrite(digits_copy, {"accuracy": manifests.inconclusive()["accuracy"]})

    ran = cli.invoke(main, ["explain", str(digits_copy)])

    assert ran.exit_code == 8 and "INCONCLUSIVE" in ran.stdout
    assert "this artifact's accuracy is inconclusive: only 5 evaluation samples" in ran.stderr


def test_explain_exits_5_on_a_folder_that_is_not_an_artifact_or_was_changed(cli: CliRunner, digits_copy: Path) -> None:
    missing = cli.invoke(main, ["explain", str(digits_copy / "golden"), "--json"])
    (digits_copy / "recipe.lock.toml").write_text("changed", encoding="utf-8")
    changed = cli.invoke(main, ["explain", str(digits_copy)])

    assert missing.exit_code == 5 and "is not an edgekit artifact" in json.loads(missing.stdout)["message"]
    assert changed.exit_code == 5 and "recipe.lock.toml: sha256 differs from the manifest" in changed.stderr
    assert changed.stdout.startswith("digits -> rpi: PASSED")  # the explanation is still printed


def test_a_repair_that_was_not_needed_says_so() -> None:
    table = manifests.base() | {"repair": {"enabled": True, "ran": False, "outcome": "not needed", "steps": []}}

    text = render(explanation(table), Path("a"))

    assert "repair    enabled, not run, outcome: not needed" in text.splitlines()
