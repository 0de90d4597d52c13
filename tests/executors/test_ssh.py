"""`edgekit verify --on ssh://...`: the same request protocol over ssh, against Debian's sshd on this machine.

The sshd (fixture `sshd`) listens on 127.0.0.1 at a non-default port, accepts one key, and chroots
every login into the aarch64 userland with QEMU_CPU=cortex-a76: to the executor it is an aarch64
board with Python, numpy and ONNX Runtime, reached with key authentication.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

pytestmark = pytest.mark.slow


def _verify_over_ssh(cli: Any, artifact: Any, sshd: dict[str, str], monkeypatch: Any) -> tuple[int, dict[str, Any]]:
    from edgekit.cli import main

    monkeypatch.setenv("EDGEKIT_SSH_COMMAND", sshd["command"])
    result = cli.invoke(main, ["verify", str(artifact), "--on", sshd["url"], "--json"])
    assert result.stdout.strip(), result.output
    return result.exit_code, json.loads(result.stdout)


@pytest.mark.parametrize(("artifact", "runtime"), [("digits_rpi", "onnxruntime"), ("digits_android", "executorch")])
def test_verify_over_ssh_passes_on_an_aarch64_login(cli, sshd, monkeypatch, request, artifact, runtime) -> None:  # type: ignore[no-untyped-def]
    code, found = _verify_over_ssh(cli, request.getfixturevalue(artifact), sshd, monkeypatch)

    target = found["on_target"]
    print(
        f"\n{artifact} over ssh: "
        + ", ".join(f"{o['name']} max abs {o['max_abs_error']:.3g}" for o in target["outputs"])
    )
    assert code == 0, found["problems"]
    assert target["status"] == "passed" and target["runtime"] == runtime
    where = target["where"]
    assert where["executor"] == sshd["url"].split("?")[0]
    assert where["isa"] == "aarch64" and "asimddp" in where["features"]  # QEMU_CPU=cortex-a76 behind the login
    assert where["emulated"] is True and where["cpu"] == "cortex-a76"  # QEMU_CPU in the login environment


def test_an_unreachable_board_is_a_clear_error(cli, sshd, monkeypatch, digits_rpi) -> None:  # type: ignore[no-untyped-def]
    from edgekit.cli import main

    monkeypatch.setenv("EDGEKIT_SSH_COMMAND", sshd["command"] + " -o ConnectTimeout=5")
    result = cli.invoke(main, ["verify", str(digits_rpi), "--on", "ssh://nobody@127.0.0.1:1"])

    assert result.exit_code == 5
    assert "cannot reach ssh://nobody@127.0.0.1:1" in result.output
