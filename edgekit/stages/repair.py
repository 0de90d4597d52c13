"""When int8 misses the gate: find the layers that hurt, and climb the repair ladder until it passes.

Runs between compile and verify. It measures the compiled artifact in its runtime (or its labelled
proxy) on the evaluation data; if the gate passes there is nothing to do. Otherwise it asks the backend
for each layer's own error (`Inspectable`), then builds and measures one `ladder.Attempt` at a time,
within `repair.max_steps`, and keeps the first that passes (else the best measured). Every attempt is
recorded with its metrics, size and latency; the verify stage then checks the chosen artifact as usual.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from edgekit import ladder, latency
from edgekit.backends.base import Compiled, Inspectable, KeepsFloat, LayerReport, Runner, RunnerUnavailable
from edgekit.errors import EdgekitError, InternalError, first_line
from edgekit.gate import judge
from edgekit.manifest import size_of
from edgekit.pipeline import BuildContext, BuildState
from edgekit.recipe import CalibrationMethod, QuantizeConfig, Scheme
from edgekit.stages.compile import compile_with
from edgekit.stages.verify import run_artifact

_PROBES = 3  # layers left in float one at a time (the diagnosis's "only this layer in float" view)


class RepairStage:
    name = "repair"
    requires: tuple[str, ...] = ("load", "prune", "compile")

    def applies(self, ctx: BuildContext) -> bool:
        return ctx.recipe.repair.enabled and ctx.recipe.quantize.scheme.value not in ("fp32", "fp16")

    def run(self, state: BuildState, ctx: BuildContext) -> BuildState:
        if state.compiled is None or state.data is None or state.io is None:
            raise InternalError("the repair stage needs the compiled artifact, data and io contract")
        if state.data.is_synthetic or state.compiled.scheme.value in ("fp32", "fp16"):
            return state
        try:
            first = _measure(state.compiled, state, ctx)
        except RunnerUnavailable:
            return state  # verify records why nothing could run it
        if first.gate_passed is not False:
            return state
        return _Ladder(state, ctx, first).climb()


@dataclasses.dataclass(slots=True)
class _Step:
    name: str
    change: str
    quantize: QuantizeConfig
    compiled: Compiled | None
    accuracy: dict[str, Any]
    latency_ms: float | None
    status: str = "measured"

    @property
    def gate_passed(self) -> bool | None:
        return (self.accuracy.get("gate") or {}).get("passed")

    @property
    def eligible(self) -> bool:
        """Whether this step may be kept: it was measured and something in it still runs in int8."""
        return self.compiled is not None and self.status == "measured"

    def score(self) -> tuple[int, float]:
        """More gate rules passed first, then the primary output's SQNR."""
        rules = (self.accuracy.get("gate") or {}).get("rules", [])
        return sum(bool(r["passed"]) for r in rules), float(self.accuracy.get("metrics", {}).get("sqnr_db", -1e9))

    def record(self, index: int) -> dict[str, Any]:
        metrics = {k: v for k, v in self.accuracy.get("metrics", {}).items() if isinstance(v, int | float)}
        return {
            "step": index,
            "name": self.name,
            "change": self.change,
            "status": self.status,
            "metrics": metrics,
            "gate_passed": self.gate_passed,
            "artifact_bytes": size_of(self.compiled.artifact) if self.compiled else None,
            "float_layers": list(self.quantize.keep_float),
            "int16_layers": list(self.quantize.int16_activations),
        }


