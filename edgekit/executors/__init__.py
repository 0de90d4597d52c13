"""Executors: where an artifact runs. A runner executes an artifact; an executor says where.

`host` is this machine, `aarch64` the emulated userland (`edgekit emulator setup aarch64`), and
`ssh://user@host[:port]` a real board. They share one protocol of files (`request.py`) and a small
runner per runtime on the other side that needs only the runtime and numpy (`remote/run_onnx.py`
for ONNX Runtime, `examples/android/cpp/run_pte.cpp` for ExecuTorch). Modules load lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgekit.errors import UsageError

if TYPE_CHECKING:
    from edgekit.executors.base import Executor

EMULATED_CPUS = ("cortex-a72", "cortex-a76", "max")  # QEMU_CPU models offered by `verify --cpu`
DEFAULT_CPU = "cortex-a72"  # Raspberry Pi 4: the oldest core edgekit targets, no int8 dot product


def get_executor(on: str, *, cpu: str | None = None) -> Executor:
    """Return the executor `on` names: "host", "aarch64" (emulated, with `cpu`) or "ssh://user@host[:port]"."""
    if cpu is not None and on != "aarch64":
        raise UsageError(f"--cpu chooses the emulated CPU and applies only to --on aarch64, not to '{on}'")
    if on == "host":
        from edgekit.executors.host import HostExecutor

        return HostExecutor()
    if on == "aarch64":
        from edgekit.executors.qemu import QemuExecutor

        return QemuExecutor(cpu or DEFAULT_CPU)
    if on.startswith("ssh://"):
        from edgekit.executors.ssh import SshExecutor

        return SshExecutor(on)
    raise UsageError(f"unknown executor '{on}'", hint="use aarch64 (emulated here) or ssh://user@host[:port]")
