"""`edgekit run DIR --input x.npz`: run an artifact in its runtime on named inputs; summarize or save the outputs."""

from __future__ import annotations

import sys
from contextlib import redirect_stdout
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from edgekit.commands.output import Console, JsonCommand, call, envelope

if TYPE_CHECKING:
    import numpy as np

    from edgekit.artifacts import OpenArtifact

TOP = 5  # classes shown per sample for an output of class scores
SHOWN = 3  # samples shown per output on a terminal (the JSON object holds up to JSON_SAMPLES)
JSON_SAMPLES = 10


@click.command(cls=JsonCommand)
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option(
    "--input",
    "-i",
    "inputs",
    required=True,
    type=click.Path(path_type=Path),
    help=".npz with one array per input name (or `inputs` for a one-input model), samples along the first axis",
)
@click.option("--out", "-o", type=click.Path(path_type=Path), help="also save every output, by name, to this .npz")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
@click.option("--verbose", "-v", is_flag=True, help="show what the runtime prints, live (else: a log)")
@click.option("--traceback", is_flag=True, help="show the full error chain")
def run(artifact: Path, inputs: Path, out: Path | None, as_json: bool, verbose: bool, traceback: bool) -> None:
    """Run ARTIFACT (a folder) in its runtime on named inputs and summarize each output.

    Core ML artifacts run in Core ML on macOS and in the labelled host-side proxy elsewhere. A
    missing, extra or mis-shaped input array is exit 5 and names it; a runtime version other than the
    build's is a warning. What the runtime prints goes to ~/.cache/edgekit/logs/run-NAME.log unless
    --verbose.
    """
    from edgekit.commands.session import log_path, terminal_streams

    log = None if verbose else log_path(f"run-{artifact.resolve().name}")
    with terminal_streams(log) as terminal:
        console = Console(as_json=as_json, out=terminal[0], err=terminal[1], log=log)
        with redirect_stdout(sys.stderr):  # what a runtime prints must not mix with the result
            opened, outputs = call(partial(_execute, artifact, inputs), console, traceback=traceback,
                                   details=lambda _: {"artifact_dir": artifact})  # fmt: skip
        report(console, artifact, opened, outputs, out)


def _execute(artifact: Path, inputs: Path) -> tuple[OpenArtifact, dict[str, np.ndarray]]:
    from edgekit import api

    opened = api.open_artifact(artifact)
    return opened, opened.run(inputs)


def report(
    console: Console, artifact: Path, opened: OpenArtifact, outputs: dict[str, np.ndarray], out: Path | None
) -> None:
    """Print the warnings, the summary of each output (or the JSON object), and save the outputs when asked."""
    where = {"artifact_dir": artifact}
    for warning in opened.warnings:
        console.say(f"warning: {warning}", fg="yellow")
    runner = opened.runner
    if runner.mode == "proxy":
        console.say(f"warning: these outputs come from a stand-in, not the runtime: {runner.reason}", fg="yellow")
    saved = call(partial(save_outputs, outputs, out), console, details=lambda _: where) if out else None
    summary = summarize_outputs(outputs, opened.manifest.io.labels)
    samples = min((len(a) for a in outputs.values()), default=0)
    if console.as_json:
        for entry in summary.values():
            entry["top5"] = entry["top5"][:JSON_SAMPLES]  # the first samples' only: --out holds every value
        fields: dict[str, Any] = {"mode": runner.mode, "checked_with": runner.checked_with, "reason": runner.reason}
        fields |= {"samples": samples, "outputs": summary, "saved": saved}
        console.emit(envelope(0, artifact_dir=artifact, warnings=opened.warnings, **fields))
        return
    console.say(f"edgekit: ran {artifact} on {samples} samples with {runner.checked_with}")
    console.result(render_outputs(summary))
    if saved:
        console.say(f"edgekit: saved {len(outputs)} outputs to {saved}")


def save_outputs(outputs: dict[str, np.ndarray], path: Path) -> str:
    """Save every output under its name to an .npz file (numpy.savez) and return its path."""
    import numpy as np

    path = path if path.suffix == ".npz" else path.with_name(path.name + ".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    save: Any = np.savez  # numpy's stub reads a keyword as its allow_pickle flag
    save(path, **outputs)
    return str(path)


def summarize_outputs(outputs: dict[str, np.ndarray], labels: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Return shape, dtype and value range of each output, and the top-5 classes per sample for class scores."""
    import numpy as np

    summary: dict[str, dict[str, Any]] = {}
    for name, array in outputs.items():
        entry: dict[str, Any] = {"shape": list(array.shape), "dtype": str(array.dtype), "top5": []}
        if array.size and np.issubdtype(array.dtype, np.number):
            entry["min"], entry["max"] = float(array.min()), float(array.max())
        if array.ndim == 2 and array.shape[1] >= 2 and np.issubdtype(array.dtype, np.floating):
            names = labels if len(labels) == array.shape[1] else tuple(str(i) for i in range(array.shape[1]))
            for scores in array:
                best = np.argsort(-scores, kind="stable")[:TOP]
                entry["top5"].append([{"class": int(i), "label": names[i], "score": float(scores[i])} for i in best])
        summary[name] = entry
    return summary


def render_outputs(summary: dict[str, dict[str, Any]]) -> str:
    lines = []
    for name, entry in summary.items():
        shape = "(" + ", ".join(str(n) for n in entry["shape"]) + ")"
        span = f"  range [{entry['min']:.4g}, {entry['max']:.4g}]" if "min" in entry else ""
        lines.append(f"{name}  {entry['dtype']} {shape}{span}")
        for index, top in enumerate(entry["top5"][:SHOWN]):
            best = "  ".join(f"{c['label']} {c['score']:.3f}" for c in top)
            lines.append(f"  sample {index}  top-{len(top)}: {best}")
        if len(entry["top5"]) > SHOWN:
            more = len(entry["top5"]) - SHOWN
            lines.append(f"  ... {more} more sample{'s' if more > 1 else ''} (--out saves every output)")
    return "\n".join(lines)
