"""Run the artifact on the evaluation data, compare it with the float model, apply the gate.

Status: `passed`/`failed` only when the artifact itself ran in its runtime; `proxy` when a host-side
stand-in with the same compression ran instead; `skipped` when there was no real data.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekit import latency, metrics
from edgekit.backends import Runner
from edgekit.errors import ExportError, first_line
from edgekit.pipeline import BuildContext, BuildState
from edgekit.recipe import GateConfig


class VerifyStage:
    name = "verify"
    requires = ("load", "prune", "quantize", "export")

    def applies(self, ctx: BuildContext) -> bool:
        return True

    def run(self, state: BuildState, ctx: BuildContext) -> BuildState:
        assert state.data is not None and state.baseline is not None and state.example_input is not None  # noqa: S101 - set by load
        runner = ctx.backend.runner(state, ctx)
        outputs = run_artifact(runner, state.data.evaluation)
        found = metrics.compare(state.baseline, outputs, state.data.evaluation_labels)
        accuracy = judge(
            found, runner, ctx.recipe.gate, synthetic=state.data.is_synthetic, checked_with=_checked_with(ctx, runner)
        )
        state = state.with_facts("accuracy", accuracy)
        if accuracy["status"] == "proxy":
            state = state.with_warning(f"accuracy status 'proxy': {runner.reason}")
        state = state.with_facts("golden", write_golden(state, runner, outputs, ctx))
        if ctx.recipe.latency.enabled:
            state = _measure_latency(state, ctx, runner)
        return state


def run_artifact(runner: Runner, inputs: np.ndarray) -> np.ndarray:
    """Run every sample (batch 1) through the runner and stack the outputs."""
    try:
        return np.concatenate([np.asarray(runner.run(inputs[i : i + 1]), dtype=np.float32) for i in range(len(inputs))])
    except Exception as exc:
        raise ExportError(
            f"the exported artifact failed to run ({first_line(exc)})",
            hint="re-run with --traceback and report it if the model is supported",
        ) from exc


def judge(
    found: dict[str, float], runner: Runner, gate: GateConfig, *, synthetic: bool, checked_with: str
) -> dict[str, Any]:
    """Apply the gate to the metrics and name the status honestly."""
    if "top1_drop" in found:
        rule, value, passed = (
            f"top1_drop <= {gate.max_top1_drop}",
            found["top1_drop"],
            found["top1_drop"] <= gate.max_top1_drop,
        )
    else:
        rule, value, passed = f"sqnr_db >= {gate.min_sqnr_db}", found["sqnr_db"], found["sqnr_db"] >= gate.min_sqnr_db
    if synthetic:
        status, reason = "skipped", "no real data: metrics are on synthetic inputs and say nothing about accuracy"
    elif runner.mode == "proxy":
        status, reason = "proxy", runner.reason
    else:
        status, reason = ("passed" if passed else "failed"), ""
    return {
        "status": status,
        "reason": reason,
        "checked_with": checked_with,
        "metrics": found,
        "gate": {"rule": rule, "value": value, "passed": None if synthetic else bool(passed)},
    }


def write_golden(state: BuildState, runner: Runner, outputs: np.ndarray, ctx: BuildContext) -> dict[str, Any]:
    """Save a few evaluation inputs and the artifact's outputs for an on-device self-test."""
    folder = ctx.workdir / "golden"
    folder.mkdir(parents=True, exist_ok=True)
    count = min(ctx.recipe.golden.samples, len(outputs))
    inputs = state.data.evaluation  # type: ignore[union-attr]
    for i in range(count):
        np.save(folder / f"input_{i}.npy", np.ascontiguousarray(inputs[i : i + 1]))
        np.save(folder / f"output_{i}.npy", np.ascontiguousarray(outputs[i : i + 1]))
    scale = float(np.max(np.abs(outputs[:count]))) if count else 1.0
    quantized = ctx.recipe.quantize.scheme.value not in ("fp32", "fp16")
    # Another CPU may round int8 kernels differently by a step; float kernels differ by reassociation.
    atol = (0.05 if quantized else 1e-3) * scale + 1e-5
    return {
        "count": count,
        "atol": atol,
        "rtol": 0.0,
        "inputs": [f"golden/input_{i}.npy" for i in range(count)],
        "outputs": [f"golden/output_{i}.npy" for i in range(count)],
        "produced_by": runner.mode,
    }


def _measure_latency(state: BuildState, ctx: BuildContext, runner: Runner) -> BuildState:
    reference = ctx.backend.reference_runner(state, ctx)
    if runner.mode != "runtime" or reference is None:
        return state.with_facts("latency", {"measured": False, "reason": "the artifact's runtime is not on this host"})
    cfg = ctx.recipe.latency
    timed = latency.measure(
        {"float": reference.run, "artifact": runner.run}, state.example_input, warmup=cfg.warmup, runs=cfg.runs
    )  # type: ignore[arg-type]
    ratio = timed["artifact"]["median_ms"] / timed["float"]["median_ms"]
    facts = {"measured": True, "where": "this build host (not the device)", **timed, "artifact_over_float": ratio}
    state = state.with_facts("latency", facts)
    if ratio > 1.0 and ctx.recipe.quantize.scheme.value not in ("fp32", "fp16"):
        state = state.with_warning(
            f"the quantized artifact is not faster than float on this host ({ratio:.2f}x float latency)"
        )
    return state


def _checked_with(ctx: BuildContext, runner: Runner) -> str:
    versions = ctx.backend.versions()
    runtime = ctx.backend.name
    return f"{runtime} {versions.get(runtime, '')}".strip() if runner.mode == "runtime" else f"proxy ({runner.reason})"
