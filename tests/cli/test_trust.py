"""Trust holes: a real accuracy failure, what verify/inspect say about it, failed rebuilds, custom targets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import edgekit
from edgekit.cli import main
from edgekit.errors import ExitStatus
from tests.conftest import DIGITS, ROOT, assert_valid_manifest


class OutlierMLP(nn.Module):
    """16 -> 32 -> 32 -> 10 with one hidden unit 10^4 times larger than the rest, which the next layer ignores.

    Per-tensor int8 activations must cover that unit's range, so every other hidden unit rounds to
    zero: float is 100% by construction, static int8 collapses to chance. A real accuracy failure.
    Repair must leave `hidden` in float and let `head` read it in float; `classifier` can stay int8,
    so a repaired artifact is not float in all but name.
    """

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.hidden, self.head, self.classifier = nn.Linear(16, 32), nn.Linear(32, 32), nn.Linear(32, 10)
        with torch.no_grad():
            self.hidden.weight[0] *= 1e4
            self.hidden.bias[0] = 1e4
            self.head.weight[:, 0] = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.relu(self.head(torch.relu(self.hidden(x)))))


@pytest.fixture(scope="module")
def outlier(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Return (model.pt2, data.npz) with labels the float model gets 100% right."""
    folder = tmp_path_factory.mktemp("outlier")
    model = OutlierMLP().eval()
    inputs = np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)
    with torch.no_grad():
        labels = model(torch.from_numpy(inputs)).argmax(1).numpy()
    path = folder / "outlier.pt2"
    torch.export.save(torch.export.export(model, (torch.from_numpy(inputs[:1]),)), str(path))
    np.savez(folder / "data.npz", inputs=inputs, labels=labels)
    return path, folder / "data.npz"


