"""Bad inputs: each gives a one-line error, its documented exit status, no traceback, and nothing finished.

Cases already tested elsewhere are not repeated here: garbage .pt2/.pt/.onnx files, a pickled module,
a state dict, mismatched shapes, empty and missing data, unknown keys from --set
(tests/cli/test_build_rpi.py); hostile .pt2 archives (tests/unit/test_pt2_safety.py); recipe ranges
(tests/unit/test_recipe.py); SIGTERM mid-build (tests/commands/test_quiet_and_signals.py); a changed
golden file and a stray file (tests/cli/test_build_rpi.py, tests/commands/test_bundle.py).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result

from edgekit.cli import main
from edgekit.errors import ExitStatus
from tests.conftest import DIGITS

MODEL = str(DIGITS / "model.pt2")


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def build(cli: CliRunner, model: str, out: Path, *extra: str) -> Result:
    return cli.invoke(main, ["build", model, "--target", "rpi", "--out", str(out), "--set", "latency.enabled=false",
                             *extra])  # fmt: skip


def assert_refused(result: Result, status: ExitStatus, *words: str, out: Path | None = None) -> None:
    """One error line (and at most one hint), the status, no traceback, and no folder that looks finished."""
    stderr = result.stderr
    assert result.exit_code == status, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and sum(line.startswith("hint: ") for line in stderr.splitlines()) <= 1, stderr
    assert "Traceback" not in stderr
    for word in words:
        assert word in stderr, stderr  # in the error line or its hint
    if out is not None and out.exists():
        assert sorted(p.name for p in out.iterdir()) == []  # no artifact, no .partial-*, no .edgekit-work-*


class RunsCode:
    """Pickles to a call of os.mkdir(marker): loading the file would run it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (str(self.marker),)


# --- model files ---


def test_a_truncated_pt2_is_refused(cli: CliRunner, tmp_path: Path) -> None:
    whole = (DIGITS / "model.pt2").read_bytes()
    (tmp_path / "cut.pt2").write_bytes(whole[: len(whole) // 2])

    assert_refused(build(cli, str(tmp_path / "cut.pt2"), tmp_path / "out"), ExitStatus.BAD_INPUT, "cut.pt2",
                   out=tmp_path / "out")  # fmt: skip


@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_a_pickle_that_would_run_code_is_never_loaded(cli: CliRunner, tmp_path: Path, suffix: str) -> None:
    marker = tmp_path / "the-payload-ran"
    path = tmp_path / f"model{suffix}"
    torch.save(RunsCode(marker), path)

    result = build(cli, str(path), tmp_path / "out", "--input-shape", "1,1,8,8")

    assert_refused(result, ExitStatus.BAD_INPUT, "execute code", out=tmp_path / "out")
    assert "--allow-pickle" in result.stderr
    assert not marker.exists()


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("model.pt", {"step": 3, "lr": 0.1}),
        ("model.pt", torch.zeros(3)),
        ("model.pt2", "a model, in words\n"),
        ("model.pt", "a model, in words\n"),
    ],  # fmt: skip
    ids=["pt-of-settings", "pt-of-a-tensor", "text-pt2", "text-pt"],
)
def test_a_file_that_is_not_a_model_is_refused(cli: CliRunner, tmp_path: Path, name: str, content: object) -> None:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content)
    else:
        torch.save(content, path)

    assert_refused(build(cli, str(path), tmp_path / "out", "--input-shape", "1,1,8,8"), ExitStatus.BAD_INPUT,
                   name, out=tmp_path / "out")  # fmt: skip


