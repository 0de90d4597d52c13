"""The toolchain versions edgekit was tested with. torch, executorch, torchao and coremltools move in
lock-step: a build on another combination still runs, but its manifest says it is untested."""

from __future__ import annotations

TESTED = {
    "torch": "2.14.1",
    "executorch": "1.5.1",
    "torchao": "0.18.0",
    "coremltools": "9.0",
    "onnx": "1.23.2",
    "onnxruntime": "1.32.0",
    "onnxscript": "0.7.2",
    "torch-pruning": "1.6.1",
}


def untested_versions(found: dict[str, str]) -> list[str]:
    """Return a warning line for each installed package whose version differs from the tested one."""
    return [
        (
            f"{name} {version} is installed but edgekit was tested with {TESTED[name]}: results may differ (pip "
            "install 'edgekit-deploy[all]' restores the tested set)"
        )
        for name, version in found.items()
        if name in TESTED and version != TESTED[name]
    ]
