"""The host executor: the request runs here, in the backend's own runner (what `verify` always did).

It exists so that the file protocol has a reference implementation next to the remote ones, and so
that a request can be checked without any emulator or board.
"""

from __future__ import annotations

import json
import platform as platform_module
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.backends.base import IoContract, TensorSpec
from edgekit.executors.base import Platform, RunReport
from edgekit.executors.request import RESULT, read_request

X86_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


class HostExecutor:
    """Run requests on this machine with the backend's runner."""

    name = "host"

    def platform(self) -> Platform:
        flags: set[str] = set()
        model = platform_module.processor()
        try:
            for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features") and not flags:
                    flags = set(value.split())
                elif key.strip() == "model name" and not model:
                    model = value.strip()
        except OSError:
            pass
        return Platform(
            executor="host",
            isa=platform_module.machine(),
            cpu=model or "unknown",
            emulated=False,
            features=tuple(f for f in X86_FEATURES if f in flags),
            system=platform_module.platform(),
        )

    def run(self, request: Path) -> RunReport:
        from edgekit.backends import get_backend

        table: dict[str, Any] = read_request(request)
        backend = get_backend(str(table["runtime"]))
        io = IoContract(inputs=_specs(table["inputs"]), outputs=_specs(table["outputs"]))
        runner = backend.open(request / str(table["artifact"]), io, backend.Options())
        failed: list[tuple[int, str]] = []
        for i in range(int(table["samples"])):
            sample = request / "samples" / str(i)
            try:
                got = runner.run({n: np.load(sample / "inputs" / f"{n}.npy") for n in io.input_names})
                (sample / "outputs").mkdir(exist_ok=True)
                for name in io.output_names:
                    np.save(sample / "outputs" / f"{name}.npy", np.ascontiguousarray(got[name]))
            except Exception as exc:  # reported per sample, like the remote runners do
                failed.append((i, f"{type(exc).__name__}: {exc}"))
        runtime, _, version = runner.checked_with.partition(" ")
        result = {
            "protocol": 1,
            "runner": "host",
            "runtime": runtime,
            "runtime_version": version,
            "failed": [{"sample": i, "error": why} for i, why in failed],
        }
        (request / RESULT).write_text(json.dumps(result), encoding="utf-8")
        return RunReport(
            runner="host",
            runtime=runtime,
            runtime_version=version,
            failed=tuple(failed),
        )


def _specs(table: list[dict[str, Any]]) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(name=t["name"], shape=tuple(t["shape"]), dtype=t["dtype"]) for t in table)
