"""Host latency: several runners timed on one input, interleaved, after a warm-up."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np


def measure(
    runners: dict[str, Callable[[Any], object]], sample: Any, *, warmup: int, runs: int
) -> dict[str, dict[str, float]]:
    """Time each runner on `sample` in rounds (one call of each per round) and return ms statistics.

    Interleaving keeps a noisy, shared machine from favouring whichever runner went first.
    """
    for _ in range(warmup):
        for run in runners.values():
            run(sample)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(runs):
        for name, run in runners.items():
            start = time.perf_counter()
            run(sample)
            times[name].append((time.perf_counter() - start) * 1e3)
    return {
        name: {"median_ms": float(np.median(t)), "p90_ms": float(np.percentile(t, 90)), "runs": len(t)}
        for name, t in times.items()
    }
