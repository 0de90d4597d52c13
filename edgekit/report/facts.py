"""What the report and `edgekit explain` say about an artifact, read from its manifest table as plain values.

Every function takes the manifest as JSON (`Manifest.to_json()`) and returns JSON-ready values, so
the HTML page, the terminal and `explain --json` say the same thing. Sections a manifest lacks
(`diagnosis`, `repair`, evidence) come back as None or empty, never as an error.
"""

from __future__ import annotations

import math
from typing import Any

MAX_LAYERS = 12  # most sensitive layers shown
MAX_FLIPPED_SHOWN = 20
LADDER_COLUMNS = ("sqnr_db", "top1_agreement", "top1_drop")  # the step metrics shown when present (else all)

# Metrics that compare the artifact with float (no float value of their own): label, unit, digits.
_FIDELITY = {
    "sqnr_db": ("SQNR vs float", " dB", 1),
    "cosine": ("cosine vs float", "", 4),
    "max_abs_error": ("max abs error vs float", "", 3),
    "top1_agreement": ("top-1 agreement with float", "%", 1),
    "top5_agreement": ("top-5 agreement with float", "%", 1),
    "pixel_agreement": ("pixel agreement with float", "%", 1),
    "mean_iou": ("mean IoU vs float", "", 3),
    "exact_agreement": ("exact agreement with float", "%", 1),
    "sequence_agreement": ("sequence agreement with float", "%", 1),
}
_TOP1 = ("float_top1", "artifact_top1", "top1_drop")


def verdict(manifest: dict[str, Any]) -> dict[str, Any]:
    """Return the status, a one-line headline, the gate's rules with pass/fail, and what checked it."""
    accuracy = manifest["accuracy"]
    status = accuracy["status"]
    gate = accuracy.get("gate") or {}
    rules = [
        {"rule": r["rule"], "value": _number(r.get("value")), "passed": r.get("passed")} for r in gate.get("rules", ())
    ] or ([{"rule": gate["rule"], "value": _number(gate.get("value")), "passed": gate.get("passed")}] if gate else [])
    checked_with = accuracy.get("checked_with", "")
    mode = "proxy" if status == "proxy" or checked_with.startswith("proxy") else "runtime"
    failing = next((r for r in rules if r["passed"] is False), None)
    reason = accuracy.get("reason", "")
    if status == "passed":
        headline = f"passed: the artifact meets its accuracy gate, measured in its runtime ({checked_with})"
    elif status == "failed":
        measured = f", measured {failing['value']:.3f}" if failing and failing["value"] is not None else ""
        headline = f"FAILED: the artifact misses its accuracy gate ({failing['rule'] if failing else ''}{measured})"
    elif status == "proxy":
        outcome = "met" if gate.get("passed") else "missed"
        headline = f"proxy: the gate was {outcome} on a stand-in ({checked_with}), not in the target's runtime"
    else:
        headline = f"{status}: {reason}" if reason else status
    return {
        "status": status,
        "headline": headline,
        "reason": reason,
        "checked_with": checked_with,
        "mode": mode,
        "gate_passed": gate.get("passed"),
        "rules": rules,
    }


