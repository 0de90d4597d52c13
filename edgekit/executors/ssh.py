"""The ssh executor: requests run on a real board (`ssh://pi@raspberrypi.local[:port][?python=PATH]`).

One ssh session per request: a tar stream carries the request (and the runner) to a fresh temporary
folder on the board, the runner writes its outputs there, a tar stream brings result.json and the
outputs back, and the folder is removed. Nothing is installed on the board and nothing stays behind.
The board needs a POSIX shell, tar and gzip, plus the runtime: Python 3 with numpy and onnxruntime
for an rpi artifact (`?python=` names another interpreter, e.g. a venv's), glibc >= 2.36 and
libstdc++ from GCC 12 (Debian/Raspberry Pi OS bookworm or newer) for the ExecuTorch runner, which is
the one `edgekit emulator setup aarch64` built and is sent along with its libraries.

Authentication is ssh's own (keys, agent, ~/.ssh/config); `EDGEKIT_SSH_COMMAND` replaces the `ssh`
command line, like GIT_SSH_COMMAND (e.g. "ssh -F ./ssh_config -i ./key").
"""

from __future__ import annotations

import io
import os
import shlex
import subprocess
import tarfile
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from edgekit.errors import InputError, MissingDependencyError, UsageError
from edgekit.executors import userland
from edgekit.executors.base import PROBE_SCRIPT, Platform, RunReport, parse_probe
from edgekit.executors.request import RESULT, read_request, read_result

RUNNER_DIR = ".edgekit-runner"  # inside the request's temporary folder on the board


