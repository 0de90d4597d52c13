"""Run the artifact in its runtime on the evaluation split, compare with the float model, apply the gate.

The status is honest: `passed`/`failed` only when the artifact itself ran in its runtime; `proxy` when
a host-side stand-in with the same compression ran instead; `skipped` when there was no real data, or
when nothing on this host can run the artifact (the reason is recorded and the artifact is kept).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekit import latency, metrics
from edgekit.backends.base import IoContract, Runner, RunnerUnavailable
from edgekit.errors import ExportError, InternalError, first_line
from edgekit.pipeline import BuildContext, BuildState
from edgekit.recipe import GateConfig


class VerifyStage:
    name = "verify"
    requires: tuple[str, ...] = ("load", "prune", "compile")

    def applies(self, ctx: BuildContext) -> bool:
        return True

    def run(self, state: BuildState, ctx: BuildContext) -> BuildState:
        compiled, data, io, baseline = state.compiled, state.data, state.io, state.baseline
        if compiled is None or data is None or io is None or baseline is None:
            raise InternalError("the verify stage needs the compiled artifact, data and float baseline")
        try:
            runner = ctx.backend.open(compiled.artifact, io, ctx.plan.options)
        except RunnerUnavailable as exc:
            accuracy = {"status": "skipped", "reason": exc.reason, "checked_with": "nothing: no runner on this host"}
            state = state.with_warning(f"accuracy status 'skipped': {exc.reason}")
            return state.with_facts("accuracy", accuracy).with_facts("golden", {"count": 0, "reason": exc.reason})
        outputs = run_artifact(runner, io, data.evaluation)
        found = metrics.compare(baseline, outputs, data.evaluation_labels)
        accuracy = judge(found, runner, ctx.recipe.gate, synthetic=data.is_synthetic)
        state = state.with_facts("accuracy", accuracy)
        if accuracy["status"] == "proxy":
            state = state.with_warning(f"accuracy status 'proxy': {runner.reason}")
        state = state.with_facts("golden", write_golden(data.evaluation, outputs, runner, ctx))
        if ctx.recipe.latency.enabled:
            state = _measure_latency(state, ctx, runner)
        return state


def run_artifact(runner: Runner, io: IoContract, inputs: np.ndarray) -> np.ndarray:
    """Run every sample (batch 1) through the runner and stack the first output."""
    name, output = io.inputs[0].name, io.outputs[0].name
    try:
        results = [runner.run({name: inputs[i : i + 1]})[output] for i in range(len(inputs))]
        return np.concatenate([np.asarray(r, dtype=np.float32) for r in results])
    except Exception as exc:
        raise ExportError(
            f"the exported artifact failed to run ({first_line(exc)})",
            hint="re-run with --traceback and report it if the model is supported",
        ) from exc


def judge(found: dict[str, float], runner: Runner, gate: GateConfig, *, synthetic: bool) -> dict[str, Any]:
    """Apply the gate to the metrics and name the status honestly."""
    if "top1_drop" in found:
        rule, value = f"top1_drop <= {gate.max_top1_drop}", found["top1_drop"]
        passed = value <= gate.max_top1_drop
    else:
        rule, value = f"sqnr_db >= {gate.min_sqnr_db}", found["sqnr_db"]
        passed = value >= gate.min_sqnr_db
    if synthetic:
        status, reason = "skipped", "no real data: metrics are on synthetic inputs and say nothing about accuracy"
    elif runner.mode == "proxy":
        status, reason = "proxy", runner.reason
    else:
        status, reason = ("passed" if passed else "failed"), ""
    return {
        "status": status,
        "reason": reason,
        "checked_with": runner.checked_with,
        "metrics": found,
        "gate": {"rule": rule, "value": value, "passed": None if synthetic else bool(passed)},
    }


def write_golden(inputs: np.ndarray, outputs: np.ndarray, runner: Runner, ctx: BuildContext) -> dict[str, Any]:
    """Save a few evaluation inputs and the artifact's outputs for an on-device self-test."""
    folder = ctx.workdir / "golden"
    folder.mkdir(parents=True, exist_ok=True)
    count = min(ctx.recipe.golden.samples, len(outputs))
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
    compiled, io = state.compiled, state.io
    assert compiled is not None and io is not None and state.example_input is not None  # noqa: S101 - run() checked
    if runner.mode != "runtime" or compiled.float_reference is None:
        return state.with_facts("latency", {"measured": False, "reason": "the artifact's runtime is not on this host"})
    reference = ctx.backend.open(compiled.float_reference, io, ctx.plan.options)
    cfg = ctx.recipe.latency
    feeds = {io.inputs[0].name: state.example_input}
    timed = latency.measure({"float": reference.run, "artifact": runner.run}, feeds, warmup=cfg.warmup, runs=cfg.runs)
    ratio = timed["artifact"]["median_ms"] / timed["float"]["median_ms"]
    facts = {"measured": True, "where": "this build host (not the device)", **timed, "artifact_over_float": ratio}
    state = state.with_facts("latency", facts)
    if ratio > 1.0 and ctx.recipe.quantize.scheme.value not in ("fp32", "fp16"):
        state = state.with_warning(
            f"the quantized artifact is not faster than float on this host ({ratio:.2f}x float latency)"
        )
    return state
