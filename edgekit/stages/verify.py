"""Run the artifact in its runtime on the evaluation split, compare every output with float, apply the gate.

The status is honest: `passed`/`failed` only when the artifact itself ran in its runtime; `proxy` when
a host-side stand-in with the same compression ran instead; `skipped` when there was no real data, or
when nothing on this host can run the artifact (the reason is recorded and the artifact is kept).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from edgekit import latency
from edgekit.backends.base import IoContract, Runner, RunnerUnavailable
from edgekit.data import Arrays, count_of
from edgekit.errors import ExportError, InternalError, first_line
from edgekit.gate import judge
from edgekit.pipeline import BuildContext, BuildState


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
            skipped = {"status": "skipped", "reason": exc.reason, "checked_with": "nothing: no runner on this host"}
            state = state.with_warning(f"accuracy status 'skipped': {exc.reason}")
            return state.with_facts("accuracy", skipped).with_facts("golden", {"count": 0, "reason": exc.reason})
        state_map = dict(ctx.recipe.io.state)
        inputs, outputs = run_artifact(runner, io, data.evaluation, state_map)
        accuracy: dict[str, Any] = judge(
            baseline,
            outputs,
            data.evaluation_labels,
            io,
            ctx.recipe.gate,
            runner,
            synthetic=data.is_synthetic,
            label_names=data.label_names,
        )
        if accuracy.get("evidence", {}).get("too_close"):
            state = state.with_warning(accuracy["evidence"]["too_close"])
        if state_map:
            accuracy["sequence"] = {"steps": count_of(inputs), "state": state_map, "closed_loop": True}
        state = state.with_facts("accuracy", accuracy)
        if accuracy["status"] == "proxy":
            state = state.with_warning(f"accuracy status 'proxy': {runner.reason}")
        golden = write_golden(inputs, outputs, runner, ctx)
        if not state_map and any(t.dynamic for t in io.inputs):
            golden, note = add_resized_golden(golden, inputs, io, runner, ctx)
            state = state.with_warning(note) if note else state
        state = state.with_facts("golden", golden)
        if ctx.recipe.latency.enabled:
            state = _measure_latency(state, ctx, runner)
        return state


def run_artifact(
    runner: Runner, io: IoContract, inputs: Arrays, state: dict[str, str] | None = None
) -> tuple[Arrays, Arrays]:
    """Run every sample (batch 1) through the runner; return (the inputs fed, every output by name).

    A stateful model runs closed loop: each step's state outputs feed the next step's state inputs, so
    the inputs fed include the state the artifact itself produced.
    """
    try:
        if state:
            from edgekit.sequence import initial_state, run_sequence

            outputs, fed = run_sequence(runner.run, inputs, io, state, initial_state(io, state, inputs))
            return {**inputs, **fed}, outputs
        results = [runner.run({n: inputs[n][i : i + 1] for n in io.input_names}) for i in range(count_of(inputs))]
        return inputs, {name: np.concatenate([np.asarray(r[name]) for r in results]) for name in io.output_names}
    except Exception as exc:
        raise ExportError(
            f"the exported artifact failed to run ({first_line(exc)})",
            hint="re-run with --traceback and report it if the model is supported",
        ) from exc


def write_golden(inputs: Arrays, outputs: Arrays, runner: Runner, ctx: BuildContext) -> dict[str, Any]:
    """Save a few evaluation samples, every named input and output, for an on-device self-test.

    Layout: `golden/<i>/inputs/<name>.npy` and `golden/<i>/outputs/<name>.npy`, with the names in order
    in `golden/inputs.txt` and `golden/outputs.txt` (for apps that read no JSON).
    """
    io_names = (list(inputs), list(outputs))
    folder = ctx.workdir / "golden"
    folder.mkdir(parents=True, exist_ok=True)
    count = min(ctx.recipe.golden.samples, count_of(outputs))
    samples = [
        save_golden_sample(
            ctx, i, {n: a[i : i + 1] for n, a in inputs.items()}, {n: a[i : i + 1] for n, a in outputs.items()}
        )
        for i in range(count)
    ]
    (folder / "inputs.txt").write_text("".join(f"{n}\n" for n in io_names[0]))
    (folder / "outputs.txt").write_text("".join(f"{n}\n" for n in io_names[1]))
    scale = max((float(np.max(np.abs(a[:count].astype(np.float64)))) for a in outputs.values()), default=1.0)
    quantized = ctx.recipe.quantize.scheme.value not in ("fp32", "fp16")
    # Another CPU may round int8 kernels differently by a step; float kernels differ by reassociation.
    atol = (0.05 if quantized else 1e-3) * (scale if count else 1.0) + 1e-5
    return {"count": count, "atol": atol, "rtol": 0.0, "samples": samples, "produced_by": runner.mode}


def save_golden_sample(ctx: BuildContext, index: int, inputs: Arrays, outputs: Arrays) -> dict[str, dict[str, str]]:
    """Write one golden sample's named inputs and outputs (batch 1) and return their paths in the artifact."""
    sample: dict[str, dict[str, str]] = {"inputs": {}, "outputs": {}}
    for kind, arrays in (("inputs", inputs), ("outputs", outputs)):
        folder = ctx.workdir / "golden" / str(index) / kind
        folder.mkdir(parents=True, exist_ok=True)
        for name, array in arrays.items():
            np.save(folder / f"{name}.npy", np.ascontiguousarray(array))
            sample[kind][name] = f"golden/{index}/{kind}/{name}.npy"
    return sample


