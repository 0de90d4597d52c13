"""A build's terminal session: third-party output goes to a log file, SIGTERM interrupts like Ctrl-C.

Converters and runtimes write to the process's file descriptors 1 and 2 directly, from C++ (cpuinfo,
glog-style torch warnings) as well as from Python (coremltools' "Failed to load _MLModelProxy",
tqdm bars, warnings). Redirecting `sys.stdout` cannot catch the C++ part, so `captured_output`
points descriptors 1 and 2 at the log with `os.dup2`, and gives edgekit's own lines streams on
copies of the original descriptors: they still reach the terminal (or the pipe, or CliRunner's
buffers, which are not descriptors and are used as they are).

The log lives outside the output folder, where a failed build must leave nothing:
`$XDG_CACHE_HOME/edgekit/logs/<name>-<target>.log` (default `~/.cache/edgekit/logs/`), replaced by
the next build of the same name and target (`run-<folder>.log` and `verify-<folder>.log` for those).
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType, SimpleNamespace
from typing import Any, TextIO, cast


def log_path(stem: str) -> Path:
    """Return `$XDG_CACHE_HOME/edgekit/logs/<stem>.log` (default under ~/.cache)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgekit" / "logs" / f"{stem}.log"


def build_log(model: str, name: str | None, target: str) -> Path:
    """Return the log file of a build of `model` for `target`, named like the artifact folder."""
    from edgekit.stages.package import artifact_name

    # artifact_name reads only the request's model and name; the build's context does not exist yet.
    request = SimpleNamespace(request=SimpleNamespace(model=model, name=name))
    target_name = Path(target).stem if target.endswith(".toml") else target
    return log_path(f"{artifact_name(cast(Any, request))}-{target_name}")


def terminal_streams(log: Path | None) -> contextlib.AbstractContextManager[tuple[TextIO, TextIO]]:
    """Return `captured_output(log)`, or with no log (--verbose) the streams as they are."""
    return contextlib.nullcontext((sys.stdout, sys.stderr)) if log is None else captured_output(log)


@contextlib.contextmanager
def captured_output(log: Path) -> Iterator[tuple[TextIO, TextIO]]:
    """Send everything written to descriptors 1 and 2 to `log`; yield (stdout, stderr) that reach the terminal."""
    _flush()
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError:  # no writable log: show everything rather than fail the build
        yield sys.stdout, sys.stderr
        return
    try:
        saved = {fd: os.dup(fd) for fd in (1, 2)}
    except OSError:  # a closed descriptor: nothing to protect, nothing to capture
        os.close(log_fd)
        yield sys.stdout, sys.stderr
        return
    owned: list[TextIO] = []
    terminal_out = _terminal(sys.stdout, saved, owned)
    terminal_err = _terminal(sys.stderr, saved, owned)
    try:
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        yield terminal_out, terminal_err
    finally:
        _flush()  # what Python and C libraries buffered belongs in the log, not on the terminal later
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        for stream in owned:
            stream.close()
        os.close(log_fd)


def _terminal(stream: TextIO, saved: dict[int, int], owned: list[TextIO]) -> TextIO:
    """Return a stream that writes where `stream` writes now, even after descriptors 1 and 2 move."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):  # CliRunner's buffers, a StringIO
        return stream
    if fd not in saved:
        return stream
    copy = open(  # closed by captured_output
        os.dup(saved[fd]),
        "w",
        buffering=1,
        encoding=getattr(stream, "encoding", None) or "utf-8",
        errors="backslashreplace",
    )
    owned.append(copy)
    return copy


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(Exception):  # C stdio buffers (printf from a converter's C++ core)
        import ctypes

        ctypes.CDLL(None).fflush(None)


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Turn SIGTERM (sent by `timeout` and CI cancellation) into KeyboardInterrupt, so cleanup runs as for Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
        yield
        return

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