def _args(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["build", str(model), "--target", "rpi", "--data", str(data), "--out", str(out),
            "--set", "latency.enabled=false",
            "--set", "quantize.scheme=int8-static", "--no-repair", *extra]  # fmt: skip


def test_a_real_int8_collapse_fails_the_gate_and_writes_nothing(
    cli: CliRunner, outlier: tuple[Path, Path], tmp_path: Path
) -> None:
    result = cli.invoke(main, _args(*outlier, tmp_path))

    assert result.exit_code == ExitStatus.ACCURACY_FAILED, result.stderr
    assert "accuracy gate failed: top1_drop <= 1.0" in result.stderr
    assert list(tmp_path.iterdir()) == []  # no artifact, no partial folder, no work folder


def test_verify_and_inspect_report_a_kept_failure(cli: CliRunner, outlier: tuple[Path, Path], tmp_path: Path) -> None:
    built = cli.invoke(main, _args(*outlier, tmp_path, "--allow-accuracy-failure"))
    folder = tmp_path / "outlier-rpi"
    assert built.exit_code == ExitStatus.ACCURACY_FAILED and folder.is_dir()
    manifest = assert_valid_manifest(folder)
    assert manifest["accuracy"]["status"] == "failed" and manifest["accuracy"]["metrics"]["top1_drop"] > 30

    verified = cli.invoke(main, ["verify", str(folder)])
    inspected = cli.invoke(main, ["inspect", str(folder)])

    assert verified.exit_code == ExitStatus.ACCURACY_FAILED and "failed its accuracy gate" in verified.stdout
    assert inspected.exit_code == ExitStatus.ACCURACY_FAILED and "FAILED its accuracy gate" in inspected.stderr


def test_a_failed_rebuild_moves_the_previous_artifact_aside(
    cli: CliRunner, outlier: tuple[Path, Path], tmp_path: Path
) -> None:
    first = cli.invoke(main, _args(*outlier, tmp_path, "--set", "quantize.scheme=fp32"))
    assert first.exit_code == 0, first.stderr
    old_manifest = (tmp_path / "outlier-rpi" / "manifest.json").read_text()

    again = cli.invoke(main, _args(*outlier, tmp_path))

    assert again.exit_code == ExitStatus.ACCURACY_FAILED
    assert not (tmp_path / "outlier-rpi").exists()
    assert (tmp_path / "outlier-rpi.previous" / "manifest.json").read_text() == old_manifest
    assert "moved to" in again.stderr and "outlier-rpi.previous" in again.stderr


def test_verify_with_data_remeasures_against_the_source_model(cli: CliRunner, digits_rpi: Path) -> None:
    result = cli.invoke(main, ["verify", str(digits_rpi), "--data", str(DIGITS / "data.npz"), "--json"])

    assert result.exit_code == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["status"] == "passed" and "re-computed from" in found["remeasured"]["float_outputs"]
    assert found["remeasured"]["split"] == "the build's evaluation split" and found["remeasured"]["gate"]["passed"]


def test_verify_with_data_refuses_a_different_source_model(cli: CliRunner, digits_rpi: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.pt2"
    program = torch.export.load(str(DIGITS / "model.pt2"))
    torch.export.save(torch.export.export(_perturbed(program.module()), program.example_inputs[0]), str(other))

    result = cli.invoke(main, ["verify", str(digits_rpi), "--data", str(DIGITS / "data.npz"), "--model", str(other)])

    assert result.exit_code == ExitStatus.BAD_INPUT and "sha256 differs" in result.stderr


def _perturbed(module: nn.Module) -> nn.Module:
    with torch.no_grad():
        next(module.parameters()).add_(0.01)
    return module


def test_an_artifact_of_a_custom_target_file_verifies(tmp_path: Path) -> None:
    target = tmp_path / "my-board.toml"
    target.write_text((ROOT / "targets" / "rpi.toml").read_text().replace('name = "rpi"', 'name = "my-board"'))

    result = edgekit.build(str(DIGITS / "model.pt2"), target=str(target), data=DIGITS / "data.npz", out_dir=tmp_path,
                           overrides=("latency.enabled=false",))  # fmt: skip
    moved = tmp_path / "elsewhere"
    shutil.move(result.path, moved)  # the target file is not needed, nor the artifact's original place
    target.unlink()
    found = edgekit.verify(moved)

    assert result.manifest.target.name == "my-board"
    assert found.status == "passed" and found.exit_status == ExitStatus.OK and found.golden.within_tolerance


def test_missing_torch_pruning_is_found_at_resolve_time(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch_pruning" else real(name, *a)
    )

    result = cli.invoke(main, ["build", f"{DIGITS / 'model.py'}:build", "--weights", str(DIGITS / "weights.pt"),
                               "--target", "rpi", "--recipe", "rpi-pruned-int8", "--out", str(tmp_path)])  # fmt: skip

    assert result.exit_code == ExitStatus.MISSING_DEPENDENCY
    assert "torch_pruning" in result.stderr and "pip install 'edgekit-deploy[prune]'" in result.stderr
    assert list(tmp_path.iterdir()) == []  # found before any model was loaded


def test_unsupported_scheme_and_bad_option_are_reported_together_before_loading(tmp_path: Path) -> None:
    target = tmp_path / "bad.toml"
    text = (ROOT / "targets" / "android.toml").read_text().replace('abi = "arm64-v8a"   #', 'abi = "arm65"   #')
    target.write_text(text)

    with pytest.raises(edgekit.EdgekitError) as caught:
        edgekit.resolve(str(target), overrides=("quantize.scheme=w8",))

    assert caught.value.status == ExitStatus.CONFIG
    assert "w8" in caught.value.message and "arm65" in caught.value.message and "1 more" in caught.value.message


def test_a_tiny_evaluation_set_is_inconclusive_and_says_what_is_needed(cli: CliRunner, tmp_path: Path) -> None:
    args = ["build", str(DIGITS / "model.pt2"), "--target", "rpi", "--data", str(DIGITS / "data.npz"),
            "--out", str(tmp_path), "--set", "data.evaluation_size=5", "--set", "latency.enabled=false"]  # fmt: skip

    refused = cli.invoke(main, args)
    kept = cli.invoke(main, [*args, "--allow-accuracy-failure"])

    assert refused.exit_code == ExitStatus.INCONCLUSIVE and "only 5 evaluation samples" in refused.stderr
    assert "at least 30" in refused.stderr
    assert kept.exit_code == ExitStatus.INCONCLUSIVE
    manifest = assert_valid_manifest(tmp_path / "digits-rpi")
    assert manifest["accuracy"]["status"] == "inconclusive"
    assert cli.invoke(main, ["verify", str(tmp_path / "digits-rpi")]).exit_code == ExitStatus.INCONCLUSIVE


def test_evidence_lists_flipped_samples_intervals_and_the_worst_class(
    outlier: tuple[Path, Path], tmp_path: Path
) -> None:
    import edgekit.errors

    with pytest.raises(edgekit.errors.AccuracyGateError):
        edgekit.build(str(outlier[0]), target="rpi", data=outlier[1], out_dir=tmp_path, allow_accuracy_failure=True,
                      overrides=("latency.enabled=false", "quantize.scheme=int8-static"), repair=False)  # fmt: skip
    evidence = json.loads((tmp_path / "outlier-rpi" / "manifest.json").read_text())["accuracy"]["evidence"]

    low, high = evidence["top1_drop_ci95"]
    assert evidence["flipped"] > 50 and len(evidence["flipped_indices"]) == 50
    assert 0 < low <= high and evidence["worst_class"]["drop"] > 0
    assert sum(c["samples"] for c in evidence["per_class_drop"].values()) == evidence["samples"]
