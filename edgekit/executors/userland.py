"""The emulated aarch64 userland: built once by `edgekit emulator setup aarch64`, cached, then only read.

Layout under `$XDG_CACHE_HOME/edgekit/aarch64/` (default `~/.cache/edgekit/aarch64/`):

    rootfs/                        Debian bookworm arm64 minbase with python3 (debootstrap, qemu-user)
    rootfs/opt/edgekit/venv/       numpy + onnxruntime from aarch64 wheels (pip --no-index inside)
    rootfs/opt/edgekit/executorch/ the aarch64 executorch wheel's libraries, and bin/run_pte
    wheels/                        the aarch64 wheels, downloaded on the host
    executorch/                    the unpacked aarch64 executorch wheel (headers, CMake package) to build against
    build/                         the cross build tree of run_pte (g++-aarch64-linux-gnu + CMake toolchain file)
    state.json                     what is there and which versions; written after each step

Every step is skipped when state.json says it is done with the same versions, so a second setup takes
seconds. run_pte is cross-compiled on the host: measured here, that takes ~15 s where compiling inside
the emulated userland took minutes (see the report in issue 14). Nothing here runs at verify time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import InternalError, MissingDependencyError

SUITE = "bookworm"
PYTHON_TAG = "3.11"  # bookworm's python3
ONNXRUNTIME = "1.32.0"  # the host's pin (pyproject [rpi]): the same runtime on both sides
EXECUTORCH = "1.5.1"  # the host's pin (pyproject [android])
PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64")
MIRROR = os.environ.get("EDGEKIT_DEBIAN_MIRROR", "http://deb.debian.org/debian")
APT_PACKAGES = "qemu-user-static binfmt-support debootstrap g++-aarch64-linux-gnu"
VENV = "/opt/edgekit/venv"
RUN_PTE = "/opt/edgekit/executorch/bin/run_pte"
CHROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}
SETUP_HINT = (
    f"as root: apt-get install -y {APT_PACKAGES}; mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; "
    "update-binfmts --enable qemu-aarch64 (.ci/setup-aarch64 does all of it)"
)


def cache_dir() -> Path:
    """Return where the userland lives: $XDG_CACHE_HOME/edgekit/aarch64, else ~/.cache/edgekit/aarch64."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgekit" / "aarch64"


@dataclass(frozen=True, slots=True, kw_only=True)
class Status:
    """What `edgekit emulator status aarch64` shows."""

    path: Path
    ready: bool  # every step done: verify --on aarch64 can run
    steps: dict[str, Any] = field(default_factory=dict)  # state.json: versions and timings per step
    missing: tuple[str, ...] = ()  # what this host lacks to run (or set up) the userland


def status(folder: Path | None = None) -> Status:
    """Return the state of the userland in `folder` (default: the user cache) without changing anything."""
    folder = folder or cache_dir()
    steps = _read_state(folder)
    done = all(k in steps for k in ("rootfs", "python", "executorch")) and (folder / "rootfs" / RUN_PTE[1:]).is_file()
    return Status(path=folder, ready=done, steps=steps, missing=tuple(missing_for_running()))