def add_resized_golden(
    golden: dict[str, Any], inputs: Arrays, io: IoContract, runner: Runner, ctx: BuildContext
) -> tuple[dict[str, Any], str]:
    """Add a golden sample at a second size of every dynamic axis (the first sample, cut), so the self-test
    checks that the artifact really takes the range it declares. Returns the golden facts and a warning."""
    first = {name: np.ascontiguousarray(array[:1]) for name, array in inputs.items()}
    cut = dict(first)
    for spec in io.inputs:
        for dim in spec.dynamic:
            size = first[spec.name].shape[dim.axis]
            smaller = max(dim.min, size // 2) if size // 2 != size else dim.min
            cut[spec.name] = np.take(cut[spec.name], range(smaller), axis=dim.axis)
    if all(cut[n].shape == first[n].shape for n in cut):
        return golden, ""
    try:
        outputs = runner.run(cut)
    except Exception as exc:
        return golden, f"the artifact did not run at a second size of its dynamic axes ({first_line(exc)})"
    produced = {n: np.asarray(outputs[n]) for n in io.output_names}
    sample = save_golden_sample(ctx, len(golden["samples"]), cut, produced)
    return {**golden, "count": golden["count"] + 1, "samples": [*golden["samples"], sample]}, ""


def _measure_latency(state: BuildState, ctx: BuildContext, runner: Runner) -> BuildState:
    compiled, io, examples = state.compiled, state.io, state.example_inputs
    assert compiled is not None and io is not None and examples is not None  # noqa: S101 - run() checked
    if runner.mode != "runtime" or compiled.float_reference is None:
        return state.with_facts("latency", {"measured": False, "reason": "the artifact's runtime is not on this host"})
    from edgekit.stages.prune import unpruned_float_reference

    reference = ctx.backend.open(compiled.float_reference, io, ctx.plan.options)
    runners: dict[str, Callable[[Any], object]] = {"float": reference.run, "artifact": runner.run}
    unpruned = unpruned_float_reference(ctx)
    if unpruned is not None:  # "vs float" is the user's model; the pruned float is shown for reference
        runners = {"float": ctx.backend.open(unpruned, io, ctx.plan.options).run, "pruned_float": reference.run,
                   "artifact": runner.run}  # fmt: skip
    cfg = ctx.recipe.latency
    timed = latency.measure(runners, dict(examples), warmup=cfg.warmup, runs=cfg.runs)
    ratio = timed["artifact"]["median_ms"] / timed["float"]["median_ms"]
    facts = {"measured": True, "where": "this build host (not the device)", **timed, "artifact_over_float": ratio}
    if ratio > 1.0 and ctx.recipe.quantize.scheme.value not in ("fp32", "fp16"):
        # A measured fact: it lives with the latency in measured.json, not in the reproducible warnings.
        facts["warnings"] = [
            f"the quantized artifact is not faster than float on this host ({ratio:.2f}x float latency)"
        ]
    return state.with_facts("latency", facts)
