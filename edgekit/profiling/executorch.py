"""ExecuTorch's own profiler: an ETDump from the pybind runtime, read with `executorch.devtools.Inspector`.

The pip wheel's `portable_lib` is built with ETDump and with XNNPACK's per-operator profiling, so
the trace names each operator inside the XNNPACK delegate ("Convolution (NHWC, QC8) IGEMM #2") as
well as the runtime's own kernels. `DELEGATE_CALL` wraps the delegated operators and
`Method::execute` wraps the whole run: they are totals, not operators.
"""

from __future__ import annotations

import re
import tempfile
import warnings
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import first_line
from edgekit.profiling import Profile, rank

TOOL = "executorch etdump"
RUN_EVENT = "Method::execute"
WRAPPER_EVENTS = ("DELEGATE_CALL", "OPERATOR_CALL")
INSTANCE = re.compile(r"\s+#\d+$")  # XNNPACK numbers each instance of an operator: "... IGEMM #2"


def profile(
    artifact: Path, feeds: Mapping[str, np.ndarray], options: Any, *, warmup: int, runs: int, top: int
) -> Profile:
    """Run the .pte's `forward` warmup + runs times with ETDump on, and rank its events."""
    import torch
    from executorch.extension.pybindings.portable_lib import _load_for_executorch

    module = _load_for_executorch(str(artifact), enable_etdump=True)
    if not module.has_etdump():
        return Profile(tool=TOOL, available=False, reason="this executorch runtime was built without ETDump")
    args = [torch.from_numpy(np.ascontiguousarray(array)) for array in feeds.values()]
    for _ in range(warmup + runs):
        module.forward(args)
    with tempfile.TemporaryDirectory(prefix="edgekit-etdump-") as scratch:
        etdump = Path(scratch) / "run.etdp"
        module.write_etdump_result_to_file(str(etdump), str(Path(scratch) / "debug.bin"))
        try:
            from executorch.devtools import Inspector

            with warnings.catch_warnings():  # "Output Buffer not found": no tensor data was asked for
                warnings.simplefilter("ignore")
                inspector = Inspector(etdump_path=str(etdump))
            events = [event for block in inspector.event_blocks for event in block.events]
        except Exception as exc:  # Inspector failing to read a trace is a devtools problem, not the artifact's
            return Profile(tool=TOOL, available=False, reason=f"executorch.devtools could not read the ETDump: "
                           f"{first_line(exc)}")  # fmt: skip
    return rank_events([(e.name, bool(e.is_delegated_op), _times(e)) for e in events], runs=runs, top=top)


def rank_events(events: list[tuple[str, bool, list[float]]], *, runs: int, top: int) -> Profile:
    """Return the top operators from (name, delegated, times in ms per execution) of an ETDump's events."""
    samples: dict[tuple[str, str, bool], list[float]] = defaultdict(list)
    totals: list[float] = []
    delegated_seen = any(delegated for _, delegated, _ in events)
    for name, delegated, times in events:
        if name == RUN_EVENT:
            totals += times
        elif name in WRAPPER_EVENTS and delegated_seen:
            continue  # the operators inside it are listed one by one
        elif name.startswith(("Method::", "Program::")):
            continue  # loading and init, not a run
        else:
            samples[(name, INSTANCE.sub("", name), delegated)] += times
    if not samples:
        return Profile(tool=TOOL, available=False, reason="the ETDump holds no operator events")
    ops, count = rank(samples, runs, top)
    notes = () if delegated_seen else ("no per-operator events from the delegate: DELEGATE_CALL is its total",)
    run_ms = float(np.median(totals[-runs:])) if totals else None
    return Profile(tool=TOOL, available=True, runs=runs, run_ms=run_ms, ops=ops, op_count=count, notes=notes)


def _times(event: Any) -> list[float]:
    perf = getattr(event, "perf_data", None)
    return [float(t) for t in perf.raw] if perf is not None else []
