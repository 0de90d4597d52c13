"""The qemu-user executor: requests run in the cached aarch64 userland, on an emulated Cortex core.

qemu-user 7.2 (Debian bookworm) emulates the instruction set and the CPU features a core reports
(AT_HWCAP: no dot product on a Cortex-A72, dot product on a Cortex-A76), but not /proc/cpuinfo or
/sys. Without them the cpuinfo library inside XNNPACK refuses to start and ONNX Runtime falls back to
generic CPU detection, so before each run the executor writes plain files at those paths inside the
userland describing the emulated core (nothing is mounted). The runtimes then pick the kernels the
device would. Timings under emulation mean nothing and are never recorded.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from edgekit.errors import ConfigError, InputError, MissingDependencyError
from edgekit.executors import userland
from edgekit.executors.base import Platform, RunReport, parse_probe
from edgekit.executors.request import RESULT, read_request, read_result

# Names as the kernel prints them in /proc/cpuinfo "Features", by AT_HWCAP / AT_HWCAP2 bit.
HWCAP_NAMES = (
    "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop "
    "sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg"
).split()
HWCAP2_NAMES = (
    "dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svef32mm svef64mm svebf16 i8mm "
    "bf16 dgh rng bti mte ecv afp rpres mte3 sme"
).split()


@dataclass(frozen=True, slots=True, kw_only=True)
class Core:
    """What /proc/cpuinfo says about one emulated core (MIDR fields)."""

    implementer: int
    variant: int
    part: int
    revision: int
    devices: str

    @property
    def midr(self) -> int:
        return self.implementer << 24 | self.variant << 20 | 0xF << 16 | self.part << 4 | self.revision


CORES = {
    "cortex-a72": Core(implementer=0x41, variant=0, part=0xD08, revision=3, devices="Raspberry Pi 4"),
    "cortex-a76": Core(implementer=0x41, variant=4, part=0xD0B, revision=1, devices="Raspberry Pi 5, phone big cores"),
    # qemu's "max" is no real core: an unknown MIDR makes the runtimes dispatch on features alone.
    "max": Core(implementer=0, variant=0, part=0, revision=0, devices="every feature qemu implements"),
}
MAX_NOTE = (
    "--cpu max turns on every feature qemu 7.2 emulates, SME included: measured here, XNNPACK's int8 outputs "
    "were wrong under it while 'max,sme=off' matched the host bit for bit; suspect the emulator's young SME "
    "support before the artifact, and confirm on SME hardware"
)


class QemuExecutor:
    """Run requests in the aarch64 userland under qemu-user with a chosen CPU model."""

    def __init__(self, cpu: str = "cortex-a72", folder: Path | None = None) -> None:
        if cpu not in CORES:
            raise ConfigError(f"unknown emulated CPU '{cpu}'", hint=f"use one of: {', '.join(CORES)}")
        self.cpu = cpu
        self.folder = folder or userland.cache_dir()
        self.root = self.folder / "rootfs"
        self.name = f"qemu-aarch64 ({cpu})"
        self._platform: Platform | None = None
        self._auxv = ""  # what glibc printed for LD_SHOW_AUXV=1 under this CPU model

    def _ready(self) -> dict[str, Any]:
        found = userland.status(self.folder)
        if not found.ready:
            raise MissingDependencyError(
                f"the aarch64 userland is not set up in {self.folder}",
                hint="run `edgekit emulator setup aarch64` once (as root; it needs apt packages "
                f"{userland.APT_PACKAGES})",
            )
        if found.missing:
            raise MissingDependencyError(f"running in the aarch64 userland needs {', '.join(found.missing)}")
        return found.steps

    def platform(self) -> Platform:
        if self._platform is None:
            steps = self._ready()
            auxv = userland.chroot(self.root, "/bin/true", cpu=self.cpu, guest_env=("LD_SHOW_AUXV=1",), timeout=60)
            self._auxv = auxv.stdout
            facts = parse_probe(auxv.stdout)
            self._platform = Platform(
                executor="qemu-user",
                isa="aarch64",
                cpu=self.cpu,
                emulated=True,
                emulator=f"{steps['rootfs'].get('qemu', 'qemu-aarch64')} (qemu-user, QEMU_CPU={self.cpu})",
                features=tuple(facts["features"].split()),
                system=f"Debian {steps['rootfs'].get('debian_version', userland.SUITE)} arm64 userland "
                f"({CORES[self.cpu].devices})",
                notes=(MAX_NOTE,) if self.cpu == "max" else (),
            )
        return self._platform

    def run(self, request: Path) -> RunReport:
        self._ready()
        table = read_request(request)
        runtime = str(table["runtime"])
        stage_name = f"edgekit-{uuid.uuid4().hex[:12]}"
        stage = self.root / "tmp" / stage_name
        inside = f"/tmp/{stage_name}"  # noqa: S108 - the userland's /tmp, seen from inside the chroot
        if runtime == "onnxruntime":
            command = [f"{userland.VENV}/bin/python", f"{inside}/run_onnx.py", inside]
        elif runtime == "executorch":
            command = [userland.RUN_PTE, inside]
        else:
            raise MissingDependencyError(f"the aarch64 userland has no runner for {runtime}")
        samples = int(str(table["samples"]))
        with userland.locked(self.folder):
            try:
                shutil.copytree(request, stage)
                shutil.copyfile(_remote_script("run_onnx.py"), stage / "run_onnx.py")
                self._describe_core()
                done = userland.chroot(self.root, *command, cpu=self.cpu, timeout=300 + 60 * samples)
                _copy_back(stage, request)
            finally:
                shutil.rmtree(stage, ignore_errors=True)
        if not (request / RESULT).is_file():
            why = done.stderr.strip()[-400:]
            raise InputError(f"the {runtime} runner did not start in the aarch64 userland: {why}")
        return read_result(request, self.name)

    def _describe_core(self) -> None:
        """Write /proc/cpuinfo and /sys/devices/system/cpu/* for one core of the emulated model."""
        self.platform()
        core = CORES[self.cpu]
        names = _feature_names(self._auxv)
        (self.root / "proc").mkdir(exist_ok=True)
        (self.root / "proc" / "cpuinfo").write_text(
            f"processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: {' '.join(names)}\n"
            f"CPU implementer\t: {core.implementer:#x}\nCPU architecture: 8\nCPU variant\t: {core.variant:#x}\n"
            f"CPU part\t: {core.part:#05x}\nCPU revision\t: {core.revision}\n\n",
            encoding="utf-8",
        )
        cpus = self.root / "sys" / "devices" / "system" / "cpu"
        (cpus / "cpu0" / "regs" / "identification").mkdir(parents=True, exist_ok=True)
        for name in ("possible", "present", "online"):
            (cpus / name).write_text("0\n", encoding="utf-8")
        (cpus / "cpu0" / "regs" / "identification" / "midr_el1").write_text(f"{core.midr:#018x}\n", encoding="utf-8")


def _feature_names(auxv: str) -> list[str]:
    names: list[str] = []
    for line in auxv.splitlines():
        key, _, value = line.partition(":")
        table = {"AT_HWCAP": HWCAP_NAMES, "AT_HWCAP2": HWCAP2_NAMES}.get(key.strip())
        if table is None:
            continue
        bits = int(value.strip(), 16)
        names += [name for bit, name in enumerate(table) if bits >> bit & 1]
    return names


def _copy_back(stage: Path, request: Path) -> None:
    if (stage / RESULT).is_file():
        shutil.copyfile(stage / RESULT, request / RESULT)
    for outputs in stage.glob("samples/*/outputs"):
        target = request / outputs.relative_to(stage)
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(outputs, target)


def _remote_script(name: str) -> Path:
    return Path(str(resources.files("edgekit.executors") / "remote" / name))
