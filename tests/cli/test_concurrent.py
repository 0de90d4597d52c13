"""Replacing an artifact is one atomic step, and concurrent builds of one name never corrupt each other."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import edgekit
from edgekit.atomic_folder import exchange, identity, output_lock, replace_folder, staging_folder
from edgekit.stages.package import set_aside
from tests.conftest import DIGITS


def _folder(path: Path, text: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "manifest.json").write_text(text)
    (path / "model.onnx").write_text(text * 100)
    return path


READER = """
import os, sys
path, stop, misses = sys.argv[1], sys.argv[2], 0
print("ready", flush=True)
while not os.path.exists(stop):
    misses += not os.path.isfile(path)
print(misses)
"""


def test_replacing_a_folder_never_leaves_a_gap(tmp_path: Path) -> None:
    final = _folder(tmp_path / "out" / "digits-rpi", "0")
    stop = tmp_path / "stop"
    reader = subprocess.Popen(  # another process, on the other core, looks for the artifact all the time
        [sys.executable, "-c", READER, str(final / "manifest.json"), str(stop)], stdout=subprocess.PIPE, text=True
    )
    assert reader.stdout is not None and reader.stdout.readline() == "ready\n"
    try:
        for i in range(1, 500):
            replace_folder(_folder(staging_folder(final), str(i)), final)
    finally:
        stop.touch()
    misses = int(reader.communicate(timeout=60)[0])

    assert misses == 0  # with two renames, the reader finds no artifact between them
    assert (final / "manifest.json").read_text() == "499"
    assert sorted(p.name for p in final.parent.iterdir()) == ["digits-rpi"]  # no staging or old folder left


def test_exchange_swaps_two_folders_in_one_step(tmp_path: Path) -> None:
    a, b = _folder(tmp_path / "a", "A"), _folder(tmp_path / "b", "B")

    assert exchange(a, b)  # Linux has renameat2; where it does not, replace_folder falls back to two renames
    assert (a / "manifest.json").read_text() == "B" and (b / "manifest.json").read_text() == "A"


def test_staging_folders_are_unique_and_stale_ones_are_removed(tmp_path: Path) -> None:
    final = tmp_path / "digits-rpi"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = _folder(tmp_path / f"digits-rpi.partial-{dead.stdout.strip()}-0badc0de", "stale")
    mine = staging_folder(final)
    other = staging_folder(final)

    assert mine != other and mine.is_dir() and other.is_dir()
    assert not stale.exists()  # its process is gone


def test_a_failed_build_moves_aside_only_the_artifact_that_was_there_when_it_started(tmp_path: Path) -> None:
    final = _folder(tmp_path / "digits-rpi", "old")
    when_started = identity(final)
    replace_folder(_folder(staging_folder(final), "from another build"), final)  # a concurrent build finished

    assert set_aside(final, when_started) is None
    assert (final / "manifest.json").read_text() == "from another build"
    assert set_aside(final, identity(final)) == tmp_path / "digits-rpi.previous"
    assert not final.exists()


def test_the_output_lock_excludes_another_process(tmp_path: Path) -> None:
    script = (
        "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)\n"
        "try: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); print('free')\n"
        "except BlockingIOError: print('held')"
    )
    with output_lock(tmp_path):
        inside = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True)
    after = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True)

    assert inside.stdout.strip() == "held" and after.stdout.strip() == "free"
    assert list(tmp_path.iterdir()) == []  # no lock file left behind


@pytest.mark.slow
def test_two_concurrent_builds_of_one_name_leave_one_whole_artifact(tmp_path: Path) -> None:
    out = tmp_path / "dist"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    runs = []
    for scheme in ("int8-static", "fp32"):  # two different artifacts: a mix of both would fail its checksums
        args = [sys.executable, "-m", "edgekit.cli", "build", str(DIGITS / "model.pt2"), "--target", "rpi",
                "--data", str(DIGITS / "data.npz"), "--out", str(out), "--set", "latency.enabled=false",
                "--set", f"quantize.scheme={scheme}", "--json"]  # fmt: skip
        runs.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    results = [(p.wait(timeout=600), *p.communicate()) for p in runs]

    for code, stdout, stderr in results:
        assert code == 0, stderr
        assert json.loads(stdout)["status"] == "ok"
    assert sorted(p.name for p in out.iterdir()) == ["digits-rpi"]  # no staging, work or old folder
    found = edgekit.verify(out / "digits-rpi")
    assert found.status == "passed" and found.problems == ()  # verify raises when a file does not match