def test_an_op_the_runtime_lacks_fails_the_export(cli: CliRunner, tmp_path: Path) -> None:
    factory = tmp_path / "svd_net.py"
    factory.write_text(
        "import torch\n\nclass Svd(torch.nn.Module):\n    def forward(self, x):\n"
        "        return torch.linalg.svd(x.reshape(1, 8, 8))[1]\n\ndef build():\n    return Svd().eval()\n"
    )

    result = build(cli, f"{factory}:build", tmp_path / "out", "--input-shape", "1,1,8,8")

    assert_refused(result, ExitStatus.EXPORT_FAILED, "no ONNX conversion for aten._linalg_svd", out=tmp_path / "out")


# --- data ---


def _digits(**changes: np.ndarray) -> dict[str, np.ndarray]:
    with np.load(DIGITS / "data.npz") as data:
        arrays = {"inputs": data["inputs"], "labels": data["labels"]}
    return {**arrays, **changes}


def _nan_at_3(inputs: np.ndarray, value: float) -> np.ndarray:
    changed = inputs.copy()
    changed[3, 0, 4, 4] = value
    return changed


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("nan", ("NaN", "index 3")),
        ("inf", ("Inf", "index 3")),
        ("rank", ("(8, 8)", "(1, 8, 8)")),
        ("labels-out-of-range", ("20..29", "10 classes")),
        ("label-names", ("3 label names", "10 classes")),
        ("fractional-labels", ("class indices",)),
    ],
)
def test_data_that_cannot_judge_the_model_is_refused(
    cli: CliRunner, tmp_path: Path, case: str, words: tuple[str, ...]
) -> None:
    inputs, labels = _digits()["inputs"], _digits()["labels"]
    arrays = {
        "nan": _digits(inputs=_nan_at_3(inputs, np.nan)),
        "inf": _digits(inputs=_nan_at_3(inputs, np.inf)),
        "rank": _digits(inputs=inputs[:, 0]),
        "labels-out-of-range": _digits(labels=labels + 20),
        "label-names": {**_digits(), "label_names": np.array(["a", "b", "c"])},
        "fractional-labels": _digits(labels=labels + 0.5),
    }[case]
    np.savez(tmp_path / "data.npz", **arrays)

    result = build(cli, MODEL, tmp_path / "out", "--data", str(tmp_path / "data.npz"))

    assert_refused(result, ExitStatus.BAD_INPUT, *words, out=tmp_path / "out")


# --- recipes ---


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[prune.recovery]\nstepz = 10\n", ("prune.recovery.stepz", "steps")),
        ('[prune.recovery]\nsteps = "many"\n', ("prune.recovery.steps",)),
        ("[prune]\nratio = 1.5\n", ("prune.ratio", "1.5")),
    ],
    ids=["unknown-key", "wrong-type", "out-of-range"],
)
def test_a_bad_recipe_file_is_refused_before_anything_loads(
    cli: CliRunner, tmp_path: Path, text: str, words: tuple[str, ...]
) -> None:
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(text)

    result = build(cli, MODEL, tmp_path / "out", "--recipe", str(recipe))

    assert_refused(result, ExitStatus.CONFIG, *words)
    assert not (tmp_path / "out").exists()


