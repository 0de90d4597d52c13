"""LSTMs lowered for ExecuTorch as a scan loop: the same numbers as torch, one cell instead of one per step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgekit.backends._executorch_lower import load_method, lower_to_pte
from edgekit.backends._executorch_lstm import LSTM_AS_SCAN
from edgekit.rewrites import applied_rewrites, apply


class Recurrent(nn.Module):
    """An LSTM followed by a Linear, returning every output and the final state."""

    def __init__(self, *, given_state: bool = False, **lstm: object) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size=6, hidden_size=5, **lstm)  # type: ignore[arg-type]
        self.head = nn.Linear(10 if lstm.get("bidirectional") else 5, 3)
        self.given_state = given_state

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        state = None
        if self.given_state:
            layers = self.lstm.num_layers * (2 if self.lstm.bidirectional else 1)
            shape = (layers, x.shape[0 if self.lstm.batch_first else 1], 5)
            state = (torch.full(shape, 0.3), torch.full(shape, -0.2))
        out, (h, c) = self.lstm(x, state)
        return self.head(out), h, c


VARIANTS = {
    "one direction": {},
    "bidirectional, batch first": {"bidirectional": True, "batch_first": True},
    "two layers, no bias": {"num_layers": 2, "bias": False},
    "two bidirectional layers, given state": {"num_layers": 2, "bidirectional": True, "given_state": True},
}


def _program(model: nn.Module, x: torch.Tensor) -> torch.export.ExportedProgram:
    return torch.export.export(model.eval(), (x,))


@pytest.mark.parametrize("variant", VARIANTS, ids=list(VARIANTS))
def test_lstm_as_scan_computes_what_torch_computes(variant: str) -> None:
    torch.manual_seed(0)
    model = Recurrent(**VARIANTS[variant])  # type: ignore[arg-type]
    x = torch.randn(2, 7, 6) if model.lstm.batch_first else torch.randn(7, 2, 6)
    program = _program(model, x)

    rewritten = apply(program, (LSTM_AS_SCAN,))

    assert [a["name"] for a in rewritten.applied] == ["lstm_as_scan"]
    targets = {n.target for n in rewritten.program.graph.nodes if n.op == "call_function"}
    assert torch.ops.aten.lstm.input not in targets and torch.ops.higher_order.scan in targets
    for got, want in zip(rewritten.program.module()(x), model(x), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_a_model_without_lstm_is_left_alone() -> None:
    program = _program(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), torch.randn(1, 4))

    assert apply(program, (LSTM_AS_SCAN,)).program is program


def test_an_lstm_lowers_to_a_small_pte_that_matches_torch_over_a_long_sequence(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Recurrent(bidirectional=True, batch_first=True).eval()
    x = torch.randn(1, 200, 6)  # unrolled, 200 steps x 2 directions of cells would take minutes to lower
    program = _program(model, x)

    facts = lower_to_pte(program, tmp_path / "model.pte")

    assert facts["portable_ops"].get("scan") == 2  # one loop per direction, not 400 cells
    assert [r["name"] for r in applied_rewrites(program)] == ["lstm_as_scan"]  # reported in the build facts
    got = load_method(tmp_path / "model.pte").execute([x])
    for have, want in zip(got, model(x), strict=True):
        np.testing.assert_allclose(have.numpy(), want.detach().numpy(), rtol=1e-4, atol=1e-4)
