"""The request folder every executor speaks: files in, files out, nothing else shared.

    <request>/request.json                    protocol, artifact file name, runtime, inputs and outputs
                                              (name, dtype, shape, in order), sample count, threads
    <request>/<artifact>                      model.onnx, model.pte
    <request>/samples/<i>/inputs/<name>.npy   one file per named input of sample i
    <request>/samples/<i>/outputs/<name>.npy  written by the runner, one per named output
    <request>/result.json                     written by the runner: runtime, version, failed samples

The runners on the other side (`remote/run_onnx.py`, `examples/android/cpp/run_pte.cpp`) read and
write exactly this, with only their runtime and numpy (or a few lines of C++) at hand.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from edgekit.backends.base import IoContract
from edgekit.errors import InputError
from edgekit.executors.base import RunReport

PROTOCOL = 1
REQUEST = "request.json"
RESULT = "result.json"

Sample = Mapping[str, "Path | np.ndarray"]  # input name -> an .npy file or an array


def write_request(
    folder: Path, artifact: Path, runtime: str, io: IoContract, samples: Sequence[Sample], *, threads: int = 1
) -> Path:
    """Write a request for `artifact` on `samples` (each: every named input) into `folder`; return it."""
    folder.mkdir(parents=True, exist_ok=True)
    if artifact.is_dir():
        shutil.copytree(artifact, folder / artifact.name)
    else:
        shutil.copyfile(artifact, folder / artifact.name)
    for i, sample in enumerate(samples):
        inputs = folder / "samples" / str(i) / "inputs"
        inputs.mkdir(parents=True)
        for spec in io.inputs:
            value = sample[spec.name]
            if isinstance(value, Path):
                shutil.copyfile(value, inputs / f"{spec.name}.npy")
            else:
                np.save(inputs / f"{spec.name}.npy", np.ascontiguousarray(value, dtype=spec.dtype))
    request = {
        "protocol": PROTOCOL,
        "artifact": artifact.name,
        "runtime": runtime,
        "inputs": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape)} for t in io.inputs],
        "outputs": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape)} for t in io.outputs],
        "samples": len(samples),
        "threads": threads,
    }
    (folder / REQUEST).write_text(json.dumps(request, indent=2) + "\n", encoding="utf-8")
    return folder


def read_request(folder: Path) -> dict[str, object]:
    """Return the parsed request.json of `folder`."""
    table = json.loads((folder / REQUEST).read_text(encoding="utf-8"))
    if not isinstance(table, dict) or table.get("protocol") != PROTOCOL:
        raise InputError(f"{folder / REQUEST} is not an edgekit request (protocol {PROTOCOL})")
    return table


def read_result(folder: Path, where: str) -> RunReport:
    """Return what the runner reported; raise InputError when it wrote nothing (it did not start)."""
    path = folder / RESULT
    if not path.is_file():
        raise InputError(f"the runner on {where} wrote no {RESULT}: it did not start")
    table = json.loads(path.read_text(encoding="utf-8"))
    return RunReport(
        runner=str(table.get("runner", "")),
        runtime=str(table.get("runtime", "")),
        runtime_version=str(table.get("runtime_version", "")),
        failed=tuple((int(f["sample"]), str(f["error"])) for f in table.get("failed", [])),
        error=str(table.get("error", "")),
    )


def read_outputs(folder: Path, io: IoContract, count: int) -> list[dict[str, np.ndarray] | None]:
    """Return every sample's named outputs, or None for a sample whose outputs are missing."""
    found: list[dict[str, np.ndarray] | None] = []
    for i in range(count):
        outputs = folder / "samples" / str(i) / "outputs"
        paths = {name: outputs / f"{name}.npy" for name in io.output_names}
        found.append({n: np.load(p) for n, p in paths.items()} if all(p.is_file() for p in paths.values()) else None)
    return found
