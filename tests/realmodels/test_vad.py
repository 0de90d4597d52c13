"""silero-vad's shipped TorchScript network, built for every target as a stateful model, gated on its decisions.

examples/vad/make.py writes the audio (and a .pt2) into tmp from the installed silero-vad package;
the builds take the factory form (examples/vad/model.py:build) with the sample rate as a constant,
the LSTM state and the audio context carried closed loop over consecutive 32 ms chunks, and the gate
rule `decision_agreement >= 98` on examples/vad/metrics.py. To keep CI short the tests use 24 s of
audio (750 chunks: 200 to calibrate, the next 500 to evaluate) instead of the recipe's 48 s.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import edgekit
from edgekit.errors import AccuracyGateError
from tests.conftest import ROOT, assert_valid_manifest
from tests.realmodels import load_example

VAD = ROOT / "examples" / "vad"
STATE = {"new_lstm_state": "lstm_state", "new_context": "context"}
TARGETS = ["rpi", "android", "ios"]
SECONDS, CALIBRATION, EVALUATION = 24.0, 200, 500
SIZES = (f"data.calibration_size={CALIBRATION}", f"data.evaluation_size={EVALUATION}", "latency.runs=20")
# int8 activations on rpi and android break the decisions (see examples/vad/README.md): the power spectrum
# quantized linearly to 8 bits zeroes quiet bins, and h and c share one scale in the stacked state. As built,
# int8 agrees on 94.2% (rpi) and 92.0% (android) of 500 chunks; the repair stage may reach the gate by
# leaving layers in float, which the manifest must then say.
INT8_AS_BUILT_MISSES = 98.0


@pytest.fixture(scope="module")
def vad(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    paths: dict[str, Path] = load_example(VAD / "make.py").make(tmp_path_factory.mktemp("vad"), seconds=SECONDS)
    return paths


@pytest.fixture(scope="module")
def built(vad: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], dict[str, Any]]:
    """Build for a target once per module (the artifact is kept when it misses its gate); return its manifest."""
    cache: dict[str, dict[str, Any]] = {}
    out = tmp_path_factory.mktemp("dist")

    def build(target: str) -> dict[str, Any]:
        if target not in cache:
            try:
                edgekit.build(
                    f"{VAD / 'model.py'}:build", target=target, recipe=str(VAD / "recipe.toml"), data=vad["data"],
                    metrics=(f"{VAD / 'metrics.py'}:decision_agreement",), out_dir=out, name="vad",
                    overrides=SIZES, allow_accuracy_failure=True,
                )  # fmt: skip
            except AccuracyGateError:
                pass  # kept, marked failed: the test reads the verdict from the manifest
            cache[target] = {"path": out / f"vad-{target}", **assert_valid_manifest(out / f"vad-{target}")}
        return cache[target]

    return build


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_silero_vad_builds_as_a_stateful_model_and_its_gate_is_its_decisions(
    built: Callable[[str], dict[str, Any]], target: str
) -> None:
    manifest = built(target)

    accuracy = manifest["accuracy"]
    agreement = accuracy["metrics"]["decision_agreement"]
    assert manifest["io"]["state"] == STATE and accuracy["sequence"]["steps"] == EVALUATION
    assert [t["name"] for t in manifest["io"]["inputs"]] == ["chunk", "lstm_state", "context"]
    assert manifest["recipe"]["model"]["constants"] == {"sr": 16000}
    assert accuracy["gate"]["rules"][0]["metric"] == "decision_agreement"
    assert accuracy["gate"]["passed"] is (agreement >= 98.0)  # honest either way
    assert accuracy["metrics"]["float_vs_truth"] > 85  # the float model itself hears the synthetic speech
    if target == "ios":
        assert accuracy["status"] == "proxy" and agreement >= 98.0
        assert (manifest["path"] / "model.mlpackage").is_dir()
    else:
        assert accuracy["status"] == ("passed" if agreement >= 98.0 else "failed")
        assert edgekit.verify(manifest["path"]).golden.within_tolerance


@pytest.mark.slow
@pytest.mark.parametrize("target", ["rpi", "android"])
def test_silero_vad_int8_as_built_misses_the_gate_and_any_pass_says_what_stayed_float(
    built: Callable[[str], dict[str, Any]], target: str
) -> None:
    manifest = built(target)

    steps = (manifest.get("repair") or {}).get("steps") or []
    final = manifest["accuracy"]["metrics"]["decision_agreement"]
    as_built = steps[0]["metrics"]["decision_agreement"] if steps else final
    assert manifest["quantize"]["scheme"] == "int8-static"
    assert as_built < INT8_AS_BUILT_MISSES  # the known limit of static int8 on this network
    if final >= 98.0:
        assert manifest["quantize"].get("float_layers")  # passed only by keeping layers float, and says which
