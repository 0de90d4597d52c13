"""Recover accuracy after pruning with a short, bounded, seeded fine-tune on the calibration inputs.

It stops after `steps` steps, so the same inputs give the same weights (and artifact) on any machine
load. Only a positive `time_budget_s` (not the default) may stop it earlier, by wall-clock time; the
facts then name the budget, and the manifest says the build is not reproducible. No time is recorded
here: timings vary between runs and belong in measured.json.

Without labels the pruned model learns the float model's outputs (distillation, MSE on the outputs);
with labels and mode "finetune" it learns the labels (cross-entropy). BatchNorm runs in train mode
while it learns, so its statistics follow the thinner layers, and the model is put back in eval mode.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekit.modelio import run_torch
from edgekit.pruning.sparse import Masks, apply_masks
from edgekit.recipe import RecoveryConfig, RecoveryMode

EVAL_BATCH = 64


def outputs(model: Any, inputs: torch.Tensor) -> torch.Tensor:
    """Run `model` over `inputs` in eval batches without gradients and return its first output."""
    return torch.from_numpy(run_torch(model, inputs.numpy(), batch=EVAL_BATCH))


def recover(
    student: nn.Module,
    teacher: Any,
    inputs: np.ndarray,
    labels: np.ndarray | None,
    config: RecoveryConfig,
    *,
    seed: int,
    masks: Masks | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Fine-tune `student` in place toward `teacher` (or the labels) and return what happened."""
    x = torch.from_numpy(np.ascontiguousarray(inputs))
    mode = config.mode
    if mode is RecoveryMode.NONE:
        return {"mode": mode.value, "steps": 0}
    if mode is RecoveryMode.FINETUNE:
        target = torch.from_numpy(np.asarray(labels)).long()
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = _cross_entropy
    else:
        target = outputs(teacher, x)
        loss_fn = nn.functional.mse_loss
    before = _loss(student, x, target, loss_fn)
    facts: dict[str, Any] = {
        "mode": mode.value,
        "loss": "cross-entropy on the calibration labels"
        if mode is RecoveryMode.FINETUNE
        else "MSE to the float model's outputs",
        "samples": len(x),
        "loss_before": before,
    }
    batch = min(config.batch_size, len(x))
    if batch < 2:  # BatchNorm cannot learn from a batch of one
        return {
            **facts,
            "steps": 0,
            "loss_after": before,
            "skipped": "fewer than 2 calibration samples",
        }

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.learning_rate)
    started = time.perf_counter()
    steps, stopped_by = 0, "steps"
    student.train()
    try:
        order = torch.randperm(len(x), generator=generator)
        cursor = 0
        while steps < config.steps:
            if config.time_budget_s > 0 and time.perf_counter() - started > config.time_budget_s:
                stopped_by = "time_budget_s"
                break
            if cursor + batch > len(x):
                order, cursor = torch.randperm(len(x), generator=generator), 0
            index = order[cursor : cursor + batch]
            cursor += batch
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(_first(student(x[index])), target[index])
            loss.backward()
            optimizer.step()
            if masks:
                apply_masks(student, masks)  # pruned weights stay exactly zero
            steps += 1
            if progress and steps % 100 == 0:
                progress(f"recovery step {steps}/{config.steps}: loss {float(loss):.4g}")
    finally:
        student.eval()
        student.zero_grad(set_to_none=True)
    after = _loss(student, x, target, loss_fn)
    budget = {"time_budget_s": config.time_budget_s} if config.time_budget_s > 0 else {}
    return {
        **facts,
        "steps": steps,
        "stopped_by": stopped_by,
        **budget,
        "loss_after": after,
        "batch_size": batch,
        "learning_rate": config.learning_rate,
        "seed": seed,
    }


def _loss(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> float:
    model.eval()
    return round(float(loss_fn(outputs(model, x), target)), 6)


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple | list) else out


def _cross_entropy(out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(out.reshape(len(out), -1), labels)
