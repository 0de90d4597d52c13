"""The digits CNN: a small classifier of 8x8 grayscale digits (scikit-learn's load_digits).

`build()` is the factory edgekit loads with `examples/digits/model.py:build --weights weights.pt`
(needed for structured pruning, which works on the Python modules); `model.pt2` is the same model
saved with torch.export for everything else.
"""

from __future__ import annotations

import torch
from torch import nn


class DigitsCNN(nn.Module):
    def __init__(self, width: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1),
            nn.BatchNorm2d(4 * width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(4 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))

    def example_input(self) -> torch.Tensor:
        return torch.zeros(1, 1, 8, 8)


def build() -> DigitsCNN:
    """Return an untrained DigitsCNN in eval mode (load weights.pt into it)."""
    return DigitsCNN().eval()