def missing_for_running() -> list[str]:
    """Return what this host lacks to run programs in the userland (chroot needs root)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (chroot)")
    if not shutil.which("chroot"):
        missing.append("chroot (coreutils)")
    return missing


def missing_for_setup() -> list[str]:
    """Return everything this host lacks to build the userland, each as a short phrase."""
    missing = missing_for_running()
    for tool, package in (
        ("debootstrap", "debootstrap"),
        ("qemu-aarch64-static", "qemu-user-static"),
        ("aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu"),
    ):
        if not shutil.which(tool):
            missing.append(f"{tool} (apt package {package})")
    binfmt = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    try:
        enabled = binfmt.read_text(encoding="utf-8").splitlines()[0] == "enabled"
    except (OSError, IndexError):
        enabled = False
    if not enabled:
        missing.append("binfmt_misc handler qemu-aarch64 (binfmt-support, enabled)")
    import importlib.util

    for module in ("cmake", "ninja"):
        if importlib.util.find_spec(module) is None:
            missing.append(f"the '{module}' Python package (pip install 'edgekit-deploy[emulator]')")
    return missing


def setup(folder: Path | None = None, *, say: Callable[[str], None] = lambda _: None) -> Status:
    """Build the userland once (idempotent); raise MissingDependencyError when this host cannot."""
    folder = folder or cache_dir()
    missing = missing_for_setup()
    if missing:
        raise MissingDependencyError(f"setting up the aarch64 userland needs {', '.join(missing)}", hint=SETUP_HINT)
    folder.mkdir(parents=True, exist_ok=True)
    with locked(folder):
        state = _read_state(folder)
        for name, step in (("rootfs", _rootfs), ("python", _python), ("executorch", _executorch)):
            started = time.monotonic()
            facts = step(folder, state.get(name, {}), say)
            if facts is None:
                say(f"{name}: up to date")
                continue
            state[name] = {**facts, "seconds": round(time.monotonic() - started, 1)}
            (folder / "state.json").write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
            say(f"{name}: done in {state[name]['seconds']:.0f} s")
    return status(folder)


@contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold the userland's lock: one setup or one run at a time (runs rewrite its /proc/cpuinfo)."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def chroot(
    root: Path, *command: str, cpu: str = "max", guest_env: tuple[str, ...] = (), timeout: float = 1800, **kwargs: Any
) -> Any:
    """Run an aarch64 `command` inside `root` under qemu-user with `cpu`; return the CompletedProcess.

    qemu-aarch64-static is named explicitly (so the first program needs no binfmt handler) and
    QEMU_CPU is set, so that programs it starts through binfmt_misc emulate the same CPU. `guest_env`
    ("NAME=value") reaches the aarch64 program only, not the host's chroot.
    """
    env = {**CHROOT_ENV, "QEMU_CPU": cpu, **kwargs.pop("env", {})}
    guest = [arg for setting in guest_env for arg in ("-E", setting)]
    argv = ["chroot", str(root), "/usr/bin/qemu-aarch64-static", "-cpu", cpu, *guest, *command]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)  # noqa: S603


def _run(argv: list[str], what: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # noqa: S603 - argv, no shell
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        raise SetupError(f"{what} failed (exit {done.returncode}): {' | '.join(tail)}")
    return done


class SetupError(MissingDependencyError):
    """A setup step failed (network, disk, a tool's error): the message carries the tool's last lines."""


def _rootfs(folder: Path, done: dict[str, Any], say: Callable[[str], None]) -> dict[str, Any] | None:
    root = folder / "rootfs"
    qemu = Path(shutil.which("qemu-aarch64-static") or "/usr/bin/qemu-aarch64-static")
    if done.get("suite") == SUITE and (root / "etc" / "debian_version").is_file():
        if _sha256(qemu) != _sha256(root / "usr/bin/qemu-aarch64-static"):  # the host's qemu was upgraded
            shutil.copy2(qemu, root / "usr/bin/qemu-aarch64-static")
        return None
    partial = folder / "rootfs.partial"
    _remove_tree(partial)
    say(f"rootfs: debootstrap {SUITE} arm64 minbase from {MIRROR} (a few minutes)")
    include = "--include=python3,python3-venv"
    _run(["debootstrap", "--arch=arm64", "--foreign", "--variant=minbase", include, SUITE, str(partial), MIRROR],
         "debootstrap (first stage)")  # fmt: skip
    shutil.copy2(qemu, partial / "usr/bin/qemu-aarch64-static")
    try:
        _run(["chroot", str(partial), "/debootstrap/debootstrap", "--second-stage"], "debootstrap (second stage)",
             env=CHROOT_ENV)  # fmt: skip
    finally:
        _unmount_below(partial)  # the second stage mounts /proc and /sys inside and may leave them
    _remove_tree(root)
    partial.rename(root)
    version = (root / "etc" / "debian_version").read_text(encoding="utf-8").strip()
    return {"suite": SUITE, "debian_version": version, "qemu": _qemu_version(qemu)}


def _python(folder: Path, done: dict[str, Any], say: Callable[[str], None]) -> dict[str, Any] | None:
    root = folder / "rootfs"
    numpy_pin = _host_version("numpy") or "2.4.6"
    wanted = {"onnxruntime": ONNXRUNTIME, "numpy": numpy_pin}
    if all(done.get(k) == v for k, v in wanted.items()) and (root / VENV[1:] / "bin" / "python").exists():
        return None
    wheels = folder / "wheels"
    say(f"python: downloading aarch64 wheels onnxruntime=={ONNXRUNTIME} numpy=={numpy_pin}")
    _download([f"onnxruntime=={ONNXRUNTIME}", f"numpy=={numpy_pin}"], wheels)
    inside = root / "opt" / "edgekit" / "wheels"
    _remove_tree(inside)
    shutil.copytree(wheels, inside)
    try:
        if not (root / VENV[1:] / "bin" / "python").exists():
            _check(chroot(root, "/usr/bin/python3", "-m", "venv", VENV), "python3 -m venv in the userland")
        say("python: pip install --no-index inside the userland (emulated, ~30 s)")
        pip = [f"{VENV}/bin/python", "-m", "pip", "install", "--no-index", "--find-links", "/opt/edgekit/wheels",
               "--disable-pip-version-check", "-q", *(f"{k}=={v}" for k, v in wanted.items())]  # fmt: skip
        _check(chroot(root, *pip, env={"PIP_NO_CACHE_DIR": "1"}), "pip install in the userland")
    finally:
        _remove_tree(inside)
    probe = "import sys, numpy, onnxruntime; print(sys.version.split()[0], numpy.__version__, onnxruntime.__version__)"
    found = _check(chroot(root, f"{VENV}/bin/python", "-c", probe), "importing onnxruntime in the userland")
    python, numpy_version, ort_version = found.stdout.split()[-3:]
    return {"python": python, "numpy": numpy_version, "onnxruntime": ort_version}


def _executorch(folder: Path, done: dict[str, Any], say: Callable[[str], None]) -> dict[str, Any] | None:
    root = folder / "rootfs"
    source = runner_source()
    digest = source_digest(source)
    binary = root / RUN_PTE[1:]
    if done.get("version") == EXECUTORCH and done.get("runner_source") == digest and binary.is_file():
        return None
    package = folder / "executorch"
    if done.get("version") != EXECUTORCH or not (package / "share" / "cmake").is_dir():
        say(f"executorch: downloading the aarch64 executorch=={EXECUTORCH} wheel (its libraries, not torch)")
        wheels = folder / "wheels"
        _download([f"executorch=={EXECUTORCH}"], wheels, deps=False)
        wheel = next(wheels.glob(f"executorch-{EXECUTORCH}-*aarch64*.whl"))
        unpacked = folder / "executorch.partial"
        _remove_tree(unpacked)
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(unpacked, [n for n in archive.namelist() if n.startswith(("executorch/lib/",
                               "executorch/include/", "executorch/share/"))])  # fmt: skip
        _remove_tree(package)
        (unpacked / "executorch").rename(package)
        _remove_tree(unpacked)
    say("executorch: cross-compiling run_pte with g++-aarch64-linux-gnu")
    build = folder / "build"
    _remove_tree(build)
    import cmake  # type: ignore[import-untyped]
    import ninja  # type: ignore[import-untyped]

    cmake_bin = str(Path(cmake.CMAKE_BIN_DIR) / "cmake")
    _run([cmake_bin, "-S", str(source), "-B", str(build), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
          f"-DCMAKE_MAKE_PROGRAM={Path(ninja.BIN_DIR) / 'ninja'}",
          f"-DCMAKE_TOOLCHAIN_FILE={source / 'aarch64-linux-gnu.cmake'}",
          f"-Dexecutorch_DIR={package / 'share' / 'cmake'}"], "configuring run_pte")  # fmt: skip
    _run([cmake_bin, "--build", str(build), "--target", "run_pte"], "building run_pte")
    libraries = root / "opt" / "edgekit" / "executorch" / "lib"
    _remove_tree(libraries.parent)
    libraries.mkdir(parents=True)
    for library in (package / "lib").glob("*.so*"):
        shutil.copy2(library, libraries / library.name)
    binary.parent.mkdir(parents=True)
    shutil.copy2(build / "run_pte", binary)
    smoke = chroot(root, RUN_PTE)  # no arguments: prints its usage, which proves every library loads
    if smoke.returncode != 2 or "usage" not in smoke.stderr:
        raise SetupError(f"run_pte does not start in the userland: {smoke.stderr.strip()[-300:]}")
    return {"version": EXECUTORCH, "runner_source": digest, "built_with": "g++-aarch64-linux-gnu (cross)"}


def runner_source() -> Path:
    """Return the C++ runner's source folder: shipped in the wheel, else the repository's examples/."""
    here = Path(__file__).resolve().parents[1]
    for candidate in (here / "_data" / "android_cpp", here.parent / "examples" / "android" / "cpp"):
        if (candidate / "run_pte.cpp").is_file():
            return candidate
    raise MissingDependencyError(
        "the C++ runner source (examples/android/cpp/run_pte.cpp) is not in this installation",
        hint="run from a source checkout of edgekit",
    )


def source_digest(source: Path) -> str:
    """Return a short hash of the runner's sources: a changed source means a rebuild."""
    digest = hashlib.sha256()
    for path in sorted(p for p in source.iterdir() if p.suffix in (".cpp", ".h", ".txt", ".cmake")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _download(requirements: list[str], folder: Path, *, deps: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    argv = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", *platforms, "--python-version",
            PYTHON_TAG, "--disable-pip-version-check", "-q", "-d", str(folder), *requirements]  # fmt: skip
    _run(argv if deps else [*argv, "--no-deps"], f"pip download {' '.join(requirements)} (aarch64)")


def _check(done: subprocess.CompletedProcess[str], what: str) -> subprocess.CompletedProcess[str]:
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        raise SetupError(f"{what} failed (exit {done.returncode}): {' | '.join(tail)}")
    return done


def _read_state(folder: Path) -> dict[str, Any]:
    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return state if isinstance(state, dict) else {}


def _host_version(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def _qemu_version(qemu: Path) -> str:
    done = subprocess.run([str(qemu), "--version"], capture_output=True, text=True, check=False)  # noqa: S603
    first = done.stdout.splitlines()[0] if done.stdout else "qemu-aarch64 (unknown version)"
    return first.replace(" version ", " ").split(" (")[0]


def _sha256(path: Path) -> str:
    from edgekit.hashing import sha256_of

    return sha256_of(path) if path.is_file() else ""


def _mounts_below(path: Path) -> list[str]:
    prefix = str(path.resolve())
    with open("/proc/mounts", encoding="utf-8") as mounts:
        points = [line.split()[1].replace("\\040", " ") for line in mounts]
    return sorted((p for p in points if p == prefix or p.startswith(prefix + "/")), key=len, reverse=True)


def _unmount_below(path: Path) -> None:
    for point in _mounts_below(path):
        subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)  # noqa: S603, S607


def _remove_tree(path: Path) -> None:
    """Delete `path`, refusing while anything is mounted below it (never delete through a mount)."""
    if not path.exists():
        return
    _unmount_below(path)
    if _mounts_below(path):
        raise InternalError(f"{path} still has mounts below it: {', '.join(_mounts_below(path))}; not deleting it")
    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
