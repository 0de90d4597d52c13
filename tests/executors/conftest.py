"""Fixtures for the executor tests: the aarch64 userland (set up by the same code as the command), an
sshd on this machine that logs into it, and a torchvision CNN built for rpi and android.

When this host cannot set up the userland (not root, apt packages missing), the tests that need it
are skipped with the reason, except in CI: `.ci/setup-aarch64` prepares the host and the CI line
sets EDGEKIT_REQUIRE_AARCH64=1, which turns a missing prerequisite into a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import assert_valid_manifest

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def aarch64_userland() -> Path:
    """Set up (or find, cached) the emulated aarch64 userland; return its folder."""
    from edgekit.errors import MissingDependencyError
    from edgekit.executors import userland

    try:
        return userland.setup().path
    except MissingDependencyError as exc:
        if os.environ.get("EDGEKIT_REQUIRE_AARCH64") == "1":
            pytest.fail(f"{exc.message} (hint: {exc.hint})")
        pytest.skip(f"no aarch64 userland on this host: {exc.message}")


@pytest.fixture(scope="session")
def mobilenet_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Write 128 normalised photo crops (96x96) as data.npz for calibration and evaluation."""
    from tests.executors.mobilenet import photo_crops

    path = tmp_path_factory.mktemp("mobilenet-data") / "data.npz"
    np.savez(path, inputs=photo_crops(128, seed=2))
    return path


def _build_mobilenet(tmp_path_factory: pytest.TempPathFactory, data: Path, target: str) -> Path:
    import edgekit

    result = edgekit.build(
        f"{HERE / 'mobilenet.py'}:mobilenet_v3_small_96",
        target=target,
        data=data,
        out_dir=tmp_path_factory.mktemp("dist"),
        name="mobilenet",
        input_shape=(1, 3, 96, 96),
        # Random weights stay at ~2.3-2.5 dB int8 SQNR (ONNX Runtime and XNNPACK alike, measured): no gate means
        # anything on them. What these artifacts protect is host-vs-target equality; no timing needed either.
        overrides=(
            "data.calibration_size=64",
            "data.evaluation_size=64",
            "gate.min_sqnr_db=0",
            "latency.enabled=false",
        ),
    )
    assert_valid_manifest(result.path)
    assert result.manifest.quantize["scheme"] == "int8-static"
    return result.path


@pytest.fixture(scope="session")
def mobilenet_rpi(tmp_path_factory: pytest.TempPathFactory, mobilenet_data: Path) -> Path:
    return _build_mobilenet(tmp_path_factory, mobilenet_data, "rpi")


@pytest.fixture(scope="session")
def mobilenet_android(tmp_path_factory: pytest.TempPathFactory, mobilenet_data: Path) -> Path:
    return _build_mobilenet(tmp_path_factory, mobilenet_data, "android")


@pytest.fixture(scope="session")
def sshd(aarch64_userland: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Start Debian's sshd on 127.0.0.1 (a free non-default port), key auth only, whose logins land in the
    aarch64 userland (ChrootDirectory) on an emulated Cortex-A76: a Raspberry Pi 5 as far as ssh can tell.

    Yields {"url": ssh://root@127.0.0.1:PORT?python=..., "command": the EDGEKIT_SSH_COMMAND to use}.
    """
    sshd_bin = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd_bin).exists() or os.geteuid() != 0:
        why = "Debian's openssh-server (sshd) and root are needed (.ci/setup-aarch64 installs it)"
        if os.environ.get("EDGEKIT_REQUIRE_AARCH64") == "1":
            pytest.fail(why)
        pytest.skip(why)
    unsafe = [p for p in (aarch64_userland / "rootfs", *(aarch64_userland / "rootfs").parents)
              if p.stat().st_uid != 0 or p.stat().st_mode & 0o022]  # fmt: skip
    if unsafe:  # sshd's ChrootDirectory rule: every component root-owned, writable by root only
        pytest.fail(f"sshd cannot chroot into the userland: {unsafe[0]} is not root-owned or is group/world-writable")
    folder = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)], check=True)
    (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory, as the Debian service makes it
    port = _free_port()
    config = folder / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_key'}\nPidFile {folder / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        f"ChrootDirectory {aarch64_userland / 'rootfs'}\nSetEnv QEMU_CPU=cortex-a76\n"
    )
    server = subprocess.Popen([sshd_bin, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE)
    known = folder / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {(folder / 'host_key.pub').read_text().rsplit(' ', 1)[0]}\n")
    command = f"ssh -i {folder / 'client_key'} -o UserKnownHostsFile={known} -o IdentitiesOnly=yes -F /dev/null"
    try:
        _wait_for(port)
        yield {"url": f"ssh://root@127.0.0.1:{port}?python=/opt/edgekit/venv/bin/python", "command": command}
    finally:
        server.terminate()
        server.wait(timeout=10)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"sshd did not listen on port {port}")
