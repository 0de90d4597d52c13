"""The report's HTML sections, each from the plain values of `edgekit.report.facts` (escaped here, nowhere else).

A plot is a `<figure class="plot" data-plot=NAME>` holding an `<img>` with the PNG inline (base64),
so the page needs nothing but itself; `plot` is None when matplotlib is missing and the tables stand alone.
"""

from __future__ import annotations

import base64
import json
from html import escape
from typing import Any

from edgekit.report import facts


def verdict(said: dict[str, Any], warned: int) -> str:
    """Return the verdict box: status, headline, each gate rule with pass/fail, runtime or proxy, warning count."""
    rules = "".join(
        f"<tr><td><code>{escape(r['rule'])}</code></td><td>{_fmt(r['value'], 3)}</td>"
        f"<td class='{_outcome_class(r['passed'])}'>{_outcome(r['passed'])}</td></tr>"
        for r in said["rules"]
    )
    checked = "the target's runtime" if said["mode"] == "runtime" else "a proxy (not the target's runtime)"
    reason = f"<p>{escape(said['reason'])}</p>" if said["reason"] and said["reason"] not in said["headline"] else ""
    table = (
        f"<table><tr><th>gate rule</th><th>measured</th><th>result</th></tr>{rules}</table>"
        if rules
        else "<p>no gate</p>"
    )
    return (
        f"<section id='verdict' class='verdict {escape(said['status'])}' data-status='{escape(said['status'])}'>"
        f"<h2>Verdict: <span class='status'>{escape(said['status'].upper())}</span></h2>"
        f"<p class='headline'>{escape(said['headline'])}</p>{reason}{table}"
        f"<p>Checked by <b data-mode='{escape(said['mode'])}'>{checked}</b>: {escape(said['checked_with'])}</p>"
        f"{_warning_count(warned)}</section>"
    )


def metrics(rows: list[dict[str, Any]], flipped: dict[str, Any] | None) -> str:
    """Return the float vs artifact table with 95% intervals, and the samples whose top-1 class flipped."""
    if not rows:
        return _section("metrics", "Float vs artifact", "<p>no metrics recorded</p>")
    body = "".join(
        f"<tr><td>{escape(r['label'])}</td><td>{_fmt(r['float'], r['digits'], r['unit'])}</td>"
        f"<td>{_fmt(r['artifact'], r['digits'], r['unit'])}</td><td>{_fmt(r['drop'], r['digits'])}</td>"
        f"<td>{_interval(r['interval'])}{_small(r['interval_of'])}</td></tr>"
        for r in rows
    )
    text = (
        "<table><tr><th>metric</th><th>float</th><th>artifact</th><th>drop</th><th>95% interval</th></tr>"
        f"{body}</table>"
    )
    if flipped is not None:
        listed = ", ".join(str(i) for i in flipped["indices"]) + (
            f" and {flipped['more']} more" if flipped["more"] else ""
        )
        text += (
            f"<p>{flipped['flipped']} of {flipped['samples']} evaluation samples changed their top-1 class"
            + (f" (indices: {escape(listed)})" if listed else "")
            + ".</p>"
        )
    return _section("metrics", "Float vs artifact", text)


def size_latency(facts: dict[str, Any], plot: bytes | None) -> str:
    """Return the size and latency figures, float vs artifact, with their plot."""
    ratio = f" ({facts['size_ratio']:.2f}x float)" if facts["size_ratio"] else ""
    lines = [f"size: float {_bytes(facts['float_bytes'])}, {escape(facts['scheme'])} {_bytes(facts['artifact_bytes'])}"
             f"{ratio}"]  # fmt: skip
    if facts["latency_measured"]:
        speed = f" ({facts['latency_ratio']:.2f}x float)" if facts["latency_ratio"] else ""
        lines.append(
            f"latency (median, {escape(facts['latency_where'])}): float {_fmt(facts['float_ms'], 3, ' ms')}, "
            f"artifact {_fmt(facts['artifact_ms'], 3, ' ms')}{speed}"
        )
    else:
        lines.append(
            "latency: not measured" + (f" ({escape(facts['latency_reason'])})" if facts["latency_reason"] else "")
        )
    text = "".join(f"<p>{line}</p>" for line in lines) + _plot(
        "size-latency", plot, "size and latency, float vs artifact"
    )
    return _section("size-latency", "Size and latency", text)


