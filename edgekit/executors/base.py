"""The executor contract: run a request folder somewhere, and say what that somewhere is.

A runner executes an artifact; an executor says where (this host, an emulated aarch64 userland, a
board over ssh). Executors speak files (see `request.py`): named inputs in, named `.npy` outputs
back, so the program on the other side needs only the runtime and numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# Which program runs a backend's artifact on the other side. A runtime absent here has no runner off
# its own platform (Core ML: Apple devices only); `NO_RUNNER` says why, for the result.
REMOTE_RUNNERS: dict[str, str] = {"onnxruntime": "run_onnx.py", "executorch": "run_pte"}
NO_RUNNER: dict[str, str] = {
    "coreml": "no Apple runtime exists on this machine or on any Linux board: Core ML runs only on macOS, iOS "
    "and iPadOS, so the artifact was checked by the host-side proxy and its status stays 'proxy'",
}

# Linux aarch64 AT_HWCAP / AT_HWCAP2 bits that decide which int8 and fp16 kernels a runtime picks.
HWCAP_BITS = {1: "asimd", 9: "fphp", 10: "asimdhp", 20: "asimddp", 22: "sve", 23: "asimdfhm"}
HWCAP2_BITS = {1: "sve2", 13: "i8mm", 14: "bf16", 23: "sme"}
# MIDR part numbers of Arm Ltd. cores (implementer 0x41), as /proc/cpuinfo's "CPU part" shows them.
ARM_PARTS = {
    0xD03: "cortex-a53", 0xD04: "cortex-a35", 0xD05: "cortex-a55", 0xD07: "cortex-a57", 0xD08: "cortex-a72",
    0xD09: "cortex-a73", 0xD0A: "cortex-a75", 0xD0B: "cortex-a76", 0xD0C: "neoverse-n1", 0xD0D: "cortex-a77",
    0xD40: "neoverse-v1", 0xD41: "cortex-a78", 0xD44: "cortex-x1", 0xD46: "cortex-a510", 0xD47: "cortex-a710",
    0xD48: "cortex-x2", 0xD49: "neoverse-n2", 0xD4D: "cortex-a715", 0xD4E: "cortex-x3", 0xD80: "cortex-a520",
    0xD81: "cortex-a720", 0xD82: "cortex-x4",
}  # fmt: skip

# A POSIX sh probe: the facts `parse_probe` reads. LD_SHOW_AUXV makes glibc's loader print the
# auxiliary vector, i.e. the CPU features the kernel (or qemu-user) gives programs.
PROBE_SCRIPT = r"""
echo "machine=$(uname -m)"
echo "kernel=$(uname -sr)"
[ -n "${QEMU_CPU:-}" ] && echo "qemu_cpu=$QEMU_CPU"
[ -r /proc/device-tree/model ] && echo "model=$(tr -d '\000' < /proc/device-tree/model)"
for key in 'CPU implementer' 'CPU part' vendor_id Model; do
  [ -r /proc/cpuinfo ] && grep -m1 "^$key" /proc/cpuinfo | sed 's/^/cpuinfo=/'
done
[ -r /etc/os-release ] && . /etc/os-release && echo "os=$PRETTY_NAME"
LD_SHOW_AUXV=1 /bin/true 2>/dev/null | grep -E '^AT_HWCAP2?:'
true
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class Platform:
    """Where a check ran: instruction set, CPU, and whether it was emulated."""

    executor: str  # "host", "qemu-user", "ssh://pi@raspberrypi.local"
    isa: str  # "aarch64", "x86_64"
    cpu: str  # "cortex-a72", or what the board reports, or "unknown"
    emulated: bool | None  # None: could not tell
    emulator: str = ""  # "qemu-aarch64 7.2.22 (qemu-user)" when emulated here
    features: tuple[str, ...] = ()  # the kernel-visible features that steer int8 kernels: asimddp, i8mm, sve...
    system: str = ""  # board model and OS, as far as they are known
    notes: tuple[str, ...] = ()  # caveats about this platform that a reader of the result must see

    def line(self) -> str:
        how = "emulated by " + self.emulator if self.emulated else "native" if self.emulated is False else "unknown"
        features = ", ".join(self.features) or "none reported"
        return f"{self.isa} {self.cpu} ({how}; features: {features})"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunReport:
    """What the runner on the other side reported in result.json."""

    runner: str  # "run_onnx.py", "run_pte", "host"
    runtime: str  # "onnxruntime", "executorch"
    runtime_version: str
    failed: tuple[tuple[int, str], ...] = ()  # (sample, why) for each sample that did not run
    error: str = ""  # why nothing ran (the artifact did not load), empty otherwise


class Executor(Protocol):
    """Runs a request folder (see `request.py`) somewhere and says where."""

    name: str

    def platform(self) -> Platform:
        """Return where requests run (probed once, then cached)."""
        ...

    def run(self, request: Path) -> RunReport:
        """Run `request` in place: its runner writes samples/<i>/outputs/<name>.npy and result.json.

        Raises MissingDependencyError when this executor cannot run the request's runtime (not set up,
        no runner for it) and InputError when the far side cannot be reached.
        """
        ...


def parse_probe(text: str) -> dict[str, str]:
    """Return the facts PROBE_SCRIPT printed: machine, kernel, model, os, cpu, vendor, features."""
    facts: dict[str, str] = {}
    features: list[str] = []
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key in ("machine", "kernel", "model", "os", "qemu_cpu"):
            facts[key] = value.strip()
        elif sep and key == "cpuinfo":
            field, _, found = value.partition(":")
            facts[field.strip().lower().replace(" ", "_")] = found.strip()
        elif line.startswith(("AT_HWCAP:", "AT_HWCAP2:")):
            name, _, bits = line.partition(":")
            table = HWCAP2_BITS if name == "AT_HWCAP2" else HWCAP_BITS
            try:
                value_bits = int(bits.strip(), 16)
            except ValueError:
                continue
            features += [feature for bit, feature in table.items() if value_bits >> bit & 1]
    facts["features"] = " ".join(features)
    if "cpu_part" in facts and facts.get("cpu_implementer", "0x41").lower() == "0x41":
        try:
            facts["cpu"] = ARM_PARTS.get(int(facts["cpu_part"], 16), f"arm part {facts['cpu_part']}")
        except ValueError:
            pass
    return facts