class SshExecutor:
    """Run requests on a host reached by ssh, with key authentication (BatchMode: never a password prompt)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "ssh" or not parts.hostname:
            raise UsageError(f"'{url}' is not an ssh URL", hint="use ssh://user@host[:port][?python=/path/to/python3]")
        self.url = url
        self.name = url.split("?")[0]
        self.destination = f"{parts.username}@{parts.hostname}" if parts.username else parts.hostname
        try:
            self.port = parts.port
        except ValueError:
            raise UsageError(f"'{url}' has an invalid port") from None
        query = parse_qs(parts.query)
        unknown = sorted(set(query) - {"python"})
        if unknown:
            raise UsageError(f"unknown ssh URL parameter '{unknown[0]}'", hint="the only parameter is python=PATH")
        self.python = query.get("python", ["python3"])[0]
        self._platform: Platform | None = None

    def _ssh(self, script: str, *, stdin: bytes = b"", timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
        base = shlex.split(os.environ.get("EDGEKIT_SSH_COMMAND", "ssh"))
        port = ["-p", str(self.port)] if self.port else []
        argv = [*base, "-o", "BatchMode=yes", *port, "--", self.destination, script]
        try:
            # noqa below: an argv list, no local shell; the script is edgekit's own, run by the remote shell.
            done = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout, check=False)  # noqa: S603
        except FileNotFoundError:
            raise MissingDependencyError(
                f"'{base[0]}' is not installed", hint="apt-get install openssh-client"
            ) from None
        except subprocess.TimeoutExpired:
            raise InputError(f"{self.name} did not answer within {timeout:.0f} s") from None
        if done.returncode == 255:  # ssh's own failure: connection, host key, authentication
            why = done.stderr.decode(errors="replace").strip().splitlines()
            raise InputError(f"cannot reach {self.name}: {why[-1] if why else 'ssh failed'}")
        return done

    def platform(self) -> Platform:
        if self._platform is None:
            facts = parse_probe(self._ssh(PROBE_SCRIPT).stdout.decode(errors="replace"))
            isa = facts.get("machine", "unknown")
            # qemu-user behind the login (a userland on an x86 host) shows aarch64 with an x86 /proc/cpuinfo,
            # or QEMU_CPU in the login's environment; a real board shows its core's part number.
            qemu_cpu = facts.get("qemu_cpu", "")
            emulated = True if qemu_cpu or facts.get("vendor_id") else False if "cpu_part" in facts else None
            system = ", ".join(v for v in (facts.get("model"), facts.get("os"), facts.get("kernel")) if v)
            self._platform = Platform(
                executor=self.name,
                isa=isa,
                cpu=qemu_cpu or ("unknown" if emulated else facts.get("cpu", "unknown")),
                emulated=emulated,
                emulator=f"qemu-user behind the ssh login (QEMU_CPU={qemu_cpu or 'unset'})" if emulated else "",
                features=tuple(facts.get("features", "").split()),
                system=system,
            )
        return self._platform

    def run(self, request: Path) -> RunReport:
        table = read_request(request)
        runtime = str(table["runtime"])
        samples = int(str(table["samples"]))
        payload = io.BytesIO()
        with tarfile.open(fileobj=payload, mode="w:gz") as archive:
            archive.add(request, arcname=".", filter=_no_outputs)
            if runtime == "onnxruntime":
                archive.add(str(resources.files("edgekit.executors") / "remote" / "run_onnx.py"), "run_onnx.py")
                command = f'{shlex.quote(self.python)} "$d/run_onnx.py" "$d"'
            elif runtime == "executorch":
                self._add_native_runner(archive)
                command = f'"$d/{RUNNER_DIR}/bin/run_pte" "$d"'
            else:
                raise MissingDependencyError(f"{self.name} has no runner for {runtime}")
        script = (
            'd=$(mktemp -d "${TMPDIR:-/tmp}/edgekit-XXXXXX") || exit 3; trap \'rm -rf "$d"\' EXIT; '
            f'tar -xzf - -C "$d" || exit 3; {command} >&2; '
            'cd "$d" && tar -czf - result.json $(ls -d samples/*/outputs 2>/dev/null)'
        )
        done = self._ssh(script, stdin=payload.getvalue(), timeout=300 + 30 * samples)
        try:
            with tarfile.open(fileobj=io.BytesIO(done.stdout), mode="r:gz") as archive:
                _extract(archive, request)
        except tarfile.TarError:
            why = done.stderr.decode(errors="replace").strip()[-400:]
            raise InputError(f"the {runtime} runner on {self.name} sent nothing back: {why}") from None
        if not (request / RESULT).is_file():
            raise InputError(f"the {runtime} runner did not start on {self.name}")
        return read_result(request, self.name)

    def _add_native_runner(self, archive: tarfile.TarFile) -> None:
        """Send the aarch64 run_pte and its ExecuTorch libraries along (built by the emulator setup)."""
        if self.platform().isa != "aarch64":
            raise InputError(f"{self.name} is {self.platform().isa}; the ExecuTorch runner here is built for aarch64")
        bundle = userland.cache_dir() / "rootfs" / userland.RUN_PTE[1:].rsplit("/bin/", 1)[0]
        if not (bundle / "bin" / "run_pte").is_file():
            raise MissingDependencyError(
                "the aarch64 ExecuTorch runner (run_pte) is not built",
                hint="run `edgekit emulator setup aarch64` once: it cross-compiles run_pte against the aarch64 wheel",
            )
        archive.add(bundle / "bin" / "run_pte", f"{RUNNER_DIR}/bin/run_pte")
        for library in sorted((bundle / "lib").glob("*.so*")):
            archive.add(library, f"{RUNNER_DIR}/lib/{library.name}")


def _no_outputs(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """Leave out stale outputs and results: the board starts from the inputs alone."""
    parts = Path(member.name).parts
    return None if "outputs" in parts or member.name.endswith(RESULT) else member


def _extract(archive: tarfile.TarFile, folder: Path) -> None:
    """Unpack what the board sent: regular files and folders below `folder` only."""
    for member in archive.getmembers():
        parts = Path(member.name).parts
        if not (member.isfile() or member.isdir()) or member.name.startswith("/") or ".." in parts:
            raise InputError(f"the board sent an unexpected archive member '{member.name}'")
    if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4
        archive.extractall(folder, filter="data")
    else:
        archive.extractall(folder)  # noqa: S202 - every member checked above