class _Ladder:
    def __init__(self, state: BuildState, ctx: BuildContext, first: _Step) -> None:
        self.state, self.ctx = state, ctx
        self.steps = [first]
        self.budget = ctx.recipe.repair.max_steps
        self.diagnosis: dict[str, Any] = {}

    def climb(self) -> BuildState:
        recipe = self.ctx.recipe
        self.ctx.reporter.info(f"the gate failed ({_gate_line(self.steps[0])}): trying the repair ladder")
        base = self.steps[0].quantize
        calibrated = base.scheme not in (Scheme.INT8_DYNAMIC, Scheme.W8)  # others calibrate nothing: no rung
        offered = [m for m in CalibrationMethod if self._offered(dataclasses.replace(base, calibration_method=m))]
        methods = offered if calibrated else []
        if self._try_all(ladder.calibration_rungs(base, methods)):
            return self._finish("passed")
        base = max((s for s in self.steps if s.eligible), key=_Step.score).quantize
        ranked = self._diagnose(base)
        if isinstance(self.ctx.backend, KeepsFloat) and ranked and recipe.repair.max_float_layers > 0:
            probes = ladder.single_layer_rungs(base, ranked, min(_PROBES, recipe.repair.max_float_layers))
            if self._try_all(probes):
                return self._finish("passed")
            ranked = self._rerank(ranked, {p.name for p in probes})
            sixteen = bool(getattr(self.ctx.backend, "sixteen_bit_activations", False))
            grow = ladder.growing_rungs(base, ranked, recipe.repair.max_float_layers, sixteen)
            if self._try_all(grow):
                return self._finish("passed")
        return self._finish("budget exhausted" if self.budget <= 0 else "ladder exhausted")

    def _offered(self, quantize: QuantizeConfig) -> bool:
        recipe = dataclasses.replace(self.ctx.recipe, quantize=quantize)
        return not self.ctx.backend.check(recipe, self.ctx.plan.options)

    def _try_all(self, attempts: list[ladder.Attempt]) -> bool:
        """Build and measure attempts in order; return True as soon as one passes the gate."""
        for attempt in attempts:
            if self.budget <= 0:
                return False
            self.budget -= 1
            step = self._attempt(attempt)
            self.steps.append(step)
            self.ctx.reporter.info(f"repair step {len(self.steps) - 1} ({attempt.name}): {_gate_line(step)}")
            if step.gate_passed and step.eligible:
                return True
        return False

    def _attempt(self, attempt: ladder.Attempt) -> _Step:
        state, ctx = self.state, self.ctx
        workdir = ctx.workdir / "repair" / f"step-{len(self.steps)}"
        workdir.mkdir(parents=True)
        try:
            compiled = compile_with(state, ctx, attempt.quantize, workdir)
            quantize = dataclasses.replace(attempt.quantize, scheme=compiled.scheme)  # the attempt's, not the base's
            measured = _measure(compiled, state, ctx)
            status = "measured" if _int8_left(compiled) else "not a repair: no compute op is left in int8"
            return dataclasses.replace(
                measured, name=attempt.name, change=attempt.change, quantize=quantize, status=status
            )
        except EdgekitError as exc:
            failed = {"gate": {"passed": None}, "metrics": {}}
            return _Step(attempt.name, attempt.change, attempt.quantize, None, failed, None, f"failed: {exc.message}")

    def _diagnose(self, quantize: QuantizeConfig) -> list[str]:
        """Rank layers by their own output error, with the backend's tools; [] when it has none."""
        backend, state, ctx = self.ctx.backend, self.state, self.ctx
        if not isinstance(backend, Inspectable):
            self.diagnosis = {"tool": "none", "notes": [f"the {backend.name} backend cannot name layers"]}
            return []
        chosen = max((s for s in self.steps if s.eligible), key=_Step.score)
        assert state.data is not None and state.io is not None  # noqa: S101 - run() checked
        count = ctx.recipe.repair.diagnosis_samples
        samples = {name: array[:count] for name, array in state.data.evaluation.items()}
        started = time.perf_counter()
        try:
            report: LayerReport = backend.layer_errors(
                chosen.compiled or _need(state.compiled), state.model, state.io, state.data.calibration,
                samples, quantize, ctx.plan.options, ctx.workdir / "repair" / "diagnosis",
            )  # fmt: skip
        except EdgekitError as exc:
            self.diagnosis = {"tool": "failed", "notes": [f"per-layer diagnosis failed: {exc.message}"]}
            return []
        except Exception as exc:  # a runtime's debugging tool failing must not lose the build
            self.diagnosis = {"tool": "failed", "notes": [f"per-layer diagnosis failed: {first_line(exc)}"]}
            return []
        layers = [dataclasses.asdict(layer) for layer in report.layers]
        ctx.timings["repair.diagnosis"] = round(time.perf_counter() - started, 2)  # measured.json, with the stages
        self.diagnosis = {
            "tool": report.tool,
            "samples": min(count, state.data.evaluation_count),
            "layers": layers,
            "notes": list(report.notes),
        }
        return [layer.module for layer in report.layers]

    def _rerank(self, ranked: list[str], probes: set[str]) -> list[str]:
        """Put the probed layers in order of the output SQNR they gave when left in float alone."""
        gains = {
            step.quantize.keep_float[-1]: step.score() for step in self.steps if step.name in probes and step.compiled
        }
        for layer in self.diagnosis.get("layers", []):
            if layer["module"] in gains:
                layer["output_sqnr_db_if_float"] = gains[layer["module"]][1]
        if gains:
            self.diagnosis["output_tool"] = "the artifact rebuilt with only that layer in float, run in its runtime"
        probed = sorted(gains, key=lambda m: gains[m], reverse=True)
        return probed + [m for m in ranked if m not in gains]

    def _finish(self, outcome: str) -> BuildState:
        measured = [s for s in self.steps if s.eligible or s is self.steps[0]]
        passing = [s for s in measured if s.gate_passed]
        chosen = passing[0] if passing else max(measured, key=_Step.score)
        index = self.steps.index(chosen)
        kept = [{"module": m, "why": f"kept in float by repair step {index}"} for m in chosen.quantize.keep_float]
        wide = [{"module": m, "why": f"16-bit by repair step {index}"} for m in chosen.quantize.int16_activations]
        repair = {
            "enabled": True,
            "ran": True,
            "reason": f"gate failed: {_gate_line(self.steps[0])}",
            "outcome": outcome,
            "budget": {"max_steps": self.ctx.recipe.repair.max_steps,
                       "max_float_layers": self.ctx.recipe.repair.max_float_layers},
            "steps": [s.record(i) for i, s in enumerate(self.steps)],
            "chosen": index,
            "float_layers": kept,
            "int16_layers": wide,
            "not_tried": [ladder.NOT_A_RUNG],
        }  # fmt: skip
        state = self.state.with_facts("repair", repair).with_facts("diagnosis", self.diagnosis)
        if any(s.latency_ms is not None for s in self.steps):  # a measurement: it goes to measured.json
            state = state.with_facts("latency", {"repair_steps_ms": [s.latency_ms for s in self.steps]})
        if index == 0:
            return state
        assert chosen.compiled is not None  # noqa: S101 - chosen among measured steps
        self.ctx.reporter.info(f"repair kept step {index} ({chosen.name})")
        facts = dict(state.facts)
        for section, values in chosen.compiled.facts.items():
            facts[section] = values
        state = state.evolve(compiled=chosen.compiled, quantize=chosen.quantize, facts=facts)
        if kept or wide:
            layers = ", ".join([k["module"] for k in kept] + [w["module"] + " (16-bit)" for w in wide])
            state = state.with_warning(f"repair left layers out of int8 to pass the gate: {layers}")
        return state


