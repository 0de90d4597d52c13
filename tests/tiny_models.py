"""Tiny seeded models built in code, for fast tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekit.backends.base import Backend, Compiled, IoContract, Runner, TensorSpec


class TinyCNN(nn.Module):
    """conv-bn-relu-maxpool twice, then a linear head: the shape of an ordinary image classifier."""

    def __init__(self, classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def tiny_cnn(seed: int = 0) -> TinyCNN:
    """Return a seeded TinyCNN (input 1x1x8x8) with warmed-up BatchNorm statistics."""
    torch.manual_seed(seed)
    model = TinyCNN()
    model.train()
    with torch.no_grad():  # realistic running statistics, so int8 numerics mean something
        model(torch.randn(64, 1, 8, 8))
    return model.eval()


def tiny_encoder() -> nn.Module:
    """Return a small seeded transformer encoder taking int64 token ids of shape (1, 16)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "examples" / "encoder" / "model.py"
    spec = importlib.util.spec_from_file_location("_edgekit_example_encoder", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.build(vocab=100, dim=32, layers=1, heads=2, seq_len=16)


def torch_outputs(model: nn.Module, inputs: np.ndarray) -> np.ndarray:
    """Return the float model's outputs on `inputs`, one sample at a time (as the artifacts run)."""
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(inputs[i : i + 1])).numpy() for i in range(len(inputs))])


@dataclass(frozen=True, slots=True, kw_only=True)
class TinyBuild:
    """One backend's `compile()` result with the values needed to open and run what it made."""

    backend: Backend
    io: IoContract
    options: Any
    compiled: Compiled

    def open(self, artifact: Path | None = None) -> Runner:
        """Open the artifact (or another file of this build, e.g. the float reference) in the backend."""
        return self.backend.open(artifact or self.compiled.artifact, self.io, self.options)

    def run(self, inputs: np.ndarray, artifact: Path | None = None) -> np.ndarray:
        """Run a batch of inputs through the artifact and return its first output."""
        return self.open(artifact).run({self.io.input_names[0]: inputs})[self.io.output_names[0]]


def compile_tiny(
    backend_name: str,
    model: nn.Module,
    example: np.ndarray,
    calibration: np.ndarray,
    scheme: str,
    workdir: Path,
    *,
    quantize: dict[str, Any] | None = None,
    sparse_weights: bool = False,
    metadata: dict[str, Any] | None = None,
    **options: Any,
) -> TinyBuild:
    """Compile `model` with one backend as the compile stage would: one input named "input", one output "output".

    `options` are the backend's `[options]` as a target file spells them (strings for enums), over its defaults;
    `quantize` holds further `[quantize]` keys besides the scheme.
    """
    from edgekit.backends import get_backend
    from edgekit.recipe import QuantizeConfig, parse_table

    backend = get_backend(backend_name)
    parsed = parse_table(backend.Options, options, "options", what="option")
    config = parse_table(QuantizeConfig, {"scheme": scheme, **(quantize or {})}, "quantize")
    with torch.no_grad():
        output = model(torch.from_numpy(example))
    io = IoContract(
        inputs=(TensorSpec(name="input", shape=tuple(example.shape), dtype=str(example.dtype)),),
        outputs=(TensorSpec(name="output", shape=tuple(output.shape), dtype="float32"),),
    )
    compiled = backend.compile(
        model,
        io,
        {"input": example},
        {"input": calibration},
        config,
        parsed,
        workdir,
        sparse_weights=sparse_weights,
        metadata=metadata,
    )
    return TinyBuild(backend=backend, io=io, options=parsed, compiled=compiled)
