"""The executor protocol without any emulator: request files, the host executor, the comparison, probes, CLI errors."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgekit.backends.base import IoContract, TensorSpec
from edgekit.executors.base import parse_probe
from edgekit.verify_remote import compare

IO = IoContract(
    inputs=(TensorSpec(name="image", shape=(1, 1, 8, 8), dtype="float32"),),
    outputs=(TensorSpec(name="logits", shape=(1, 10), dtype="float32"),
             TensorSpec(name="embedding", shape=(1, 4), dtype="float32")),
)  # fmt: skip


def test_probe_reads_cpu_features_and_the_core() -> None:
    # Arrange: what the probe prints on a Raspberry Pi 5 (A76: dot product, fp16 arithmetic, no i8mm)
    text = (
        "machine=aarch64\ncpuinfo=CPU implementer\t: 0x41\ncpuinfo=CPU part\t: 0xd0b\n"
        "AT_HWCAP: 119ffb\nAT_HWCAP2: 0x0\n"
    )

    facts = parse_probe(text)

    assert facts["machine"] == "aarch64"
    assert facts["cpu"] == "cortex-a76"
    assert facts["features"].split() == ["asimd", "fphp", "asimdhp", "asimddp"]


def test_probe_of_a_cortex_a72_has_no_dot_product() -> None:
    assert "asimddp" not in parse_probe("AT_HWCAP: 8fb\n")["features"]


def test_compare_reports_every_output_and_each_sample_that_differs() -> None:
    rng = np.random.default_rng(0)
    expected = [{"logits": rng.standard_normal((1, 10)), "embedding": rng.standard_normal((1, 4))} for _ in range(3)]
    got: list[dict[str, np.ndarray] | None] = [{k: v.copy() for k, v in e.items()} for e in expected]
    got[1]["logits"][0, 3] += 5.0  # type: ignore[index]  # beyond tolerance, and a new top-1 class
    got[2] = None  # did not run

    diffs, disagreements = compare(expected, got, IO, atol=0.1, rtol=0.0, split="golden", errors={2: "boom"})

    logits, embedding = diffs
    assert logits.max_abs_error == pytest.approx(5.0) and not logits.within_tolerance
    assert logits.top1_agreement == pytest.approx(50.0)  # 1 of the 2 samples that ran
    assert embedding.max_abs_error == 0.0 and embedding.top1_agreement == pytest.approx(100.0)
    assert [(d.sample, d.output, d.error) for d in disagreements] == [
        (1, "logits", ""), (2, "logits", "boom"), (2, "embedding", "boom")
    ]  # fmt: skip
    assert disagreements[0].target_top1 == 3


def test_compare_treats_nan_as_a_mismatch() -> None:
    expected = [{"logits": np.zeros((1, 10)), "embedding": np.zeros((1, 4))}]
    got = [{"logits": np.full((1, 10), np.nan), "embedding": np.zeros((1, 4))}]

    diffs, _ = compare(expected, got, IO, atol=1.0, rtol=0.0, split="golden")  # type: ignore[arg-type]

    assert not diffs[0].within_tolerance


@pytest.mark.slow
def test_host_executor_runs_a_request_like_the_remote_runners(digits_rpi: Path, tmp_path: Path) -> None:
    from edgekit.executors import get_executor
    from edgekit.executors.request import read_outputs, write_request
    from edgekit.manifest import read_manifest
    from edgekit.verification import golden_samples

    manifest = read_manifest(digits_rpi)
    io = IoContract(inputs=manifest.io.inputs, outputs=manifest.io.outputs)
    samples = golden_samples(digits_rpi, manifest.golden, io)
    request = write_request(tmp_path / "req", digits_rpi / "model.onnx", "onnxruntime", io, [s for s, _ in samples])

    report = get_executor("host").run(request)

    assert report.failed == () and report.runtime == "onnxruntime"
    for got, (_, expected) in zip(read_outputs(request, io, len(samples)), samples, strict=True):
        assert got is not None
        np.testing.assert_array_equal(got["output"], np.load(expected["output"]))
    assert json.loads((request / "result.json").read_text())["runner"] == "host"


def test_cpu_without_on_aarch64_is_a_usage_error(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from edgekit.cli import main

    result = cli.invoke(main, ["verify", str(tmp_path), "--on", "ssh://pi@board", "--cpu", "cortex-a76"])

    assert result.exit_code == 2
    assert "--cpu" in result.output


def test_setup_without_root_or_packages_exits_4_with_one_line(cli, monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from edgekit.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(shutil, "which", lambda _name: None)

    result = cli.invoke(main, ["emulator", "setup", "aarch64"])

    assert result.exit_code == 4
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "root" in error[0] and "qemu-user-static" in error[0] and "debootstrap" in error[0]
    assert not (tmp_path / "edgekit").exists()  # nothing half-made


@pytest.mark.slow
def test_verify_on_aarch64_never_sets_up_the_userland(cli, monkeypatch, digits_rpi_copy: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from edgekit.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))

    result = cli.invoke(main, ["verify", str(digits_rpi_copy), "--on", "aarch64"])

    assert result.exit_code == 4
    assert "edgekit emulator setup aarch64" in result.output
    assert not (tmp_path / "empty-cache" / "edgekit" / "aarch64" / "rootfs").exists()


def test_emulator_status_of_an_empty_cache_exits_4(cli, monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from edgekit.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    result = cli.invoke(main, ["emulator", "status", "aarch64"])

    assert result.exit_code == 4
    assert "not set up" in result.output and str(tmp_path) in result.output


@pytest.fixture
def digits_rpi_copy(digits_rpi: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(digits_rpi, tmp_path / "digits-rpi"))


@pytest.mark.slow
def test_ios_says_no_apple_runtime_exists_here_and_stays_proxy(cli, digits_ios: Path) -> None:  # type: ignore[no-untyped-def]
    from edgekit.cli import main

    result = cli.invoke(main, ["verify", str(digits_ios), "--on", "aarch64", "--json"])

    found = json.loads(result.stdout)
    assert result.exit_code == 0
    assert found["status"] == "proxy"
    assert found["on_target"]["status"] == "not run" and "no Apple runtime" in found["on_target"]["reason"]
    assert any("no Apple runtime" in w for w in found["warnings"])


def test_ssh_url_names_user_host_port_and_python() -> None:
    from edgekit.errors import UsageError
    from edgekit.executors.ssh import SshExecutor

    board = SshExecutor("ssh://pi@raspberrypi.local:2222?python=/home/pi/venv/bin/python")

    assert (board.destination, board.port, board.python) == ("pi@raspberrypi.local", 2222, "/home/pi/venv/bin/python")
    assert board.name == "ssh://pi@raspberrypi.local:2222"
    assert SshExecutor("ssh://raspberrypi.local").python == "python3"
    with pytest.raises(UsageError):
        SshExecutor("ssh://pi@board?pyhton=/usr/bin/python3")
