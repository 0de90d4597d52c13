"""Train the digits CNN on scikit-learn's load_digits (seeded, a few seconds) and write the example.

Writes, next to this file: model.pt2 (torch.export), weights.pt (state dict), data.npz (the held-out
split: `inputs` preprocessed float32 (N,1,8,8), `labels`, `label_names`, `preprocessing` as JSON,
and `pixels`, the raw uint8 images an app would start from).

    python examples/digits/train.py
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits

HERE = Path(__file__).resolve().parent
PREPROCESSING = {
    "layout": "NCHW",
    "color": "grayscale",
    "resize": [8, 8],
    "scale": 1 / 255,
    "mean": [0.5],
    "std": [0.5],
}
HELD_OUT = 600


def preprocess(pixels: np.ndarray) -> np.ndarray:
    """uint8 (N, 8, 8) -> float32 (N, 1, 8, 8): (x * scale - mean) / std, as the manifest says."""
    x = pixels.astype(np.float32) * np.float32(PREPROCESSING["scale"])
    return ((x - 0.5) / 0.5)[:, None, :, :].astype(np.float32)


def main() -> None:
    torch.manual_seed(0)
    digits = load_digits()
    pixels = np.clip(np.round(digits.images * 255.0 / 16.0), 0, 255).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(labels))
    held, train = order[:HELD_OUT], order[HELD_OUT:]

    spec = importlib.util.spec_from_file_location("digits_model", HERE / "model.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    model = module.build()

    x, y = torch.from_numpy(preprocess(pixels[train])), torch.from_numpy(labels[train])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _epoch in range(30):
        for batch in torch.randperm(len(x)).split(64):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
    model.eval()

    held_inputs = preprocess(pixels[held])
    with torch.no_grad():
        accuracy = (model(torch.from_numpy(held_inputs)).argmax(1).numpy() == labels[held]).mean()
    print(f"float accuracy on the {HELD_OUT} held-out digits: {100 * accuracy:.2f}%")

    torch.save(model.state_dict(), HERE / "weights.pt")
    torch.export.save(torch.export.export(model, (torch.from_numpy(held_inputs[:1]),)), HERE / "model.pt2")
    np.savez_compressed(
        HERE / "data.npz",
        inputs=held_inputs,
        labels=labels[held],
        label_names=np.array([str(d) for d in range(10)]),
        preprocessing=np.array(json.dumps(PREPROCESSING)),
        pixels=pixels[held],
    )


if __name__ == "__main__":
    main()