def metric_rows(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Return float vs artifact metrics with their 95% intervals (top-1 first), then custom metrics."""
    metrics = manifest["accuracy"].get("metrics", {})
    evidence = manifest["accuracy"].get("evidence", {})
    rows: list[dict[str, Any]] = []
    if all(key in metrics for key in _TOP1):
        rows.append({
            "metric": "top1", "label": "top-1 accuracy (labels)", "unit": "%", "digits": 2,
            "float": _number(metrics["float_top1"]), "artifact": _number(metrics["artifact_top1"]),
            "drop": _number(metrics["top1_drop"]), "interval": _pair(evidence.get("top1_drop_ci95")),
            "interval_of": "drop, points (paired bootstrap)",
        })  # fmt: skip
    for key, (label, unit, digits) in _FIDELITY.items():
        if key in metrics:
            interval = _pair(evidence.get("agreement_ci95")) if key == "top1_agreement" else None
            rows.append({
                "metric": key, "label": label, "unit": unit, "digits": digits, "float": None,
                "artifact": _value(metrics[key]), "drop": None, "interval": interval,
                "interval_of": "agreement, % (Wilson)" if interval else "",
            })  # fmt: skip
    known = {*_TOP1, *_FIDELITY}
    for key, value in metrics.items():
        if key not in known:
            rows.append({"metric": key, "label": key, "unit": "", "digits": 4, "float": None,
                         "artifact": _value(value), "drop": None, "interval": None, "interval_of": ""})  # fmt: skip
    return rows


def flipped(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """Return how many evaluation samples changed their top-1 class, and the first indices."""
    evidence = manifest["accuracy"].get("evidence", {})
    if "flipped" not in evidence:
        return None
    return {
        "flipped": evidence["flipped"],
        "samples": evidence.get("samples"),
        "indices": list(evidence.get("flipped_indices", ()))[:MAX_FLIPPED_SHOWN],
        "more": max(0, evidence["flipped"] - MAX_FLIPPED_SHOWN),
    }


def size_latency(manifest: dict[str, Any]) -> dict[str, Any]:
    """Return float and artifact size (bytes) and host latency (median, p90 in ms), and their ratios."""
    size = manifest.get("size", {})
    latency = manifest.get("latency", {})
    measured = bool(latency.get("measured")) and "artifact" in latency
    return {
        "scheme": manifest.get("quantize", {}).get("scheme") or "artifact",
        "float_bytes": size.get("float_reference_bytes"),
        "artifact_bytes": size.get("artifact_bytes"),
        "size_ratio": _number(size.get("artifact_over_float")),
        "latency_measured": measured,
        "latency_where": latency.get("where", ""),
        "float_ms": _number(latency.get("float", {}).get("median_ms")),
        "float_p90_ms": _number(latency.get("float", {}).get("p90_ms")),
        "artifact_ms": _number(latency.get("artifact", {}).get("median_ms")),
        "artifact_p90_ms": _number(latency.get("artifact", {}).get("p90_ms")),
        "latency_ratio": _number(latency.get("artifact_over_float")),
        "latency_reason": latency.get("reason", ""),
    }


def sensitivity(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """Return the per-layer diagnosis (most sensitive first, at most MAX_LAYERS), or None when none ran."""
    diagnosis = manifest.get("diagnosis") or {}
    layers = diagnosis.get("layers") or []
    if not diagnosis:
        return None
    shown = [
        {
            "module": layer.get("module", "?"),
            "native": list(layer.get("native") or ()),
            "op": layer.get("op", ""),
            "sqnr_db": _number(layer.get("sqnr_db")),
            "output_sqnr_db_if_float": _number(layer.get("output_sqnr_db_if_float")),
        }
        for layer in layers[:MAX_LAYERS]
    ]
    return {
        "tool": diagnosis.get("tool", "unknown"),
        "output_tool": diagnosis.get("output_tool", ""),
        "seconds": _number((manifest.get("build") or {}).get("seconds_by_stage", {}).get("repair.diagnosis")),
        "samples": diagnosis.get("samples"),
        "layers": shown,
        "more": max(0, len(layers) - len(shown)),
        "notes": [str(note) for note in diagnosis.get("notes") or ()],
    }


def ladder(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """Return the repair: whether it ran and why, its outcome and budget, every step, the layers kept back."""
    repair = manifest.get("repair") or {}
    if not repair:
        return None
    step_latency = (manifest.get("latency") or {}).get("repair_steps_ms") or []  # measured.json
    steps = [
        {
            "step": step.get("step", index),
            "name": step.get("name", ""),
            "change": step.get("change", ""),
            "metrics": {k: _number(v) for k, v in (step.get("metrics") or {}).items()},
            "gate_passed": step.get("gate_passed"),
            "artifact_bytes": step.get("artifact_bytes"),
            "latency_ms": _number(step_latency[index] if index < len(step_latency) else None),
            "float_layers": list(step.get("float_layers") or ()),
            "int16_layers": list(step.get("int16_layers") or ()),
            "status": str(step.get("status") or ""),
        }
        for index, step in enumerate(repair.get("steps") or ())
    ]
    present = sorted({k for step in steps for k in step["metrics"]})
    columns = [k for k in LADDER_COLUMNS if k in present] or present
    return {
        "enabled": repair.get("enabled"),
        "columns": columns,
        "ran": repair.get("ran"),
        "reason": repair.get("reason", ""),
        "outcome": repair.get("outcome", ""),
        "budget": dict(repair.get("budget") or {}),
        "steps": steps,
        "chosen": repair.get("chosen"),
        "float_layers": [_kept(layer) for layer in repair.get("float_layers") or ()],
        "int16_layers": [_kept(layer) for layer in repair.get("int16_layers") or ()],
    }


def per_class(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """Return float and artifact top-1 per class and the drop, in label order, with the worst class named."""
    evidence = manifest["accuracy"].get("evidence", {})
    table = evidence.get("per_class_drop") or {}
    if not table:
        return None
    rows = [
        {"label": label, "samples": row.get("samples"), "float_top1": _number(row.get("float_top1")),
         "artifact_top1": _number(row.get("artifact_top1")), "drop": _number(row.get("drop"))}
        for label, row in table.items()
    ]  # fmt: skip
    return {"classes": rows, "worst": evidence.get("worst_class")}


def warnings(manifest: dict[str, Any]) -> list[dict[str, str]]:
    """Return what a reader must not miss (kind, text): int8 not faster, layers in float, proxy, small set, others.

    The four checks come from the manifest's figures; the build's own warnings follow, except those
    that say what a check already says.
    """
    found: list[dict[str, Any]] = []  # kind, text, and markers: what a build warning saying the same contains
    recorded = [str(w) for w in manifest.get("warnings", ())]
    timing = size_latency(manifest)
    ratio = timing["latency_ratio"]
    if timing["latency_measured"] and ratio is not None and ratio >= 1.0:
        found.append({"kind": "int8 not faster", "markers": ("not faster",),
                      "text": f"the {timing['scheme']} artifact is not faster than float on this host "
                              f"({ratio:.2f}x float latency)"})  # fmt: skip
    not_int8 = _not_int8(manifest)
    if not_int8:
        found.append({"kind": "layers left in float", "markers": ("left in float", "out of int8"),
                      "text": "not every layer is int8: " + "; ".join(not_int8)})  # fmt: skip
    said = verdict(manifest)
    if said["mode"] == "proxy":
        found.append({"kind": "proxy check", "markers": ("stand-in",),
                      "text": f"accuracy was checked on a stand-in ({said['checked_with']}), not in the target's "
                              f"runtime: {said['reason']}".rstrip(": ")})  # fmt: skip
    evidence = manifest["accuracy"].get("evidence", {})
    if said["status"] == "inconclusive":
        found.append({"kind": "small evaluation set", "markers": ("evaluation samples",), "text": said["reason"]})
    elif evidence.get("too_close"):
        found.append(
            {"kind": "small evaluation set", "markers": ("too small to be sure",), "text": evidence["too_close"]}
        )
    markers = [m for f in found for m in f["markers"]]
    said_by_build = [{"kind": "build", "text": w} for w in recorded if not any(m in w for m in markers)]
    return [{"kind": f["kind"], "text": f["text"]} for f in found] + said_by_build


def duration(seconds: float | None) -> str:
    """Return seconds as a person reads them: '12.3 s', '30 ms'."""
    if seconds is None:
        return ""
    return f"{seconds:.1f} s" if seconds >= 0.1 else f"{seconds * 1000:.0f} ms"


def _not_int8(manifest: dict[str, Any]) -> list[str]:
    """Return what does not run in int8: layers the repair kept back (and why), the layers they pulled along, ops."""
    parts = []
    kept = ladder(manifest)
    if kept:
        parts += [f"{k['module']} (float: {k['why'] or 'no reason recorded'})" for k in kept["float_layers"]]
        parts += [f"{k['module']} (16-bit: {k['why'] or 'no reason recorded'})" for k in kept["int16_layers"]]
    quantize = manifest.get("quantize", {})
    for layer in quantize.get("float_layers") or ():
        if isinstance(layer, dict):
            parts += [f"{also} (float: {layer.get('why', '')})" for also in layer.get("also_float") or ()]
    float_ops = quantize.get("float_ops") or {}
    if float_ops:
        parts.append("ops in float: " + ", ".join(f"{op} x{count}" for op, count in float_ops.items()))
    if float_ops and "quantized_ops" in quantize and not quantize["quantized_ops"]:
        parts.append("no op runs in int8: the artifact is float in all but name")
    return parts


def _kept(layer: Any) -> dict[str, str]:
    if isinstance(layer, dict):
        return {"module": str(layer.get("module", "?")), "why": str(layer.get("why", ""))}
    return {"module": str(layer), "why": ""}


def _number(value: Any) -> float | None:
    """Return a finite float, or None for a missing, non-numeric or non-finite value ("nan" in JSON)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _value(value: Any) -> float | str | None:
    """Return a finite float, or "inf", "-inf", "nan" as the manifest writes them (SQNR of identical outputs)."""
    return value if value in ("inf", "-inf", "nan") else _number(value)


def _pair(value: Any) -> list[float] | None:
    if isinstance(value, list | tuple) and len(value) == 2 and all(_number(v) is not None for v in value):
        return [float(value[0]), float(value[1])]
    return None
