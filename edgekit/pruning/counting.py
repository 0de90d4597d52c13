"""Measure a model for the manifest: parameters, MACs, channels per layer, weight sparsity."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def params_and_macs(model: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """Return (parameters, MACs) for one forward pass on `example` (torch-pruning's op counter)."""
    import torch_pruning as tp

    macs, params = tp.utils.count_ops_and_params(model, example)
    return int(params), int(macs)


def channels(model: nn.Module) -> dict[str, list[int]]:
    """Return {layer name: [in, out]} channel counts for every conv and linear layer."""
    found: dict[str, list[int]] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            found[name] = [module.in_features, module.out_features]
        elif isinstance(module, PRUNABLE):
            found[name] = [int(module.in_channels), int(module.out_channels)]  # type: ignore[arg-type]
    return found


def channel_changes(before: dict[str, list[int]], after: dict[str, list[int]]) -> dict[str, str]:
    """Return a compact {layer: "in->in', out->out'"} for the layers whose channels changed."""
    changes = {}
    for name, (cin, cout) in before.items():
        new = after.get(name)
        if new is None:
            changes[name] = "removed"
        elif new != [cin, cout]:
            changes[name] = f"in {cin}->{new[0]}, out {cout}->{new[1]}"
    return changes


def weight_sparsity(model: nn.Module, names: list[str] | None = None) -> dict[str, Any]:
    """Return the fraction of exactly-zero weights, overall and per layer, over conv/linear weights."""
    zeros = total = 0
    per_layer = {}
    for name, module in model.named_modules():
        if not isinstance(module, PRUNABLE) or (names is not None and name not in names):
            continue
        weight = module.weight.detach()
        z = int((weight == 0).sum())
        zeros, total = zeros + z, total + weight.numel()
        per_layer[name] = round(z / weight.numel(), 4)
    return {"overall": round(zeros / total, 4) if total else 0.0, "per_layer": per_layer}
