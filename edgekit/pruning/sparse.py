"""Zero single weights (unstructured) or n of every m (n:m) by magnitude, for runtimes that store sparse.

The zeros are made in the PyTorch model, before conversion, so recovery can fine-tune the weights
that remain and the converted program carries exactly these zeros; the Core ML backend then stores
every weight tensor that has them in its sparse format. Masks are kept so recovery can hold the
zeros at zero.
"""

from __future__ import annotations

import torch
from torch import nn

from edgekit.pruning.counting import PRUNABLE

Masks = dict[str, torch.Tensor]  # layer name -> 1 where the weight stays, 0 where it is pruned


def eligible_layers(model: nn.Module, kept: list[str], min_elements: int) -> list[str]:
    """Return the conv/linear layers to sparsify: not kept, and with more than `min_elements` weights.

    Core ML leaves weights with `weight_threshold` elements or fewer dense, so sparsifying them would
    cost accuracy and save nothing.
    """
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, PRUNABLE) and name not in kept and m.weight.numel() > min_elements
    ]


def magnitude_masks(model: nn.Module, layers: list[str], ratio: float, global_pruning: bool) -> Masks:
    """Return masks that zero the `ratio` smallest-magnitude weights, per layer or over all `layers`."""
    modules = dict(model.named_modules())
    weights = {name: modules[name].weight.detach().abs() for name in layers}
    if global_pruning and weights:
        everything = torch.cat([w.flatten() for w in weights.values()])
        k = int(ratio * everything.numel())
        threshold = torch.kthvalue(everything, k).values if k > 0 else everything.min() - 1
        return {name: (w > threshold).float() for name, w in weights.items()}
    masks = {}
    for name, w in weights.items():
        k = int(ratio * w.numel())
        flat = torch.ones(w.numel())
        if k > 0:
            flat[torch.argsort(w.flatten())[:k]] = 0.0
        masks[name] = flat.reshape(w.shape)
    return masks


def n_of_m_masks(model: nn.Module, layers: list[str], n: int, m: int) -> Masks:
    """Return masks that zero the `n` smallest of every `m` consecutive input weights of each output."""
    modules = dict(model.named_modules())
    masks = {}
    for name in layers:
        w = modules[name].weight.detach().abs()
        rows = w.reshape(w.shape[0], -1)
        pad = (-rows.shape[1]) % m
        # A partial last group is padded with +inf so the real weights in it compete as usual.
        padded = torch.cat([rows, torch.full((rows.shape[0], pad), float("inf"))], dim=1) if pad else rows
        groups = padded.reshape(rows.shape[0], -1, m)
        mask = torch.ones_like(groups)
        mask.scatter_(2, torch.argsort(groups, dim=2)[..., :n], 0.0)
        masks[name] = mask.reshape(rows.shape[0], -1)[:, : rows.shape[1]].reshape(w.shape)
    return masks


def apply_masks(model: nn.Module, masks: Masks) -> None:
    """Multiply each masked layer's weight by its mask, in place."""
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, mask in masks.items():
            modules[name].weight.mul_(mask)