# --- the output folder ---


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Yield a function mounting a tmpfs (options given) at a new folder; unmount them all at the end."""
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        where = tmp_path / f"fs{len(mounted)}"
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()})")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", str(where)], check=False)


def test_an_output_folder_that_cannot_be_written_is_exit_9(
    cli: CliRunner, tmp_path: Path, small_filesystem: Callable[[str], Path]
) -> None:
    if os.geteuid() == 0:  # root writes through file modes: use a read-only file system instead
        locked = small_filesystem("ro,size=64k")
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)

    result = build(cli, MODEL, locked / "dist", "--data", str(DIGITS / "data.npz"))

    assert_refused(result, ExitStatus.OUTPUT, str(locked / "dist"))
    assert "--out" in result.stderr


def test_a_full_disk_while_writing_the_artifact_is_exit_9_and_leaves_nothing(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = shutil.copyfile

    def full(src: str, dst: str, **kwargs: object) -> str:
        if ".partial-" in str(dst):  # the package stage writing the artifact folder
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real(src, dst, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(shutil, "copyfile", full)
    out = tmp_path / "out"

    result = build(cli, MODEL, out, "--data", str(DIGITS / "data.npz"))

    assert_refused(result, ExitStatus.OUTPUT, "No space left on device", out=out)


def test_a_really_full_disk_is_exit_9_and_leaves_nothing(
    cli: CliRunner, small_filesystem: Callable[[str], Path]
) -> None:
    out = small_filesystem("size=96k") / "dist"  # room for the work folder's start, not for the float model

    result = build(cli, MODEL, out, "--data", str(DIGITS / "data.npz"))

    assert_refused(result, ExitStatus.OUTPUT, "No space left on device", out=out)


@pytest.mark.slow
def test_sigint_mid_build_exits_130_and_leaves_nothing(tmp_path: Path, private_cache: Path) -> None:
    out = tmp_path / "dist"
    args = [sys.executable, "-m", "edgekit.cli", "build", "--target", "rpi", MODEL, "--data", str(DIGITS / "data.npz"),
            "--out", str(out)]  # fmt: skip
    env = {**os.environ, "XDG_CACHE_HOME": str(private_cache)}
    # A shell's background job (`nohup ... &`) starts with SIGINT ignored, and Python keeps that: restore Ctrl-C.
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    assert process.stderr is not None
    seen: list[str] = []
    while not (seen and seen[-1].startswith("  load done")):  # other lines may come first (a warning, a log note)
        seen.append(process.stderr.readline())
        assert seen[-1] and len(seen) < 50, seen
    process.send_signal(signal.SIGINT)  # Ctrl-C while it compiles
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == ExitStatus.INTERRUPTED, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
    assert sorted(p.name for p in out.iterdir()) == []


# --- tampered artifacts ---


@pytest.fixture
def artifact(digits_rpi: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(digits_rpi, tmp_path / "copy" / digits_rpi.name))


def _rehash(folder: Path, name: str) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def test_a_tampered_artifact_file_is_named(cli: CliRunner, artifact: Path) -> None:
    model = artifact / "model.onnx"
    model.write_bytes(model.read_bytes()[:-1] + bytes([model.read_bytes()[-1] ^ 1]))

    assert_refused(cli.invoke(main, ["verify", str(artifact)]), ExitStatus.BAD_INPUT, "model.onnx", "sha256")


@pytest.mark.parametrize("change", ["hash", "json", "missing-key"])
def test_a_tampered_manifest_is_detected(cli: CliRunner, artifact: Path, change: str) -> None:
    """Edits that contradict the files or the schema are caught. manifest.json is not signed: an edit
    consistent with the files (a recorded metric, say) is not, without `verify --data` (README, Trust)."""
    path = artifact / "manifest.json"
    manifest = json.loads(path.read_text())
    if change == "hash":  # claims other bytes for the model
        manifest["files"]["model.onnx"] = "0" * 64
    elif change == "missing-key":
        del manifest["io"]
    path.write_text("{ not json" if change == "json" else json.dumps(manifest))

    result = cli.invoke(main, ["verify", str(artifact)])

    assert_refused(result, ExitStatus.BAD_INPUT, {"hash": "model.onnx", "json": "not valid JSON",
                                                  "missing-key": "io"}[change])  # fmt: skip


def test_a_golden_output_changed_and_rehashed_fails_verify_with_exit_7(cli: CliRunner, artifact: Path) -> None:
    name = "golden/0/outputs/output.npy"
    golden = np.load(artifact / name)
    np.save(artifact / name, golden + 10 * np.abs(golden).max())
    _rehash(artifact, name)

    result = cli.invoke(main, ["verify", str(artifact)])

    assert result.exit_code == ExitStatus.ACCURACY_FAILED, result.stderr + result.stdout
    assert "golden" in result.stdout + result.stderr and "Traceback" not in result.stderr
