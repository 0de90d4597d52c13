"""Judge an artifact: metrics for every output, custom metrics, and the gate's rules, with an honest status.

Each output gets the metrics that fit its shape (`metrics.metrics_for`): top-1 for class scores,
pixel agreement and mean IoU for class maps, fidelity (SQNR, cosine, max error) for everything. The
first output is the primary one: its metrics are also `accuracy.metrics`, and labels apply to it.
The gate is data: the recipe's `gate.rules`, or by default top-1 drop on the primary output when
there are labels, else SQNR on every floating output. A user metric `file.py:function` is called
with (float outputs, artifact outputs, labels) and may return a number or a table of numbers.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import confidence, metrics
from edgekit.backends.base import IoContract, Runner
from edgekit.data import Arrays
from edgekit.errors import ConfigError, InputError, first_line
from edgekit.recipe import GateConfig, GateOp, GateRule


def judge(
    baseline: Arrays,
    outputs: Arrays,
    labels: np.ndarray | None,
    io: IoContract,
    gate: GateConfig,
    runner: Runner,
    *,
    synthetic: bool,
    label_names: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Return the accuracy section: status, metrics (primary output), per-output metrics, gate and rules."""
    primary = io.outputs[0].name
    per_output = {
        name: metrics.measure(_chosen(baseline[name], name == primary and labels is not None),
                              baseline[name], outputs[name], labels if name == primary else None)
        for name in io.output_names
    }  # fmt: skip
    custom = custom_metrics(gate.custom_metrics, baseline, outputs, labels)
    rules = list(gate.rules) or default_rules(gate, io, labels is not None, baseline)
    results = [_apply(rule, primary, per_output, custom, baseline, outputs, labels) for rule in rules]
    passed = all(r["passed"] for r in results)
    evidence = _evidence(baseline[primary], outputs[primary], labels, label_names, results)
    samples = len(baseline[primary])
    if synthetic:
        status, reason = "skipped", "no real data: metrics are on synthetic inputs and say nothing about accuracy"
    elif samples < gate.min_evaluation_size:
        status = "inconclusive"
        reason = (
            f"only {samples} evaluation samples: at least {gate.min_evaluation_size} are needed to judge the gate "
            f"(gate.min_evaluation_size){_needed(evidence)}"
        )
    elif runner.mode == "proxy":
        status, reason = "proxy", runner.reason
    else:
        status, reason = ("passed" if passed else "failed"), ""
    decisive = next((r for r in results if not r["passed"]), results[0])
    return {
        "status": status,
        "reason": reason,
        "checked_with": runner.checked_with,
        "metrics": {**per_output[primary], **custom},
        "outputs": per_output,
        "evidence": evidence,
        "gate": {
            "rule": "; ".join(r["rule"] for r in results),
            "value": decisive["value"],
            "passed": None if synthetic else passed,
            "rules": results,
        },
    }


def default_rules(gate: GateConfig, io: IoContract, has_labels: bool, baseline: Arrays) -> list[GateRule]:
    """Top-1 drop on the primary output with labels; otherwise SQNR on every floating-point output."""
    if has_labels and metrics.metrics_for(baseline[io.outputs[0].name].shape, labels=True).count("top1_drop"):
        return [GateRule(metric="top1_drop", op=GateOp.AT_MOST, value=gate.max_top1_drop)]
    floating = [t.name for t in io.outputs if t.dtype.startswith(("float", "bfloat"))] or [io.outputs[0].name]
    return [GateRule(metric="sqnr_db", output=name, op=GateOp.AT_LEAST, value=gate.min_sqnr_db) for name in floating]


def custom_metrics(
    specs: tuple[str, ...], baseline: Arrays, outputs: Arrays, labels: np.ndarray | None
) -> dict[str, float]:
    """Call each `file.py:function` on the evaluation outputs; return its value(s) by name."""
    found: dict[str, float] = {}
    for spec in specs:
        fn = load_metric(spec)
        try:
            value = fn(dict(baseline), dict(outputs), labels)
        except Exception as exc:
            raise InputError(
                f"metric '{spec}' failed: {first_line(exc)}", hint="run it by hand on the golden files"
            ) from exc
        table = value if isinstance(value, dict) else {spec.rpartition(":")[2]: value}
        for key, number in table.items():
            if isinstance(number, bool) or not isinstance(number, int | float | np.number):
                raise InputError(f"metric '{spec}' returned {number!r} for '{key}'; it must return numbers")
            found[str(key)] = float(number)
    return found


