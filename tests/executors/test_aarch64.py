"""`edgekit verify --on aarch64`: the artifacts run in the emulated aarch64 userland (Cortex-A72 and A76).

Each test prints the per-output max abs difference host vs emulated (run with -s to see them).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgekit.hashing import sha256_of

pytestmark = pytest.mark.slow
CPUS = ("cortex-a72", "cortex-a76")


def _verify_on(cli: Any, artifact: Path, *args: str) -> tuple[int, dict[str, Any]]:
    from edgekit.cli import main

    result = cli.invoke(main, ["verify", str(artifact), "--on", "aarch64", *args, "--json"])
    assert result.stdout.strip(), result.output
    return result.exit_code, json.loads(result.stdout)


def _check_passed(found: dict[str, Any], cpu: str, runtime: str, label: str) -> None:
    target = found["on_target"]
    where = target["where"]
    print(
        f"\n{label} on {cpu}: " + ", ".join(f"{o['name']} max abs {o['max_abs_error']:.3g}" for o in target["outputs"])
    )
    assert target["status"] == "passed", target["reason"]
    assert (where["isa"], where["cpu"], where["emulated"]) == ("aarch64", cpu, True)
    assert ("asimddp" in where["features"]) is (cpu == "cortex-a76")  # int8 dot product: A76 yes, A72 no
    assert target["runtime"] == runtime and target["runtime_version"]
    assert target["samples"] == 4 and all(o["within_tolerance"] for o in target["outputs"])
    assert target["timing"].startswith("not measured")
    assert found["status"] == "passed"


@pytest.mark.parametrize("cpu", CPUS)
def test_digits_rpi_passes_on_emulated_aarch64(cli, aarch64_userland, digits_rpi, cpu) -> None:  # type: ignore[no-untyped-def]
    code, found = _verify_on(cli, digits_rpi, "--cpu", cpu)

    _check_passed(found, cpu, "onnxruntime", "digits rpi")
    assert code == 0


@pytest.mark.parametrize("cpu", CPUS)
def test_digits_android_passes_on_emulated_aarch64(cli, aarch64_userland, digits_android, cpu) -> None:  # type: ignore[no-untyped-def]
    code, found = _verify_on(cli, digits_android, "--cpu", cpu)

    _check_passed(found, cpu, "executorch", "digits android")
    assert code == 0


@pytest.mark.parametrize("cpu", CPUS)
def test_mobilenet_rpi_passes_on_emulated_aarch64(cli, aarch64_userland, mobilenet_rpi, cpu) -> None:  # type: ignore[no-untyped-def]
    code, found = _verify_on(cli, mobilenet_rpi, "--cpu", cpu)

    _check_passed(found, cpu, "onnxruntime", "mobilenet_v3_small rpi")
    assert code == 0


@pytest.mark.parametrize("cpu", CPUS)
def test_mobilenet_android_passes_on_emulated_aarch64(cli, aarch64_userland, mobilenet_android, cpu) -> None:  # type: ignore[no-untyped-def]
    code, found = _verify_on(cli, mobilenet_android, "--cpu", cpu)

    _check_passed(found, cpu, "executorch", "mobilenet_v3_small android")
    assert code == 0


def test_data_runs_on_the_target_and_the_gate_is_applied_there(cli, aarch64_userland, digits_rpi) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import DIGITS

    code, found = _verify_on(cli, digits_rpi, "--data", str(DIGITS / "data.npz"))

    data = found["on_target"]["data"]
    print(f"\ndigits rpi --data on cortex-a72: {data['samples']} samples, " + ", ".join(
        f"{o['name']} max abs {o['max_abs_error']:.3g}, top-1 agreement {o['top1_agreement']:.1f}%"
        for o in data["outputs"]))  # fmt: skip
    assert code == 0, found["problems"]
    assert data["samples"] > 100 and data["outputs"][0]["top1_agreement"] >= 99.0
    assert data["target"]["gate"]["passed"] is True
    assert data["target"]["metrics"] and data["host"]["gate"]["passed"] is True


@pytest.mark.parametrize("artifact", ["digits_rpi", "digits_android"])
def test_an_edited_golden_output_is_caught_on_aarch64(cli, aarch64_userland, artifact, request, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Arrange: move sample 1's golden logits to another class, beyond the tolerance, and re-hash the
    # manifest so the files check passes: only running the artifact can tell.
    folder = Path(shutil.copytree(request.getfixturevalue(artifact), tmp_path / artifact))
    manifest = json.loads((folder / "manifest.json").read_text())
    edited = "golden/1/outputs/output.npy"
    logits = np.load(folder / edited)
    runner_up = int(np.argsort(logits[0])[-2])
    logits[0, runner_up] += 10 * manifest["golden"]["atol"] + float(np.ptp(logits))
    np.save(folder / edited, logits)
    manifest["files"][edited] = sha256_of(folder / edited)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))

    code, found = _verify_on(cli, folder)

    target = found["on_target"]
    assert code == 7
    assert found["status"] == "failed" and target["status"] == "failed"
    assert [(d["split"], d["sample"], d["output"]) for d in target["disagreements"]] == [("golden", 1, "output")]
    assert target["disagreements"][0]["target_top1"] != runner_up
    assert any("on aarch64" in p for p in found["problems"])


def test_the_runners_take_int64_several_named_tensors_and_batches(aarch64_userland, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Both runners, on a model with a float image and int64 tokens in and two outputs out; one sample
    holds a batch of 3 for a batch-1 program, one is saved without its batch axis."""
    from edgekit.executors import get_executor
    from edgekit.executors.request import read_outputs, write_request

    rng = np.random.default_rng(0)
    samples = [
        {"image": rng.standard_normal((1, 1, 8, 8)), "tokens": rng.integers(0, 50, (1, 6))},
        {"image": rng.standard_normal((3, 1, 8, 8)), "tokens": rng.integers(0, 50, (3, 6))},
        {"image": rng.standard_normal((1, 8, 8)), "tokens": rng.integers(0, 50, (6,))},
    ]
    for backend_name in ("onnxruntime", "executorch"):
        build, io = _two_in_two_out(backend_name, tmp_path / backend_name)
        host = build.open()
        request = write_request(
            tmp_path / f"request-{backend_name}", build.compiled.artifact, backend_name, io, samples
        )

        report = get_executor("aarch64", cpu="cortex-a76").run(request)

        assert report.failed == () and not report.error
        for sample, got in zip(samples, read_outputs(request, io, len(samples)), strict=True):
            feeds = {s.name: np.asarray(sample[s.name], dtype=s.dtype).reshape(-1, *s.shape[1:]) for s in io.inputs}
            expected = host.run(feeds)
            assert got is not None
            for name in io.output_names:
                assert got[name].shape == expected[name].shape, (backend_name, name)
                np.testing.assert_allclose(got[name], expected[name], atol=1e-4, err_msg=f"{backend_name} {name}")


