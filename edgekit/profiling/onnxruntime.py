"""ONNX Runtime's own profiler: `SessionOptions.enable_profiling`, then the JSON trace it writes, per node."""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.profiling import Profile, rank

TOOL = "onnxruntime profiling"
SUFFIX = "_kernel_time"  # ORT names each node event "<node name>_kernel_time"


def profile(
    artifact: Path, feeds: Mapping[str, np.ndarray], options: Any, *, warmup: int, runs: int, top: int
) -> Profile:
    """Run `artifact` warmup + runs times in a profiling session (same threads and provider as `open()`)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="edgekit-ort-profile-") as scratch:
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = min(options.threads, os.cpu_count() or 1)
        session_options.inter_op_num_threads = 1
        session_options.enable_profiling = True
        session_options.profile_file_prefix = str(Path(scratch) / "ort")
        session = ort.InferenceSession(str(artifact), session_options, providers=[options.execution_provider.value])
        for _ in range(warmup + runs):
            session.run(None, dict(feeds))
        trace = json.loads(Path(session.end_profiling()).read_text(encoding="utf-8"))
    return parse_trace(trace, runs=runs, top=top)


def parse_trace(trace: list[dict[str, Any]], *, runs: int, top: int) -> Profile:
    """Return the top nodes of an ORT profiling trace (events in microseconds), from its last `runs` runs."""
    nodes: dict[tuple[str, str, bool], list[float]] = defaultdict(list)
    totals: list[float] = []
    for event in trace:
        if event.get("cat") == "Node" and event.get("name", "").endswith(SUFFIX):
            name = event["name"][: -len(SUFFIX)]
            nodes[(name, event.get("args", {}).get("op_name", "?"), False)].append(event["dur"] / 1e3)
        elif event.get("cat") == "Session" and event.get("name") == "model_run":
            totals.append(event["dur"] / 1e3)
    if not nodes:
        return Profile(tool=TOOL, available=False, reason="the ONNX Runtime trace holds no node events")
    ops, count = rank(nodes, runs, top)
    run_ms = float(np.median(totals[-runs:])) if totals else None
    return Profile(tool=TOOL, available=True, runs=runs, run_ms=run_ms, ops=ops, op_count=count)
