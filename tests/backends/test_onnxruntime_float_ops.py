"""ONNX Runtime: what the quantizer leaves in float (an LSTM) is counted, with its weight bytes, in the facts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from tests.tiny_models import compile_tiny


class TaggedSequence(nn.Module):
    """A Linear embedding, a bidirectional LSTM and a Linear head: the LSTM's weights are most of it."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(8, 16)
        self.lstm = nn.LSTM(16, 32, batch_first=True, bidirectional=True)
        self.head = nn.Linear(64, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embed(x))
        return self.head(out)


def test_an_lstm_left_in_float_is_counted_with_its_weight_bytes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TaggedSequence().eval()
    rng = np.random.default_rng(0)
    example = rng.standard_normal((1, 12, 8)).astype(np.float32)
    calibration = rng.standard_normal((8, 12, 8)).astype(np.float32)

    facts = compile_tiny("onnxruntime", model, example, calibration, "int8-static", tmp_path).compiled.facts["quantize"]

    assert facts["float_ops"].get("LSTM") == 1
    lstm = model.lstm
    lstm_bytes = 4 * sum(p.numel() for p in lstm.parameters())  # W, R and B (B holds b_ih and b_hh)
    assert facts["float_weight_bytes"]["LSTM"] == lstm_bytes
    assert sum(facts["quantized_ops"].values()) >= 2  # the two Linears are int8
    assert "MatMul" not in facts["float_weight_bytes"] and "Gemm" not in facts["float_weight_bytes"]