def test_setup_again_is_fast_and_status_is_ready(cli, aarch64_userland) -> None:  # type: ignore[no-untyped-def]
    from edgekit.cli import main
    from edgekit.executors import userland

    started = time.monotonic()
    userland.setup()
    again = time.monotonic() - started
    result = cli.invoke(main, ["emulator", "status", "aarch64", "--json"])

    print(f"\nsetup again (warm): {again:.1f} s")
    assert again < 30
    assert result.exit_code == 0
    status = json.loads(result.stdout)
    assert status["ready"] and status["steps"]["python"]["onnxruntime"] == "1.32.0"


def _two_in_two_out(backend_name: str, workdir: Path) -> tuple[Any, Any]:
    """Compile (fp32) a model taking image (float32) and tokens (int64), returning logits and a pooled embedding."""
    import torch
    from torch import nn

    from edgekit.backends import get_backend
    from edgekit.backends.base import IoContract, TensorSpec
    from edgekit.recipe import QuantizeConfig, parse_table
    from tests.tiny_models import TinyBuild

    class TwoInTwoOut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.embed = nn.Embedding(50, 4)
            self.head = nn.Linear(8, 10)

        def forward(self, image: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            pooled = self.embed(tokens).mean(dim=1)
            features = torch.relu(self.conv(image)).mean(dim=(2, 3))
            return self.head(torch.cat([features, pooled], dim=1)), pooled

    torch.manual_seed(0)
    model = TwoInTwoOut().eval()
    io = IoContract(
        inputs=(TensorSpec(name="image", shape=(1, 1, 8, 8), dtype="float32"),
                TensorSpec(name="tokens", shape=(1, 6), dtype="int64")),
        outputs=(TensorSpec(name="logits", shape=(1, 10), dtype="float32"),
                 TensorSpec(name="pooled", shape=(1, 4), dtype="float32")),
    )  # fmt: skip
    example = {"image": np.zeros((1, 1, 8, 8), np.float32), "tokens": np.zeros((1, 6), np.int64)}
    backend = get_backend(backend_name)
    options = parse_table(backend.Options, {}, "options", what="option")
    config = parse_table(QuantizeConfig, {"scheme": "fp32"}, "quantize")
    workdir.mkdir(parents=True)
    compiled = backend.compile(model, io, example, example, config, options, workdir)
    return TinyBuild(backend=backend, io=io, options=options, compiled=compiled), io
