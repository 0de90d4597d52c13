"""Core ML: inputs and outputs named like words of MIL (`state`, `tensor`) build, and keep the user's names."""

from __future__ import annotations

import json
from pathlib import Path

import coremltools as ct
import numpy as np
import pytest
import torch
from torch import nn

from edgekit.backends import IoContract, TensorSpec, get_backend
from edgekit.backends.coreml.convert import feature_name
from edgekit.recipe import QuantizeConfig, Scheme


class Cell(nn.Module):
    """A recurrent cell whose state input is called `state` and whose first output is called `tensor`."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.input, self.recurrent = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        new = torch.tanh(self.input(x) + self.recurrent(state))
        return new * 2, new


@pytest.mark.parametrize(
    ("name", "feature"),
    [
        ("state", "state_"),
        ("tensor", "tensor_"),
        ("int32", "int32_"),
        ("x", "x"),
        ("audio-in", "audio_in"),
        ("1x", "_1x"),
    ],
)
def test_feature_names_avoid_mil_words_and_odd_characters(name: str, feature: str) -> None:
    assert feature_name(name) == feature


def test_a_model_with_an_input_called_state_builds_and_runs_under_its_own_names(tmp_path: Path) -> None:
    backend = get_backend("coreml")
    io = IoContract(
        inputs=tuple(TensorSpec(name=n, shape=(1, 8), dtype="float32") for n in ("x", "state")),
        outputs=tuple(TensorSpec(name=n, shape=(1, 8), dtype="float32") for n in ("tensor", "new_state")),
    )
    rng = np.random.default_rng(0)
    feeds = {name: rng.standard_normal((16, 8)).astype(np.float32) for name in ("x", "state")}
    model = Cell().eval()

    compiled = backend.compile(
        model, io, {k: v[:1] for k, v in feeds.items()}, feeds, QuantizeConfig(scheme=Scheme.FP16),
        backend.Options(), tmp_path,
    )  # fmt: skip
    outputs = backend.open(compiled.artifact, io, backend.Options()).run(feeds)

    spec = ct.utils.load_spec(str(compiled.artifact))
    assert [f.name for f in spec.description.input] == ["x", "state_"]
    assert [f.name for f in spec.description.output] == ["tensor_", "new_state"]
    renamed = json.loads(spec.description.metadata.userDefined["edgekit.feature_names"])
    assert renamed == {"state": "state_", "tensor": "tensor_"}
    with torch.no_grad():
        want = model(torch.from_numpy(feeds["x"]), torch.from_numpy(feeds["state"]))
    for name, expected in zip(("tensor", "new_state"), want, strict=True):
        np.testing.assert_allclose(outputs[name], expected.numpy(), atol=2e-2)
