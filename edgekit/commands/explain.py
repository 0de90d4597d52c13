"""`edgekit explain DIR`: why an artifact passed or failed, in the terminal: verdict, sensitive layers, repair.

It prints what report.html shows (both read `edgekit.report.facts`), without the plots.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from edgekit.commands.output import Console, JsonCommand, call, envelope
from edgekit.errors import ExitStatus
from edgekit.report import facts

LAYERS_SHOWN = 5  # most sensitive layers in the terminal (--json has up to facts.MAX_LAYERS)


@click.command(cls=JsonCommand)
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
@click.option("--traceback", is_flag=True, help="show the full error chain")
def explain(artifact: Path, as_json: bool, traceback: bool) -> None:
    """Explain ARTIFACT's verdict: gate rules, metrics with 95% intervals, sensitive layers, repair ladder, warnings.

    \b
    Exit statuses, as `edgekit inspect`:
      0  the explanation was printed (gate passed, checked by a proxy, or skipped)
      5  not an artifact folder, a damaged manifest, or files that differ from it
      7  the artifact failed its accuracy gate (kept with --allow-accuracy-failure)
      8  the artifact's accuracy is inconclusive (too few evaluation samples)
    """
    from edgekit import api

    console = Console(as_json=as_json)
    where = {"artifact_dir": artifact}
    manifest, file_problems = call(lambda: api.inspect(artifact), console, traceback=traceback, details=lambda _: where)
    explained = explanation(manifest.to_json())
    status, message = ExitStatus.OK, None
    if file_problems:
        status, message = ExitStatus.BAD_INPUT, "files differ from the manifest: " + "; ".join(file_problems)
    elif manifest.gate_failed:
        status, message = ExitStatus.ACCURACY_FAILED, "this artifact FAILED its accuracy gate"
    elif manifest.inconclusive:
        status, message = (
            ExitStatus.INCONCLUSIVE,
            f"this artifact's accuracy is inconclusive: {manifest.accuracy.reason}",
        )
    if as_json:
        warnings = [f"{w['kind']}: {w['text']}" for w in explained.pop("warnings")]
        console.emit(envelope(status, artifact_dir=artifact, message=message, warnings=warnings, **explained))
    else:
        console.result(render(explained, artifact))
        if message:
            console.say(message, fg="yellow" if status == ExitStatus.INCONCLUSIVE else "red")
    if status:
        sys.exit(status)


def explanation(manifest: dict[str, Any]) -> dict[str, Any]:
    """Return what `explain` says about a manifest table, as JSON values."""
    return {
        "name": manifest["name"],
        "target": manifest["target"]["name"],
        "verdict": facts.verdict(manifest),
        "metrics": facts.metric_rows(manifest),
        "flipped": facts.flipped(manifest),
        "size_latency": facts.size_latency(manifest),
        "sensitivity": facts.sensitivity(manifest),
        "repair": facts.ladder(manifest),
        "per_class": facts.per_class(manifest),
        "warnings": facts.warnings(manifest),
    }


def render(found: dict[str, Any], artifact: Path) -> str:
    """Return the terminal text: verdict, metrics, sensitive layers, repair ladder, layers kept back, warnings."""
    said = found["verdict"]
    lines = [f"{found['name']} -> {found['target']}: {said['status'].upper()}", f"  {said['headline']}"]
    lines += [
        f"  gate      {r['rule']}: {_outcome(r['passed'])} (measured {_num(r['value'], 3)})" for r in said["rules"]
    ]
    lines.append(f"  checked   by the {'runtime' if said['mode'] == 'runtime' else 'PROXY'}: {said['checked_with']}")
    lines += _metrics(found["metrics"], found["flipped"])
    lines += _layers(found["sensitivity"])
    lines += _ladder(found["repair"])
    worst = (found["per_class"] or {}).get("worst")
    if worst and (worst.get("drop") or 0) > 0:
        lines.append(f"worst class {worst['label']}: drop {worst['drop']:.2f} points on {worst.get('samples')} samples")
    lines.append(f"warnings ({len(found['warnings'])})")
    lines += [f"  {w['kind']}: {w['text']}" for w in found["warnings"]] or ["  none"]
    lines.append(f"report    {artifact / 'report.html'} (with plots)")
    return "\n".join(lines)


def _metrics(rows: list[dict[str, Any]], flipped: dict[str, Any] | None) -> list[str]:
    lines = ["metrics   float -> artifact (95% interval)"]
    for r in rows:
        value = _num(r["artifact"], r["digits"], r["unit"])
        if r["float"] is not None:
            value = f"{_num(r['float'], r['digits'], r['unit'])} -> {value}, drop {_num(r['drop'], r['digits'])}"
        interval = f" [{r['interval'][0]:.2f}, {r['interval'][1]:.2f}] {r['interval_of']}" if r["interval"] else ""
        lines.append(f"  {r['label']:<30} {value}{interval}")
    if flipped is not None:
        listed = ", ".join(str(i) for i in flipped["indices"]) + (" ..." if flipped["more"] else "")
        lines.append(
            f"  flipped top-1: {flipped['flipped']} of {flipped['samples']}" + (f" ({listed})" if listed else "")
        )
    return lines


def _layers(found: dict[str, Any] | None) -> list[str]:
    if found is None:
        return ["sensitive layers: not diagnosed for this build"]
    seconds = f", {facts.duration(found['seconds'])}" if found["seconds"] is not None else ""
    samples = f", {found['samples']} samples" if found["samples"] else ""
    lines = [f"sensitive layers, most first (measured with {found['tool']}{samples}{seconds})"]
    if found["output_tool"]:
        lines.append(f"  output SQNR with the layer in float: {found['output_tool']}")
    lines.append(f"  {'module':<28} {'op':<10} {'own SQNR':>9} {'if float':>9}  runtime nodes")
    for layer in found["layers"][:LAYERS_SHOWN]:
        lines.append(
            f"  {layer['module']:<28} {layer['op']:<10} {_num(layer['sqnr_db'], 1):>9} "
            f"{_num(layer['output_sqnr_db_if_float'], 1):>9}  {', '.join(layer['native'])}"
        )
    hidden = len(found["layers"]) - LAYERS_SHOWN + found["more"]
    if hidden > 0:
        lines.append(f"  ... and {hidden} more (--json, report.html, manifest.json)")
    lines += [f"  note: {note}" for note in found["notes"]]
    return lines


def _ladder(found: dict[str, Any] | None) -> list[str]:
    if found is None:
        return ["repair: not recorded for this build"]
    state = "ran" if found["ran"] else ("enabled, not run" if found["enabled"] else "disabled")
    budget = ", ".join(f"{k} {v}" for k, v in found["budget"].items())
    lines = [f"repair    {state}, outcome: {found['outcome'] or 'none'}" + (f" (budget: {budget})" if budget else "")]
    if found["reason"]:
        lines.append(f"  why      {found['reason']}")
    keys = found["columns"]
    if found["steps"]:
        lines.append(
            f"    {'step':<28} " + " ".join(f"{k:>14}" for k in keys) + f" {'gate':>5} {'size':>9} {'latency':>9}"
        )
    for step in found["steps"]:
        mark = ">" if step["step"] == found["chosen"] else " "
        cells = " ".join(f"{_num(step['metrics'].get(k), 2):>14}" for k in keys)
        size = f"{step['artifact_bytes'] / 1e3:.1f} KB" if step["artifact_bytes"] else "-"
        lines.append(
            f"  {mark} {str(step['step']) + ': ' + step['name']:<28} {cells} {_outcome(step['gate_passed']):>5} "
            f"{size:>9} {_num(step['latency_ms'], 3, ' ms'):>9}  {step['change']}"
        )
    for kind, key in (("float", "float_layers"), ("16-bit", "int16_layers")):
        lines += [f"  in {kind:<6} {k['module']}: {k['why'] or 'no reason recorded'}" for k in found[key]]
    return lines


def _num(value: Any, digits: int, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value}{unit}" if isinstance(value, str) else f"{value:.{digits}f}{unit}"


def _outcome(passed: bool | None) -> str:
    return "n/a" if passed is None else "pass" if passed else "FAIL"