def sensitivity(found: dict[str, Any] | None, plot: bytes | None) -> str:
    """Return the per-layer sensitivity chart and table, with the tool that measured it."""
    if found is None:
        return _section(
            "sensitivity", "Per-layer sensitivity", "<p>No per-layer diagnosis was recorded for this build.</p>"
        )
    seconds = f" in {facts.duration(found['seconds'])}" if found["seconds"] is not None else ""
    samples = f" on {found['samples']} samples" if found["samples"] else ""
    tools = f"measured with <code>{escape(found['tool'])}</code>{samples}{seconds}"
    if found["output_tool"]:
        tools += f"; the model output with one layer in float, with <code>{escape(found['output_tool'])}</code>"
    rows = "".join(
        f"<tr><td><code>{escape(layer['module'])}</code></td><td>{escape(layer['op'])}</td>"
        f"<td>{_fmt(layer['sqnr_db'], 1, ' dB')}</td><td>{_fmt(layer['output_sqnr_db_if_float'], 1, ' dB')}</td>"
        f"<td>{_small(', '.join(layer['native']))}</td></tr>"
        for layer in found["layers"]
    )
    more = f"<p>and {found['more']} less sensitive layers (manifest.json has them all)</p>" if found["more"] else ""
    more += "".join(f"<p><small>{escape(note)}</small></p>" for note in found["notes"])
    text = (
        f"<p>Most sensitive first, {tools}.</p>"
        + (_plot("sensitivity", plot, "per-layer SQNR") if found["layers"] else "<p>no layers measured</p>")
        + "<table><tr><th>module</th><th>op</th><th>SQNR at its output</th><th>output SQNR if left in float</th>"
        f"<th>runtime node names</th></tr>{rows}</table>{more}"
    )
    return _section("sensitivity", "Per-layer sensitivity", text)


def repair(found: dict[str, Any] | None, plot: bytes | None) -> str:
    """Return the repair ladder: why it ran, its outcome and budget, each step measured, the layers kept back."""
    if found is None:
        return _section("repair", "Repair ladder", "<p>No repair was recorded for this build.</p>")
    state = "ran" if found["ran"] else ("enabled, not run" if found["enabled"] else "disabled")
    budget = ", ".join(f"{escape(str(k))} {escape(str(v))}" for k, v in found["budget"].items())
    head = f"<p>Repair {state}; outcome: <b>{escape(str(found['outcome'] or 'none'))}</b>"
    head += (f". Why: {escape(found['reason'])}" if found["reason"] else "") + (f". Budget: {budget}" if budget else "")
    keys = found["columns"]
    rows = "".join(_step_row(step, keys, step["step"] == found["chosen"]) for step in found["steps"])
    table = (
        "<table><tr><th>step</th><th>change</th>" + "".join(f"<th>{escape(k)}</th>" for k in keys)
        + "<th>gate</th><th>size</th><th>latency</th><th>float / 16-bit layers</th></tr>" + rows + "</table>"
    ) if found["steps"] else "<p>no steps</p>"  # fmt: skip
    kept = "".join(
        f"<li><code>{escape(k['module'])}</code> in {kind}: {escape(k['why'] or 'no reason recorded')}</li>"
        for kind, key in (("float", "float_layers"), ("16-bit", "int16_layers"))
        for k in found[key]
    )
    text = (
        head
        + ".</p>"
        + (_plot("repair", plot, "repair ladder") if found["steps"] else "")
        + table
        + (f"<h3>Layers not in int8</h3><ul>{kept}</ul>" if kept else "")
    )
    return _section("repair", "Repair ladder", text)


