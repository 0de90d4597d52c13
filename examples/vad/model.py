"""silero-vad's shipped TorchScript model, with its streaming state as inputs and outputs.

The `silero-vad` package ships `silero_vad/data/silero_vad.jit`. Its top-level module keeps its
state in attributes that forward() reassigns: `self._state` (the LSTM's h and c, (2, 1, 128)) and
`self._context` (the last 64 samples of the previous chunk, prepended to the next one). An exported
artifact cannot keep attributes between calls, so this module moves exactly that bookkeeping into
arguments: (chunk, lstm_state, context) -> {prob, new_lstm_state, new_context}. The network itself
is the shipped TorchScript submodule for the sample rate (`_model` for 16 kHz, `_model_8k` for 8 kHz),
called as is. Three things are adapted, each because a tool refuses the model otherwise:

- `torch.jit.freeze` turns the TorchScript weights into constants: torch.export refuses them as they
  are, tensors that are not `nn.Parameter`s ("State dict entry for parameter ... is not an instance
  of torch.nn.Parameter").
- The state goes in and out batch first, (1, 2, 128): edgekit takes axis 0 of every input as the
  sample axis, and silero's (2, 1, 128) has its batch on axis 1. It is called `lstm_state`, not
  `state`, because coremltools renames an input called `state` (a reserved word in its MIL) to
  `state_workaround`.
- The STFT basis gets ordinary strides (see `StreamingVAD.__init__`).

    edgekit build --target rpi examples/vad/model.py:build --data DATA/audio.npz \
        --recipe examples/vad/recipe.toml --metric examples/vad/metrics.py:decision_agreement
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

# Per sample rate: (samples per chunk, samples of context from the previous chunk), as silero_vad's
# own streaming code has them (VADRNNJITMerge.forward; sequence_vad.RATE_CONFIG).
RATES = {16000: (512, 64), 8000: (256, 32)}
STATE_SHAPE = (1, 2, 128)  # batch, (h, c), hidden: silero's (2, 1, 128) with the batch axis first


def shipped_torchscript() -> Path:
    """Return the path of the TorchScript model inside the installed silero-vad package.

    The package is found, not imported: `import silero_vad` calls torch.set_num_threads(1) for the
    whole process (silero_vad/model.py), which would change every later build's timings.
    """
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("silero-vad is not installed: pip install silero-vad")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.jit"


class StreamingVAD(nn.Module):
    """silero-vad's per-rate networks, with the state its top-level module hides made explicit."""

    def __init__(self, scripted: torch.jit.ScriptModule) -> None:
        super().__init__()
        scripted.eval()
        for rate in (scripted._model, scripted._model_8k):
            # The shipped STFT basis, (258, 1, 256), has stride 0 on its size-1 axis; ExecuTorch refuses any
            # tensor with a 0 stride ("0 in strides is not supported for ExecuTorch") once int8 weights are
            # folded. Same values, ordinary strides.
            basis = rate.stft.forward_basis_buffer
            rate.stft.forward_basis_buffer = torch.empty(basis.shape, dtype=basis.dtype).copy_(basis)
        # optimize_numerics=False: freeze only, no conv/bn folding that could change the numbers.
        self.model_16k = torch.jit.freeze(scripted._model, optimize_numerics=False)
        self.model_8k = torch.jit.freeze(scripted._model_8k, optimize_numerics=False)

    def forward(
        self, chunk: torch.Tensor, lstm_state: torch.Tensor, context: torch.Tensor, sr: int = 16000
    ) -> dict[str, torch.Tensor]:
        """Score one chunk (1, 512 at 16 kHz) given the previous chunk's state and context."""
        x = torch.cat([context, chunk], dim=1)  # what VADRNNJITMerge.forward does with self._context
        prob, new_state = (self.model_16k if sr == 16000 else self.model_8k)(x, lstm_state.transpose(0, 1))
        return {"prob": prob, "new_lstm_state": new_state.transpose(0, 1), "new_context": x[:, -RATES[sr][1] :]}

    def example_input(self, sr: int = 16000) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A silent first chunk with silero's initial (zero) state and context.

        edgekit calls it without arguments, so builds are 16 kHz; an 8 kHz build would need
        `sr=8000` here as well as in `[model] constants`.
        """
        chunk, context = RATES[sr]
        return torch.zeros(1, chunk), torch.zeros(STATE_SHAPE), torch.zeros(1, context)


def build() -> StreamingVAD:
    """Load the TorchScript model shipped in the silero-vad package (no download) and expose its state."""
    return StreamingVAD(torch.jit.load(str(shipped_torchscript()), map_location="cpu")).eval()
