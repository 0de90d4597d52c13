"""The benchmark models: one file or spec that both flows read, and the data split both flows use.

Random-init torchvision models get their BatchNorm running statistics re-estimated on random inputs
before they are saved with torch.export (the default statistics make MobileNet's activations vanish,
so int8 fidelity measured on them would mean nothing). No weights are downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "examples" / "digits"
ENCODER = ROOT / "examples" / "encoder" / "model.py"
TORCHVISION = ("mobilenet_v2", "resnet18", "mobilenet_v3_small")
ALL_MODELS = ("digits", *TORCHVISION, "encoder")
# Random-init models calibrate on synthetic inputs; edgekit caps calibration at half the samples, so
# 256 synthetic samples give 128 calibration + 128 evaluation inputs, the same 128 as digits calibrates on.
SYNTHETIC_SAMPLES = 256


@dataclass(frozen=True, slots=True, kw_only=True)
class Case:
    """One benchmark model: what edgekit is given, and what the reference flows load."""

    name: str
    edgekit_model: str  # a .pt2 path or a MODULE:FACTORY spec, as given to edgekit.build
    pt2: Path | None  # the same model as a torch.export file (None: built in code, see load_module)
    data: Path | None  # real data (.npz), or None for synthetic inputs
    overrides: tuple[str, ...] = ()
    kind: str = "cnn"  # "cnn" (static int8) or "sequence" (dynamic int8)
    notes: list[str] = field(default_factory=list)


def prepare(name: str, folder: Path) -> Case:
    """Make the model file for `name` under `folder` (once) and describe the case."""
    folder.mkdir(parents=True, exist_ok=True)
    if name == "digits":
        return Case(
            name=name, edgekit_model=str(DIGITS / "model.pt2"), pt2=DIGITS / "model.pt2", data=DIGITS / "data.npz"
        )
    synthetic = (f"data.synthetic_samples={SYNTHETIC_SAMPLES}",)
    if name == "encoder":
        return Case(
            name=name, edgekit_model=f"{ENCODER}:build", pt2=None, data=None, overrides=synthetic, kind="sequence"
        )
    if name not in TORCHVISION:
        raise SystemExit(f"unknown model '{name}'; known: {', '.join(ALL_MODELS)}")
    path = folder / f"{name}.pt2"
    if not path.exists():
        save_torchvision(name, path)
    return Case(name=name, edgekit_model=str(path), pt2=path, data=None, overrides=synthetic)


def save_torchvision(name: str, path: Path, *, batches: int = 8, batch_size: int = 16) -> None:
    """Build a random-init torchvision model, re-estimate BatchNorm statistics, torch.export.save it."""
    import torch
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the passes below
    model.train()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(batch_size, 3, 224, 224, generator=generator))
    model.eval()
    example = torch.randn(1, 3, 224, 224, generator=generator)
    torch.export.save(torch.export.export(model, (example,)), str(path))


def load_module(case: Case) -> Any:
    """Return the float model (eval mode) the reference flows start from."""
    import torch

    if case.pt2 is not None:
        return torch.export.load(str(case.pt2)).module()
    from edgekit.modelio import load_model

    return load_model(case.edgekit_model).module


def example_input(case: Case) -> np.ndarray:
    import torch

    if case.pt2 is not None:
        return torch.export.load(str(case.pt2)).example_inputs[0][0].numpy()
    return load_module(case).example_input().numpy()


def split(case: Case, target: str, extra: tuple[str, ...] = ()) -> Any:
    """Return the edgekit Dataset (calibration + evaluation) that edgekit itself builds for this case.

    It calls edgekit's own resolver and splitter with the same recipe, so both flows calibrate on
    the same samples and are judged on the same held-out inputs.
    """
    from edgekit.api import resolve
    from edgekit.data import load_data

    recipe = resolve(target, None, (*case.overrides, *extra)).recipe
    data = load_data(case.data, recipe.data, recipe.preprocessing, {"input": example_input(case)})
    # Every benchmark model takes one input: hand the reference flows plain arrays.
    return Split(
        calibration=data.calibration["input"],
        evaluation=data.evaluation["input"],
        evaluation_labels=data.evaluation_labels,
    )


@dataclass(frozen=True, slots=True)
class Split:
    """The calibration and evaluation samples of a one-input model, as edgekit splits them."""

    calibration: np.ndarray
    evaluation: np.ndarray
    evaluation_labels: np.ndarray | None


def float_outputs(case: Case, inputs: np.ndarray) -> np.ndarray:
    """Run the float model eagerly, one sample at a time."""
    from edgekit.modelio import run_torch

    return run_torch(load_module(case), inputs)