def load_metric(spec: str) -> Callable[..., Any]:
    """Import `file.py:function` (or `package.module:function`)."""
    source, _, name = spec.rpartition(":")
    if not source or not name:
        raise ConfigError(f"metric '{spec}' is not FILE.py:FUNCTION", hint="e.g. --metric my_metrics.py:word_accuracy")
    if source.endswith(".py"):
        path = Path(source)
        if not path.is_file():
            raise InputError(f"metric file '{source}' does not exist")
        module_spec = importlib.util.spec_from_file_location(f"_edgekit_metric_{path.stem}", path)
        module = importlib.util.module_from_spec(module_spec)  # type: ignore[arg-type]
        module_spec.loader.exec_module(module)  # type: ignore[union-attr]
    else:
        module = importlib.import_module(source)
    fn = getattr(module, name, None)
    if not callable(fn):
        raise InputError(f"'{source}' has no function '{name}'")
    return fn  # type: ignore[no-any-return]


def _evidence(
    reference: np.ndarray,
    test: np.ndarray,
    labels: np.ndarray | None,
    label_names: tuple[str, ...],
    results: list[dict[str, Any]],
) -> dict[str, Any]:
    """Say how sure the verdict is: intervals, flipped samples, per-class drops; and whether it is too close."""
    if reference.ndim != 2 or reference.shape[1] < 2 or not np.issubdtype(reference.dtype, np.floating):
        return {}
    found = confidence.top1_evidence(reference, test, labels, label_names)
    rule = next((r for r in results if r["metric"] == "top1_drop"), None)
    if rule is not None and "top1_drop_ci95" in found:
        low, high = found["top1_drop_ci95"]
        limit = rule["threshold"]
        if low <= limit <= high:
            ref = np.argmax(reference, axis=1) == labels
            art = np.argmax(test, axis=1) == labels
            sd = float(np.std(ref.astype(float) - art.astype(float)))
            needed = confidence.samples_needed(sd, abs(limit - rule["value"]) or 0.5)
            found["too_close"] = (
                f"the 95% interval of top1_drop, [{low:.2f}, {high:.2f}], straddles the limit {limit}: the evaluation "
                f"set is too small to be sure (about {needed} samples would be needed)"
            )
    return found


def _needed(evidence: dict[str, Any]) -> str:
    text = evidence.get("too_close", "")
    return f"; {text}" if text else ""


def _chosen(reference: np.ndarray, labelled: bool) -> list[str]:
    if not np.issubdtype(reference.dtype, np.floating):
        return ["exact_agreement"]
    return metrics.metrics_for(reference.shape, labels=labelled)


def _apply(
    rule: GateRule,
    primary: str,
    per_output: dict[str, dict[str, float]],
    custom: dict[str, float],
    baseline: Arrays,
    outputs: Arrays,
    labels: np.ndarray | None,
) -> dict[str, Any]:
    output = rule.output or primary
    if not rule.output and rule.metric in custom:
        value = custom[rule.metric]
    elif output not in per_output:
        raise ConfigError(f"gate rule on output '{output}', which the model does not have ({', '.join(per_output)})")
    elif rule.metric in per_output[output]:
        value = per_output[output][rule.metric]
    elif rule.metric in metrics.REGISTRY:
        if metrics.REGISTRY[rule.metric].needs_labels and labels is None:
            raise ConfigError(f"gate rule '{rule.metric}' needs labels, and the data has none")
        value = metrics.measure([rule.metric], baseline[output], outputs[output], labels)[rule.metric]
        per_output[output][rule.metric] = value
    else:
        known = ", ".join([*metrics.REGISTRY, *custom])
        raise ConfigError(f"gate rule names unknown metric '{rule.metric}'", hint=f"known: {known}")
    passed = value >= rule.value if rule.op is GateOp.AT_LEAST else value <= rule.value
    where = f" ({output})" if rule.output else ""
    return {
        "metric": rule.metric,
        "output": output,
        "op": rule.op.value,
        "threshold": rule.value,
        "value": value,
        "passed": bool(passed),
        "rule": f"{rule.metric}{where} {rule.op.value} {rule.value}",
    }
