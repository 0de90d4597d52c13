"""`edgekit doctor`: installed packages against the tested set, and what each bundled target still needs."""

from __future__ import annotations

import dataclasses
import sys

import click

from edgekit.commands.output import Console, call, envelope
from edgekit.environment import Diagnosis


@click.command()
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
@click.option("--traceback", is_flag=True, help="show the full error chain")
def doctor(as_json: bool, traceback: bool) -> None:
    """Check installed packages against the tested set, and what each bundled target needs.

    The packages: torch, executorch, torchao, coremltools, onnx, onnxruntime, onnxscript and
    torch-pruning, none of which is imported. Exits 0 when every target has what it needs (other
    versions than the tested ones are warnings), 4 when a target lacks a package; the table is
    printed either way.
    """
    from edgekit import api

    console = Console(as_json=as_json)
    found = call(api.doctor, console, traceback=traceback)
    status = found.exit_status
    if as_json:
        fields = dataclasses.asdict(found)
        missing = [t.name for t in found.targets if not t.ready]
        message = f"targets that cannot build here: {', '.join(missing)}" if missing else None
        hint = next((t.hint for t in found.targets if t.hint), None)
        console.emit(envelope(status, warnings=found.warnings, message=message, hint=hint, **fields))
    else:
        console.result(render(found))
        for warning in found.warnings:
            console.say(f"warning: {warning}", fg="yellow")
    if status:
        sys.exit(status)


def render(found: Diagnosis) -> str:
    lines = [f"edgekit {found.edgekit}, Python {found.python} on {found.platform}", ""]
    lines.append(f"{'package':<14} {'installed':<14} {'tested':<10} status")
    for p in found.packages:
        lines.append(f"{p.name:<14} {p.installed or '-':<14} {p.tested:<10} {p.status}")
    lines += ["", f"{'target':<8} {'backend':<12} {'extra':<10} status"]
    for t in (*found.targets, *found.features):
        extra = f"[{t.extra}]" if t.extra else ""
        state = "ready" if t.ready else f"missing {', '.join(t.missing)}: {t.hint}".rstrip(": ")
        note = f" ({t.note})" if t.note else ""
        kind = "(feature)" if t.backend == "feature" else t.backend
        lines.append(f"{t.name:<8} {kind:<12} {extra:<10} {state}{note}")
    return "\n".join(lines)
