"""Top operators by time, from each runtime's own profiler: ONNX Runtime profiling, ExecuTorch ETDump.

One module per runtime, chosen through an explicit, lazy registry keyed by the backend's name (the
manifest's `target.backend`). A runtime without a profiler here (Core ML, which has no runtime on
Linux at all) gets a `Profile` with `available=False` and the reason, never made-up figures.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

PROFILERS: dict[str, str] = {
    "onnxruntime": "edgekit.profiling.onnxruntime:profile",
    "executorch": "edgekit.profiling.executorch:profile",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class OpTime:
    """One operator (node) of the artifact and the time the runtime's profiler gave it, over the profiled runs."""

    name: str  # the runtime's node name ("node_Conv_27", "Convolution (NHWC, QC8) IGEMM #2")
    op_type: str  # the kernel or op kind ("QLinearConv", "Convolution (NHWC, QC8) IGEMM")
    median_ms: float  # per run: the median is robust to the spikes of a shared machine
    calls: int  # how many runs it was seen in
    share: float  # of the summed operator time per run, 0..1
    delegated: bool = False  # ran inside a delegate (XNNPACK) rather than the runtime's own kernels


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    """What the runtime's profiler measured: the top operators and the per-run total it recorded."""

    tool: str  # "onnxruntime profiling", "executorch etdump"
    available: bool
    reason: str = ""  # why there is no profile, when `available` is False
    runs: int = 0
    run_ms: float | None = None  # median per-run time the profiler recorded for the whole run
    ops: tuple[OpTime, ...] = ()  # slowest first, at most the `top` asked for
    op_count: int = 0  # operators seen in all, before cutting to `top`
    notes: tuple[str, ...] = ()


class Profiler(Protocol):
    def __call__(
        self, artifact: Path, feeds: Mapping[str, np.ndarray], options: Any, *, warmup: int, runs: int, top: int
    ) -> Profile: ...


def profile_artifact(
    backend: str, artifact: Path, feeds: Mapping[str, np.ndarray], options: Any, *, warmup: int, runs: int, top: int
) -> Profile:
    """Profile `artifact` (batch-1 `feeds`) with its runtime's own profiler; say why when there is none."""
    entry = PROFILERS.get(backend)
    if entry is None:
        return Profile(tool="none", available=False, reason=f"edgekit has no profiler for the {backend} runtime")
    module, _, name = entry.partition(":")
    profiler: Profiler = getattr(importlib.import_module(module), name)
    return profiler(artifact, feeds, options, warmup=warmup, runs=runs, top=top)


def rank(
    samples: Mapping[tuple[str, str, bool], Sequence[float]], runs: int, top: int
) -> tuple[tuple[OpTime, ...], int]:
    """Return the `top` operators by median time over their last `runs` samples (ms), and how many there were.

    `samples` maps (name, op type, delegated) to one time per execution, in order; the warm-up
    executions come first and are dropped by keeping the last `runs`.
    """
    medians = {
        key: (float(np.median(list(times)[-runs:])), min(len(times), runs)) for key, times in samples.items() if times
    }
    total = sum(median for median, _ in medians.values()) or 1.0
    ordered = sorted(medians.items(), key=lambda item: (-item[1][0], item[0][0]))
    ops = tuple(
        OpTime(name=name, op_type=op_type, median_ms=median, calls=calls, share=median / total, delegated=delegated)
        for (name, op_type, delegated), (median, calls) in ordered[:top]
    )
    return ops, len(medians)