def per_class(found: dict[str, Any] | None, plot: bytes | None) -> str:
    """Return the per-class top-1 (float, artifact, drop) with the worst class named."""
    if found is None:
        return _section("per-class", "Per-class drops", "<p>No labels: per-class accuracy was not measured.</p>")
    worst = found["worst"]
    if worst and (worst.get("drop") or 0.0) > 0:
        named = (
            f"<p>Worst class: <b>{escape(str(worst['label']))}</b> (drop {worst['drop']:.2f} points, "
            f"{worst.get('samples')} samples).</p>"
        )
    else:
        named = "<p>No class lost top-1 accuracy.</p>"
    rows = "".join(
        f"<tr><td>{escape(str(c['label']))}</td><td>{c['samples']}</td><td>{_fmt(c['float_top1'], 2, '%')}</td>"
        f"<td>{_fmt(c['artifact_top1'], 2, '%')}</td><td>{_fmt(c['drop'], 2)}</td></tr>"
        for c in found["classes"]
    )
    text = (
        named
        + _plot("per-class", plot, "per-class top-1, float vs artifact")
        + "<details><summary>table</summary><table><tr><th>class</th><th>samples</th><th>float</th>"
        f"<th>artifact</th><th>drop</th></tr>{rows}</table></details>"
    )
    return _section("per-class", "Per-class drops", text)


def warnings(found: list[dict[str, str]]) -> str:
    """Return the warnings, each with its kind."""
    items = "".join(f"<li><b>{escape(w['kind'])}</b>: {escape(w['text'])}</li>" for w in found) or "<li>none</li>"
    return _section("warnings", f"Warnings ({len(found)})", f"<ul>{items}</ul>")


def details(manifest: dict[str, Any]) -> str:
    """Return the remaining manifest sections as folded JSON."""
    parts = "".join(
        f"<details><summary>{escape(name)}</summary><pre>{escape(json.dumps(manifest[name], indent=2))}</pre></details>"
        for name in ("quantize", "export", "runtime", "io", "prune", "data", "toolchain", "build")
        if manifest.get(name)
    )
    return _section("details", "Build details", parts)


def _step_row(step: dict[str, Any], keys: list[str], chosen: bool) -> str:
    layers = [*step["float_layers"], *(f"{name} (16-bit)" for name in step["int16_layers"])]
    cells = "".join(f"<td>{_fmt(step['metrics'].get(k), 2)}</td>" for k in keys)
    return (
        f"<tr{' class=chosen' if chosen else ''}><td>{escape(str(step['step']))}: {escape(step['name'])}"
        f"{' (chosen)' if chosen else ''}</td><td>{escape(step['change'])}{_small(step['status'])}</td>{cells}"
        f"<td class='{_outcome_class(step['gate_passed'])}'>{_outcome(step['gate_passed'])}</td>"
        f"<td>{_bytes(step['artifact_bytes'])}</td><td>{_fmt(step['latency_ms'], 3, ' ms')}</td>"
        f"<td>{escape(', '.join(str(x) for x in layers)) or '&ndash;'}</td></tr>"
    )


def _warning_count(count: int) -> str:
    return f"<p><a href='#warnings'>{count} warning{'s' if count != 1 else ''}</a> below.</p>" if count else ""


def _plot(name: str, png: bytes | None, alt: str) -> str:
    if png is None:
        return ""
    data = base64.b64encode(png).decode("ascii")
    return (
        f"<figure class='plot' data-plot='{name}'><img alt='{escape(alt)}' src='data:image/png;base64,{data}'></figure>"
    )


def _section(key: str, title: str, body: str) -> str:
    return f"<section id='{key}'><h2>{escape(title)}</h2>{body}</section>"


def _fmt(value: Any, digits: int, unit: str = "") -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, str):
        return escape(value) + escape(unit)
    return f"{value:.{digits}f}{escape(unit)}"


def _interval(pair: list[float] | None) -> str:
    return "&ndash;" if pair is None else f"[{pair[0]:.2f}, {pair[1]:.2f}]"


def _small(text: str) -> str:
    return f" <small>{escape(text)}</small>" if text else ""


def _bytes(count: int | None) -> str:
    if count is None:
        return "&ndash;"
    return f"{count / 1e6:.2f} MB" if count >= 1e6 else f"{count / 1e3:.1f} KB"


def _outcome(passed: bool | None) -> str:
    return "n/a" if passed is None else "pass" if passed else "FAIL"


def _outcome_class(passed: bool | None) -> str:
    return "na" if passed is None else "pass" if passed else "fail"
