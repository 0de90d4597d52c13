"""LSTMs as a loop for ExecuTorch: each `aten.lstm` node of a program becomes one cell in a `torch.scan` over time.

ExecuTorch has no LSTM kernel, so `to_edge` decomposes `aten.lstm` into one copy of the cell per time
step and direction. easyocr's recognizer (two bidirectional LSTMs over 63 steps) became ~3,600 nodes
cut into 132 XNNPACK partitions, and lowering it took ~390 s, twice per build (float reference and
artifact); the same cells written without the ops that break partitions still took 260 s, since exir
passes cost per node. A scan keeps one copy of the cell, which ExecuTorch's emitter turns into a loop
of jump instructions (`exir/emit/_emitter.py`, `_emit_scan`), so the program stays as small as the
model: the recognizer lowers in ~20 s. The input projection of every step is one Linear over the whole
sequence, outside the loop, where XNNPACK takes it; the recurrent matmul and the gates run in the loop
on the CPU kernels.

The rewrite runs just before lowering (`_executorch_lower.lower_to_pte`), after quantization: PT2E
would otherwise observe inside the loop and quantize the cell state to int8 on every step, where
today the LSTM stays float, as it does in the float graph.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import fx
from torch._higher_order_ops.scan import scan  # torch 2.14 has no public torch.scan

from edgekit.rewrites._graph import Rewrite

Carry = tuple[torch.Tensor, torch.Tensor]


def lstm_as_scan(
    input: torch.Tensor,  # noqa: A002 - aten.lstm.input's own argument names
    hx: Sequence[torch.Tensor],
    params: Sequence[torch.Tensor],
    has_biases: bool,
    num_layers: int,
    dropout: float,
    train: bool,
    bidirectional: bool,
    batch_first: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Compute `aten.lstm.input` (inference: no dropout) with one cell per layer and direction in a scan.

    Returns (output, h_n, c_n) as aten.lstm does. `params` holds, per layer and direction, w_ih, w_hh
    and (with biases) b_ih, b_hh.
    """
    directions = 2 if bidirectional else 1
    stride = 4 if has_biases else 2
    unbatched = input.dim() == 2
    sequence = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if batch_first else input)  # (T, B, F)
    h0, c0 = (hx[0].unsqueeze(1), hx[1].unsqueeze(1)) if unbatched else (hx[0], hx[1])
    finals_h: list[torch.Tensor] = []
    finals_c: list[torch.Tensor] = []
    for layer in range(num_layers):
        outputs = []
        for direction in range(directions):
            index = layer * directions + direction
            weights = params[index * stride : (index + 1) * stride]
            bias = weights[2] + weights[3] if has_biases else None
            # two tensors: a scan's carries must not alias each other or its inputs
            start = (h0[index].clone(), c0[index].clone())
            (h, c), out = _direction(sequence, start, weights[0], weights[1], bias, reverse=bool(direction))
            outputs.append(out)
            finals_h.append(h)
            finals_c.append(c)
        sequence = torch.cat(outputs, dim=2) if directions == 2 else outputs[0]
    output = sequence.squeeze(1) if unbatched else (sequence.transpose(0, 1) if batch_first else sequence)
    h_n, c_n = torch.stack(finals_h), torch.stack(finals_c)
    return (output, h_n.squeeze(1), c_n.squeeze(1)) if unbatched else (output, h_n, c_n)


def _direction(
    sequence: torch.Tensor,
    start: Carry,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    reverse: bool,
) -> tuple[Carry, torch.Tensor]:
    """Run one LSTM direction over `sequence` (T, B, F); return the final (h, c) and every h (T, B, H)."""
    projected = torch.nn.functional.linear(sequence, w_ih, bias)  # every step's input part of the gates at once

    def cell(state: Carry, gates_in: torch.Tensor) -> tuple[Carry, torch.Tensor]:
        h, c = state
        i, f, g, o = (gates_in + torch.nn.functional.linear(h, w_hh)).chunk(4, dim=1)  # torch's gate order
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return (h, c), h.clone()  # scan refuses an output that aliases the carry

    final, outputs = scan(cell, start, projected, dim=0, reverse=reverse)
    return final, outputs


def _is_lstm(node: fx.Node) -> bool:
    return node.target is torch.ops.aten.lstm.input


def _replace(module: fx.GraphModule, node: fx.Node) -> fx.Node | None:
    """Call `lstm_as_scan` with the node's own arguments; leave projected LSTMs (proj_size) alone."""
    _, hx, params, has_biases, num_layers, _, _, bidirectional, _ = node.args
    if not isinstance(hx, list | tuple) or not isinstance(params, list | tuple) or not isinstance(num_layers, int):
        return None
    cells = num_layers * (2 if bidirectional else 1)
    if len(hx) != 2 or len(params) != cells * (4 if has_biases else 2):
        return None
    return module.graph.call_function(lstm_as_scan, node.args, node.kwargs)


LSTM_AS_SCAN = Rewrite(
    name="lstm_as_scan",
    why="ExecuTorch has no LSTM kernel and unrolls aten.lstm once per time step (a large, slow-to-lower "
    "program): one cell per layer and direction in a torch.scan loop instead",
    matches=_is_lstm,
    replace=_replace,
)
