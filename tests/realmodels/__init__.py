"""Real models with real weights from pip packages (silero-vad, easyocr), built for every target."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType


def load_example(path: Path) -> ModuleType:
    """Import an example script (examples/ is not a package) by its path."""
    spec = importlib.util.spec_from_file_location(f"_example_{path.parent.name}_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
