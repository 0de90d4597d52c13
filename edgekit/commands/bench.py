"""`edgekit bench DIR [--profile]`: latency, peak memory and the float comparison of an artifact in its runtime."""

from __future__ import annotations

import dataclasses
import sys
from contextlib import redirect_stdout
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import click

from edgekit.commands.output import Console, JsonCommand, call, envelope

if TYPE_CHECKING:
    from edgekit.benchmark import BenchResult
    from edgekit.profiling import Profile


@click.command(cls=JsonCommand)
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--runs", "-n", default=100, show_default=True, type=click.IntRange(min=1), help="timed calls")
@click.option("--warmup", default=10, show_default=True, type=click.IntRange(min=0), help="calls before timing")
@click.option("--profile", is_flag=True, help="also rank operators by time with the runtime's own profiler")
@click.option("--top", default=10, show_default=True, type=click.IntRange(min=1), help="operators shown by --profile")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
@click.option("--verbose", "-v", is_flag=True, help="show what the runtime prints, live (else: a log)")
@click.option("--traceback", is_flag=True, help="show the full error chain")
def bench(
    artifact: Path, runs: int, warmup: int, profile: bool, top: int, as_json: bool, verbose: bool, traceback: bool
) -> None:
    """Time ARTIFACT (a folder) in its runtime on this host: median and p90 latency, peak memory, vs float.

    One batch-1 sample (the first golden input) is run WARMUP times, then RUNS times timed. Peak
    memory is the growth of the resident set while the artifact is opened and run (Linux VmHWM). The
    float comparison is the build's (float and artifact timed interleaved, recorded in the manifest):
    the float reference is not kept in the folder. --profile ranks operators with ONNX Runtime's
    profiler or ExecuTorch's ETDump. Exit 4 when this host has no runtime for the artifact (Core ML
    off macOS), 5 when a file differs from the manifest.
    """
    from edgekit import api
    from edgekit.commands.session import log_path, terminal_streams

    log = None if verbose else log_path(f"bench-{artifact.resolve().name}")
    with terminal_streams(log) as terminal:
        console = Console(as_json=as_json, out=terminal[0], err=terminal[1], log=log)
        with redirect_stdout(sys.stderr):  # what a runtime prints must not mix with the result
            action = partial(api.bench, artifact, runs=runs, warmup=warmup, profile=profile, top=top)
            found = call(action, console, traceback=traceback, details=lambda _: {"artifact_dir": artifact})
        for warning in found.warnings:
            console.say(f"warning: {warning}", fg="yellow")
        if found.profile is not None and not found.profile.available:
            console.say(f"warning: no profile: {found.profile.reason}", fg="yellow")
        if as_json:
            fields = {k: v for k, v in dataclasses.asdict(found).items() if k not in ("artifact", "warnings")}
            console.emit(envelope(0, artifact_dir=artifact, warnings=found.warnings, **fields))
        else:
            console.result(render_bench(found))


def render_bench(found: BenchResult) -> str:
    lat, mem, vs = found.latency, found.memory, found.vs_float
    lines = [
        f"artifact   {found.artifact / found.file}  ({found.target}, {found.runtime}, {found.sample}, batch 1)",
        f"latency    median {lat.median_ms:.4f} ms  p90 {lat.p90_ms:.4f} ms  ({lat.runs} runs after {lat.warmup} "
        "warm-up, this host)",
    ]
    if mem.peak_growth_bytes is None:
        lines.append(f"memory     {mem.method}")
    else:
        lines.append(f"memory     peak +{mem.peak_growth_bytes / 1e6:.2f} MB resident while opening and running")
        lines.append(f"  how      {mem.method}")
    if vs.artifact_over_float is None:
        lines.append(f"vs float   {vs.note}")
    else:
        lines.append(
            f"vs float   {vs.artifact_over_float:.2f}x float latency at build time (float {vs.float_median_ms:.4f} ms, "
            f"artifact {vs.artifact_median_ms:.4f} ms)"
        )
        lines.append(f"  source   {vs.note}")
    if found.profile is not None:
        lines += render_profile(found.profile)
    return "\n".join(lines)


def render_profile(profile: Profile) -> list[str]:
    if not profile.available:
        return [f"profile    none: {profile.reason}"]
    run = f", {profile.run_ms:.4f} ms per run as profiled" if profile.run_ms is not None else ""
    lines = [f"profile    {profile.tool}, {profile.runs} runs{run}; top {len(profile.ops)} of {profile.op_count} ops"]
    width = max((len(op.op_type) for op in profile.ops), default=0)
    for op in profile.ops:
        where = " (delegated)" if op.delegated else ""
        lines.append(f"  {op.share:6.1%}  {op.median_ms:8.4f} ms  {op.op_type:<{width}}  {op.name}{where}")
    lines += [f"  note     {note}" for note in profile.notes]
    return lines
