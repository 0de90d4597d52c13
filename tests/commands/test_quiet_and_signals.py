"""A CLI build keeps third-party output in a log, and SIGTERM cleans up like Ctrl-C.

The rule for a build's stderr: every line is edgekit's own, that is it starts with "edgekit: ",
"warning: ", "error: ", "hint: ", "interrupted" or two spaces (stage lines); the summary goes to
stdout. Converters' and runtimes' lines (cpuinfo, "Failed to load _MLModelProxy", tqdm bars, torch
warnings) go to $XDG_CACHE_HOME/edgekit/logs/<name>-<target>.log.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgekit.commands.session import captured_output, sigterm_interrupts
from edgekit.errors import ExitStatus
from tests.conftest import DIGITS

OWN = re.compile(r"^(edgekit: |warning: |error: |hint: |interrupted|  )")


def _build(target: str, out: Path, cache: Path, *extra: str) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "edgekit.cli", "build", "--target", target, str(DIGITS / "model.pt2"),
            "--data", str(DIGITS / "data.npz"), "--out", str(out), *extra]  # fmt: skip
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _foreign(stderr: str) -> list[str]:
    return [line for line in re.split(r"[\r\n]+", stderr) if line.strip() and not OWN.match(line)]


@pytest.mark.slow
@pytest.mark.parametrize("target", ["rpi", "ios"])
def test_a_cli_build_prints_only_edgekit_lines(target: str, tmp_path: Path, private_cache: Path) -> None:
    process = _build(target, tmp_path / "dist", private_cache)
    stdout, stderr = process.communicate(timeout=600)

    assert process.returncode == 0, stderr
    assert _foreign(stderr) == []
    assert "  compile done" in stderr and stdout.startswith("artifact ")
    log = private_cache / "edgekit" / "logs" / f"digits-{target}.log"
    assert log.is_file()
    if target == "ios":  # the noisiest converter: its lines are in the log, not on the terminal
        assert "MIL" in log.read_text(errors="replace")


@pytest.mark.slow
def test_sigterm_mid_build_exits_130_and_leaves_no_work_or_partial_folder(tmp_path: Path, private_cache: Path) -> None:
    out = tmp_path / "dist"
    process = _build("rpi", out, private_cache)
    assert process.stderr is not None
    seen = [process.stderr.readline() for _ in range(3)]  # "edgekit: building", "  load ...", "  load done"
    assert seen[-1].startswith("  load done"), seen
    process.send_signal(signal.SIGTERM)  # while it compiles, with files in its work folder
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == ExitStatus.INTERRUPTED, stderr
    assert "interrupted" in stderr
    assert sorted(p.name for p in out.iterdir()) == []  # no .edgekit-work-*, no .partial, no artifact


def test_captured_output_sends_descriptor_writes_to_the_log_and_keeps_edgekit_lines(
    capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    log = tmp_path / "build.log"

    with captured_output(log) as (out, err):
        os.write(2, b"[cpuinfo_utils.cpp:71] from C++\n")
        os.write(1, b"converter progress\n")
        with open(2, "w", closefd=False) as python_stderr:  # what sys.stderr is in a real process
            print("python-level noise", file=python_stderr)
        err.write("edgekit: own line\n")
        out.write("artifact   summary\n")
    captured = capfd.readouterr()

    assert captured.err == "edgekit: own line\n" and captured.out == "artifact   summary\n"
    assert log.read_text().splitlines() == ["[cpuinfo_utils.cpp:71] from C++", "converter progress",
                                            "python-level noise"]  # fmt: skip


def test_sigterm_becomes_keyboard_interrupt_and_the_handler_is_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)

    with pytest.raises(KeyboardInterrupt), sigterm_interrupts():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this

    assert signal.getsignal(signal.SIGTERM) is before
