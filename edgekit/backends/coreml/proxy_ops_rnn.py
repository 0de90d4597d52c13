"""Stand-in kernels for the recurrent MIL ops `lstm` and `rnn` (coremltools 9.0, iOS15/iOS17 definitions).

Layouts, as `coremltools/converters/mil/mil/ops/defs/iOS15/recurrent.py` defines them and the torch
frontend (`frontend/torch/ops.py`, `_add_mil_lstm`) fills them:

* `x` is [seq, batch, input]; the converter transposes batch_first inputs first.
* LSTM gates are stacked input, forget, output, cell ("ifoz"); PyTorch stacks input, forget, cell,
  output, and the converter reorders them (`_ifzo_to_ifoz`). `bias` is b_ih + b_hh.
* `initial_h` / `initial_c` are [batch, directions * hidden], forward half first.
* "bidirectional" returns the backward outputs aligned with the input steps (as PyTorch does), and its
  single-step output is [last forward step, first backward step]. A lone "reverse" op returns its
  outputs in processing order instead: coremltools' own op tests (`ops/tests/iOS14/test_recurrent.py`)
  compare it with PyTorch run on the flipped sequence, not flipped back.
* Peepholes act on c(t-1) for the input and forget gates and on c(t) for the output gate; `clip`
  bounds the cell state, again as those tests compute it.

GRUs arrive from PyTorch as a `while_loop` (the MIL `gru` puts the reset gate before the recurrent
matmul, unlike PyTorch), which the runner executes; the `gru` op itself is not emitted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from edgekit.backends.coreml.proxy_ops_base import Kernel, param

Activation = Callable[[torch.Tensor], torch.Tensor]


def _hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(0.2 * x + 0.5, 0.0, 1.0)


# The recurrent ops take activations by name, with their default parameters (scaled_tanh: 1 * tanh(1 * x)).
_ACTIVATIONS: dict[str, Activation] = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "scaled_tanh": torch.tanh,
    "relu": torch.relu,
    "linear": lambda x: x,
    "hard_sigmoid": _hard_sigmoid,
    "sigmoid_hard": _hard_sigmoid,
}


def _activation(a: dict[str, Any], op: Any, name: str, default: str) -> Activation:
    return _ACTIVATIONS[str(param(a, op, name, default)).lower()]


def _lstm_steps(
    x: torch.Tensor,
    state: tuple[torch.Tensor, torch.Tensor],
    weights: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None],
    activations: tuple[Activation, Activation, Activation],
    clip: float | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run one direction over x [seq, batch, input]; return every h [seq, batch, hidden], last h, last c."""
    (h, c), (w_ih, w_hh, bias, peephole) = state, weights
    gate, cell, output = activations
    hidden = w_hh.shape[1]
    projected = x @ w_ih.T + (bias if bias is not None else 0.0)
    p_i, p_f, p_o = peephole.split(hidden) if peephole is not None else (0.0, 0.0, 0.0)
    steps = []
    for t in range(x.shape[0]):
        i, f, o, z = (projected[t] + h @ w_hh.T).split(hidden, dim=-1)  # MIL order: i, f, o, z
        c_new = gate(f + c * p_f) * c + gate(i + c * p_i) * cell(z)
        c = c_new.clamp(-clip, clip) if clip is not None else c_new
        h = gate(o + c * p_o) * output(c)
        steps.append(h)
    return torch.stack(steps), h, c


def _lstm(a: dict[str, Any], op: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x, h0, c0 = a["x"], a["initial_h"], a["initial_c"]
    direction = str(param(a, op, "direction", "forward"))
    sequence = bool(param(a, op, "output_sequence", False))
    activations = (
        _activation(a, op, "recurrent_activation", "sigmoid"),
        _activation(a, op, "cell_activation", "tanh"),
        _activation(a, op, "activation", "tanh"),
    )
    clip = param(a, op, "clip")
    clip = float(clip) if clip is not None else None
    hidden = a["weight_hh"].shape[1]
    forward = (a["weight_ih"], a["weight_hh"], a.get("bias"), a.get("peephole"))
    if direction == "bidirectional":
        backward = (a["weight_ih_back"], a["weight_hh_back"], a.get("bias_back"), a.get("peephole_back"))
        y_f, h_f, c_f = _lstm_steps(x, (h0[:, :hidden], c0[:, :hidden]), forward, activations, clip)
        y_b, h_b, c_b = _lstm_steps(x.flip(0), (h0[:, hidden:], c0[:, hidden:]), backward, activations, clip)
        y_b = y_b.flip(0)  # aligned with the input steps
        y = torch.cat([y_f, y_b], dim=-1) if sequence else torch.cat([y_f[-1:], y_b[:1]], dim=-1)
        return y, torch.cat([h_f, h_b], dim=-1), torch.cat([c_f, c_b], dim=-1)
    y, h, c = _lstm_steps(x.flip(0) if direction == "reverse" else x, (h0, c0), forward, activations, clip)
    return (y if sequence else y[-1:]), h, c


def _rnn(a: dict[str, Any], op: Any) -> tuple[torch.Tensor, torch.Tensor]:
    x, h = a["x"], a["initial_h"]
    if str(param(a, op, "direction", "forward")) == "reverse":
        x = x.flip(0)  # outputs in processing order, as for a lone reverse lstm
    activation = _activation(a, op, "activation", "tanh")
    w_ih, w_hh, bias = a["weight_ih"], a["weight_hh"], a.get("bias")
    projected = x @ w_ih.T + (bias if bias is not None else 0.0)
    steps = []
    for t in range(x.shape[0]):
        h = activation(projected[t] + h @ w_hh.T)
        steps.append(h)
    y = torch.stack(steps)
    return (y if bool(param(a, op, "output_sequence", False)) else y[-1:]), h


OPS: dict[str, Kernel] = {"lstm": _lstm, "rnn": _rnn}
