"""Benchmark an artifact in its runtime: latency, peak memory, the float comparison, and a per-operator profile.

Latency: one batch-1 sample (the artifact's first golden input, else zeros of the contract's shape),
`warmup` calls, then the median and 90th percentile of `runs` timed calls, through the same runner
`edgekit run` and the build's latency check use.

Peak memory: the growth of the process's resident set while the artifact is opened and run. On
Linux the kernel keeps the peak (VmHWM in /proc/self/status) and lets a process reset it (writing
5 to /proc/self/clear_refs). The runtime is imported and the artifact opened once before measuring,
so the figure holds what the artifact costs (program, weights, arenas, threads), not the runtime's
own import; freed heap is handed back (malloc_trim) first.

Float: the package stage keeps only the artifact, not the float reference it was compared with, and
rebuilding one is a build. So the float comparison comes from the manifest: the float reference and
the artifact timed interleaved, in the same runtime, on the build host (`FloatComparison.source`).
"""

from __future__ import annotations

import contextlib
import gc
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.errors import MissingDependencyError, UsageError

if TYPE_CHECKING:
    from edgekit.artifacts import OpenArtifact
    from edgekit.manifest import Manifest
    from edgekit.profiling import Profile

MEMORY_METHOD = (
    "peak resident set (VmHWM) minus the resident set before opening, from /proc/self/status, with the peak reset "
    "through /proc/self/clear_refs after the runtime was imported"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Latency:
    """Milliseconds per batch-1 call on this host."""

    median_ms: float
    p90_ms: float
    runs: int
    warmup: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Memory:
    """How much the resident set grew while the artifact was opened and run; None when it could not be measured."""

    peak_growth_bytes: int | None
    before_bytes: int | None
    method: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FloatComparison:
    """The artifact against the float reference in the same runtime, and where the figures come from."""

    source: str  # "manifest": timed interleaved at build time; "none": not measured
    note: str
    float_median_ms: float | None = None
    artifact_median_ms: float | None = None  # the artifact at build time, beside the float reference
    artifact_over_float: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchResult:
    """What `edgekit.bench` measured for one artifact folder."""

    artifact: Path  # the folder
    file: str  # model.onnx, model.pte
    target: str
    runtime: str  # what ran it, with its version
    sample: str  # which input was timed
    latency: Latency
    memory: Memory
    vs_float: FloatComparison
    profile: Profile | None = None
    warnings: tuple[str, ...] = ()


def bench_artifact(
    folder: Path, *, runs: int = 100, warmup: int = 10, profile: bool = False, top: int = 10
) -> BenchResult:
    """Time and measure `folder`'s artifact in its runtime; with `profile`, also rank its operators.

    Raises UsageError (exit 2) for counts out of range, InputError (exit 5) when a file differs from
    the manifest, MissingDependencyError (exit 4) when this host has no runtime for it (Core ML off
    macOS: its stand-in's speed says nothing about the device).
    """
    from edgekit import latency
    from edgekit.artifacts import open_artifact

    for name, value, least in (("runs", runs, 1), ("warmup", warmup, 0), ("top", top, 1)):
        if value < least:
            raise UsageError(f"{name} must be at least {least}, got {value}")
    first = open_artifact(folder)
    manifest, runner = first.manifest, first.runner
    if runner.mode != "runtime":
        raise MissingDependencyError(
            f"cannot benchmark {manifest.artifact.file} on this host: {_first_clause(runner.reason)}; only a "
            "host-side stand-in runs it here, and its speed says nothing about the device",
            hint="run edgekit bench where the runtime is (macOS for Core ML)",
        )
    feeds, sample = bench_inputs(folder, manifest)
    runner.run(feeds)  # lazy initialisation belongs to neither figure
    del first, runner
    before, opened = _opened_fresh(folder)
    timed = latency.measure({"artifact": opened.runner.run}, feeds, warmup=warmup, runs=runs)["artifact"]
    memory = _memory(before)
    found = None
    if profile:
        found = _profile(opened, feeds, warmup=warmup, runs=runs, top=top)
    return BenchResult(
        artifact=folder,
        file=manifest.artifact.file,
        target=manifest.target.name,
        runtime=opened.runner.checked_with,
        sample=sample,
        latency=Latency(median_ms=timed["median_ms"], p90_ms=timed["p90_ms"], runs=runs, warmup=warmup),
        memory=memory,
        vs_float=float_comparison(manifest),
        profile=found,
        warnings=opened.warnings,
    )


def bench_inputs(folder: Path, manifest: Manifest) -> tuple[dict[str, np.ndarray], str]:
    """Return one batch-1 sample to time: the first golden input, else zeros of the contract's shapes."""
    if manifest.golden.samples:
        paths = manifest.golden.samples[0]["inputs"]
        arrays = {name: np.load(folder / paths[name], allow_pickle=False)[:1] for name in paths}
        return arrays, "golden sample 0"
    zeros = {t.name: np.zeros((1, *t.shape[1:]), dtype=t.dtype) for t in manifest.io.inputs}
    return zeros, "zeros (the artifact has no golden sample)"


def float_comparison(manifest: Manifest) -> FloatComparison:
    """Return the build's interleaved float-vs-artifact timing from the manifest, or say why there is none."""
    measured = manifest.latency or {}
    if not measured.get("measured"):
        reason = measured.get("reason") or "latency was not measured at build time"
        return FloatComparison(source="none", note=f"no float comparison: {reason}")
    return FloatComparison(
        source="manifest",
        note="the float reference is not kept in the artifact folder; these are the build's figures: float and "
        f"artifact timed interleaved, in the same runtime, on the build host ({manifest.toolchain.get('host', '?')})",
        float_median_ms=measured.get("float", {}).get("median_ms"),
        artifact_median_ms=measured.get("artifact", {}).get("median_ms"),
        artifact_over_float=measured.get("artifact_over_float"),
    )


def _first_clause(reason: str) -> str:
    return reason.split(";")[0].strip() or "its runtime is not on this host"


def _opened_fresh(folder: Path) -> tuple[int | None, OpenArtifact]:
    """Free what is freed, note the resident set, reset the peak, and open the artifact again."""
    from edgekit.artifacts import open_artifact

    gc.collect()
    _trim_heap()
    before = _resident("VmRSS") if _reset_peak() else None
    return before, open_artifact(folder)


def _memory(before: int | None) -> Memory:
    peak = _resident("VmHWM")
    if before is None or peak is None:
        return Memory(peak_growth_bytes=None, before_bytes=None, method="not measured: needs Linux /proc/self")
    return Memory(peak_growth_bytes=max(peak - before, 0), before_bytes=before, method=MEMORY_METHOD)


def _profile(opened: OpenArtifact, feeds: dict[str, np.ndarray], *, warmup: int, runs: int, top: int) -> Profile:
    from edgekit.backends import get_backend
    from edgekit.profiling import profile_artifact
    from edgekit.recipe import parse_table

    manifest = opened.manifest
    backend = get_backend(manifest.target.backend)
    options: Any = parse_table(backend.Options, manifest.runtime.get("options", {}), "runtime.options", what="option")
    artifact = opened.folder / manifest.artifact.file
    return profile_artifact(backend.name, artifact, feeds, options, warmup=warmup, runs=runs, top=top)


def _resident(field: str) -> int | None:
    """Return a /proc/self/status size field (VmRSS, VmHWM) in bytes, or None off Linux."""
    try:
        status = Path("/proc/self/status").read_text(encoding="ascii")
    except OSError:
        return None
    found = re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) * 1024 if found else None


def _reset_peak() -> bool:
    """Reset the kernel's record of this process's peak resident set (Linux >= 4.0); False when it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5", encoding="ascii")
    except OSError:
        return False
    return True


def _trim_heap() -> None:
    """Hand freed heap pages back to the kernel (glibc), so that they are not reused unseen by the next opening."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