def _measure(compiled: Compiled, state: BuildState, ctx: BuildContext) -> _Step:
    """Run `compiled` on the evaluation split and judge it; the step is named by the caller."""
    assert state.data is not None and state.io is not None and state.baseline is not None  # noqa: S101
    runner: Runner = ctx.backend.open(compiled.artifact, state.io, ctx.plan.options)
    _, outputs = run_artifact(runner, state.io, state.data.evaluation, dict(ctx.recipe.io.state))
    accuracy = judge(
        state.baseline, outputs, state.data.evaluation_labels, state.io, ctx.recipe.gate, runner,
        synthetic=state.data.is_synthetic, label_names=state.data.label_names,
    )  # fmt: skip
    quantize = state.quantize or ctx.recipe.quantize
    quantize = dataclasses.replace(quantize, scheme=compiled.scheme)
    return _Step("as built", "none", quantize, compiled, accuracy, _latency_ms(runner, state, ctx))


def _int8_left(compiled: Compiled) -> bool:
    """Whether any compute op of `compiled` runs in int8 (a build with every layer in float repairs nothing)."""
    quantize = compiled.facts.get("quantize", {})
    counts = ("quantized_ops", "quantized_count", "activation_quantize_ops")  # Core ML: activations count too
    return any(bool(quantize.get(key)) for key in counts)


def _latency_ms(runner: Runner, state: BuildState, ctx: BuildContext) -> float | None:
    if runner.mode != "runtime" or not ctx.recipe.latency.enabled or state.example_inputs is None:
        return None
    timed = latency.measure({"artifact": runner.run}, dict(state.example_inputs), warmup=3, runs=15)
    return round(timed["artifact"]["median_ms"], 4)


def _need(compiled: Compiled | None) -> Compiled:
    if compiled is None:
        raise InternalError("repair needs a compiled artifact")
    return compiled


def _gate_line(step: _Step) -> str:
    gate = step.accuracy.get("gate") or {}
    if step.compiled is None:
        return step.status
    verdict = "passed" if gate.get("passed") else "failed"
    value = gate.get("value")
    shown = f"{value:.4g}" if isinstance(value, float) else str(value)
    return f"{gate.get('rule', '')}: measured {shown} ({verdict})"
