"""A torchvision CNN for the aarch64 tests: random-init mobilenet_v3_small at 96x96 with re-estimated BatchNorm.

Random-init BatchNorm keeps running statistics (0, 1) that make the activations vanish, so the
statistics are re-estimated on crops of scikit-learn's two sample photos (weights unchanged): the int8
numerics then mean something. No weights are downloaded.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

SIZE = 96
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(1, 3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(1, 3, 1, 1)


def photo_crops(count: int, seed: int, size: int = SIZE) -> np.ndarray:
    """Return `count` normalised NCHW float32 crops of scikit-learn's sample photos."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(count):
        photo = photos[i % len(photos)]
        scale = int(rng.integers(size, min(photo.shape[:2]) // 2))
        top = int(rng.integers(0, photo.shape[0] - scale))
        left = int(rng.integers(0, photo.shape[1] - scale))
        patch = photo[top : top + scale, left : left + scale]
        rows = np.linspace(0, scale - 1, size).astype(int)  # nearest-neighbour resize: no image library needed
        crops.append(patch[rows][:, rows].transpose(2, 0, 1))
    images = np.stack(crops).astype(np.float32) / 255.0
    return ((images - MEAN) / STD).astype(np.float32)


def mobilenet_v3_small_96() -> nn.Module:
    """Return a seeded mobilenet_v3_small (10 classes) with BatchNorm statistics re-estimated on photo crops."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small(num_classes=10)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average over every batch below
    for layer in model.classifier:
        if isinstance(layer, nn.Linear):
            layer.reset_parameters()  # torchvision's N(0, 0.01) head gives logits ~0.02: int8 noise would swamp them
    model.train()
    with torch.no_grad():
        for batch in np.array_split(photo_crops(64, seed=1), 4):
            model(torch.from_numpy(batch))
    return model.eval()
