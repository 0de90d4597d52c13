"""Remove whole channels with torch-pruning's DepGraph, respecting the layers that must be kept.

DepGraph traces the model with autograd to find which layers share a channel dimension (a conv, its
BatchNorm, the next conv's inputs, a residual sum...) and removes a channel from all of them at once,
so the smaller model still runs and computes the same shapes at its output.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from edgekit.errors import ConfigError, InputError, did_you_mean, first_line
from edgekit.pruning.counting import PRUNABLE
from edgekit.recipe import Importance, PruneConfig

FACTORY_HINT = "pass MODULE:FACTORY (or file.py:factory) with --weights state_dict.pt"
MAX_LAYER_RATIO = 0.9  # global pruning may thin one layer a lot, but never empty it


def check_prunable(model: nn.Module) -> None:
    """Raise InputError unless `model` is a Python nn.Module made of conv / linear layers."""
    if isinstance(model, torch.jit.ScriptModule):
        raise InputError(
            "pruning needs the model's Python class; a TorchScript archive has none to rewrite", hint=FACTORY_HINT
        )
    if not any(isinstance(m, PRUNABLE) for m in model.modules()):
        kind = "a torch.export graph (.pt2)" if isinstance(model, torch.fx.GraphModule) else "this model"
        raise InputError(
            (
                f"pruning needs the model's Python class: {kind} has no nn.Conv/nn.Linear modules whose channels can "
                "be removed"
            ),
            hint=FACTORY_HINT,
        )


def kept_layers(model: nn.Module, example: torch.Tensor, keep_layers: tuple[str, ...]) -> list[str]:
    """Return the names of the layers whose outputs are never pruned: the head, plus `keep_layers`.

    The head is the last conv/linear layer that runs (found with forward hooks, not by declaration
    order), so the model's output keeps its shape.
    """
    modules = dict(model.named_modules())
    unknown = [name for name in keep_layers if name not in modules or name == ""]
    if unknown:
        layers = [n for n, m in modules.items() if isinstance(m, PRUNABLE)]
        raise ConfigError(
            f"prune.keep_layers names {unknown[0]!r}, which is not a module of the model",
            hint=did_you_mean(unknown[0], list(modules))
            or f"layers: {', '.join(layers[:12])}{' ...' if len(layers) > 12 else ''}",
        )
    order: list[str] = []
    handles = [
        m.register_forward_hook(lambda _m, _i, _o, n=n: order.append(n))
        for n, m in modules.items()
        if isinstance(m, PRUNABLE)
    ]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    head = [order[-1]] if order else []
    return head + [name for name in keep_layers if name not in head]


def prune_channels(
    model: nn.Module,
    example: torch.Tensor,
    config: PruneConfig,
    kept: list[str],
    taylor_loss: Callable[[nn.Module], torch.Tensor] | None = None,
) -> None:
    """Remove `config.ratio` of the channels of `model` in place (call it on a copy).

    `taylor_loss(model)` gives the loss whose gradients Taylor importance needs.
    """
    import torch_pruning as tp

    modules = dict(model.named_modules())
    importance = _importance(config.importance)
    ignored = [modules[name] for name in kept]
    # Attention layers need head-aware pruning settings that edgekit does not expose yet; keep them whole.
    ignored += [m for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
    try:
        pruner = tp.pruner.MetaPruner(
            model,
            example,
            importance=importance,
            pruning_ratio=config.ratio,
            global_pruning=config.global_pruning,
            max_pruning_ratio=MAX_LAYER_RATIO,
            ignored_layers=ignored,
        )
        if config.importance is Importance.TAYLOR:
            if taylor_loss is None:
                raise ConfigError(
                    'prune.importance = "taylor" needs calibration data for its gradients', hint='use importance = "l1"'
                )
            model.zero_grad()
            taylor_loss(model).backward()
        pruner.step()
    except (ConfigError, InputError):
        raise
    except Exception as exc:
        raise InputError(
            f"structured pruning could not trace this model ({first_line(exc)})",
            hint="name the layers it fails on in prune.keep_layers, or set prune.ratio = 0",
        ) from exc
    finally:
        model.zero_grad(set_to_none=True)


def taylor_loss_fn(
    inputs: torch.Tensor, labels: torch.Tensor | None, teacher: Any
) -> Callable[[nn.Module], torch.Tensor]:
    """Return a loss for Taylor importance: cross-entropy on the labels, else on the float model's top-1.

    A distillation loss would be zero (the student starts equal to the teacher), and so would its gradients.
    """

    def loss(model: nn.Module) -> torch.Tensor:
        logits = model(inputs)
        logits = logits[0] if isinstance(logits, tuple | list) else logits
        logits = logits.reshape(len(inputs), -1)
        target = labels
        if target is None:
            with torch.no_grad():
                reference = teacher(inputs)
                reference = reference[0] if isinstance(reference, tuple | list) else reference
                target = reference.reshape(len(inputs), -1).argmax(dim=1)
        return nn.functional.cross_entropy(logits, target.long())

    return loss


def _importance(kind: Importance) -> Any:
    import torch_pruning as tp

    if kind is Importance.TAYLOR:
        return tp.importance.TaylorImportance()
    return tp.importance.MagnitudeImportance(p=1 if kind is Importance.L1 else 2)
