"""A small BERT-style sentence encoder (token embedding, self-attention, layer norm), built in code.

Use it as `edgekit build --target android examples/encoder/model.py:build --recipe android-int8-dynamic`.
Its input is int64 token ids of shape (1, seq_len); its output is a mean-pooled sentence embedding.
"""

from __future__ import annotations

import torch
from torch import nn


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attention = torch.softmax(q @ k.transpose(-2, -1) / (d // self.heads) ** 0.5, dim=-1)
        x = self.norm1(x + self.proj((attention @ v).transpose(1, 2).reshape(b, t, d)))
        return self.norm2(x + self.ff(x))


class SentenceEncoder(nn.Module):
    def __init__(self, vocab: int, dim: int, layers: int, heads: int, seq_len: int) -> None:
        super().__init__()
        self.seq_len = seq_len
        self.vocab = vocab
        self.tokens = nn.Embedding(vocab, dim)
        self.positions = nn.Parameter(torch.randn(1, seq_len, dim) * 0.02)
        self.layers = nn.Sequential(*[EncoderLayer(dim, heads) for _ in range(layers)])

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self.layers(self.tokens(token_ids) + self.positions).mean(dim=1)

    def example_input(self) -> torch.Tensor:
        """Token ids that edgekit uses to trace the model when no input shape is given."""
        return torch.randint(0, self.vocab, (1, self.seq_len), generator=torch.Generator().manual_seed(0))


def build(vocab: int = 1000, dim: int = 128, layers: int = 2, heads: int = 4, seq_len: int = 32) -> SentenceEncoder:
    """Return a seeded random-init encoder (weights are random; it is a shape and speed example)."""
    torch.manual_seed(0)
    return SentenceEncoder(vocab, dim, layers, heads, seq_len).eval()
