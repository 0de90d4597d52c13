"""Load artifacts in their runtimes in this process, run them on the same inputs, time them interleaved.

The benchmark's own instrument: it does not use edgekit's runners or latency code, so edgekit is not
graded by itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ORT_THREADS = 2  # fixed for every ONNX Runtime session (this machine has 2 cores)

Run = Callable[[np.ndarray], np.ndarray]


def runner(path: Path) -> Run:
    """Return fn(one-sample batch) -> output for a .pte or .onnx file."""
    if path.suffix == ".onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = ORT_THREADS
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]
    if path.suffix == ".pte":
        import torch
        from executorch.runtime import Runtime

        method = Runtime.get().load_program(path).load_method("forward")  # runtime default threads
        return lambda x: method.execute([torch.from_numpy(x)])[0].numpy()
    raise ValueError(f"no host runtime for {path.name}")


def outputs(run: Run, inputs: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [np.asarray(run(np.ascontiguousarray(inputs[i : i + 1])), dtype=np.float32) for i in range(len(inputs))]
    )


def fidelity(reference: np.ndarray, test: np.ndarray, labels: np.ndarray | None) -> dict[str, float]:
    """SQNR (dB) and top-1 agreement against the float model; top-1 accuracy when labels exist."""
    ref, out = reference.astype(np.float64).reshape(len(reference), -1), test.astype(np.float64).reshape(len(test), -1)
    noise = np.linalg.norm(ref - out)
    found = {
        "sqnr_db": float("inf") if noise == 0 else float(20 * np.log10(np.linalg.norm(ref) / noise)),
        "top1_agreement": float(100 * np.mean(ref.argmax(1) == out.argmax(1))),
    }
    if labels is not None:
        found["top1"] = float(100 * np.mean(out.argmax(1) == labels))
    return found


def latency(runs: dict[str, Run], sample: np.ndarray, *, warmup: int, rounds: int) -> dict[str, dict[str, float]]:
    """Time each runner `rounds` times on `sample`, alternating which goes first each round."""
    names = list(runs)
    for _ in range(warmup):
        for name in names:
            runs[name](sample)
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(rounds):
        for name in names if i % 2 == 0 else reversed(names):
            start = time.perf_counter()
            runs[name](sample)
            times[name].append((time.perf_counter() - start) * 1e3)
    return {
        n: {"median_ms": float(np.median(t)), "p90_ms": float(np.percentile(t, 90)), "runs": len(t)}
        for n, t in times.items()
    }


def size_bytes(path: Path) -> int:
    """Bytes of a file, or of every file under a folder (.mlpackage)."""
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
