"""Tiny seeded models built in code, for fast tests."""

from __future__ import annotations

import torch
from torch import nn


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
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "encoder" / "model.py"
    spec = importlib.util.spec_from_file_location("_edgekit_example_encoder", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.build(vocab=100, dim=32, layers=1, heads=2, seq_len=16)
