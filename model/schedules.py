"""Learning-rate schedules of the three phases (arXiv 2409.02326).

  cosine         phase 1 (§2.2): linear warmup 0 -> lr (600 iterations in the paper), cosine decay to min_lr
                 (5.3e-4 -> 5.3e-5, "following DeepSeek-Coder").
  rewarm-linear  phase 2 (§2.3, Table 5 best row "0 -> MAX -> 0"): re-warmup 0 -> lr (1000 iterations in the
                 paper), then linear decay to 0 at total_steps.
  linear         Table 5 "MIN -> 0": lr decays linearly to 0, no warmup (pass lr=min_lr to reproduce the row).
  constant       Table 5 "MIN -> MIN": lr throughout, no warmup.

`step` is the 0-based index of the optimizer step about to be taken. The warmup is capped at half the run so a
short run still reaches its peak (never happens at paper scale: 600 of ~119k steps).
"""
from __future__ import annotations

import math

SCHEDULES = ("cosine", "rewarm-linear", "linear", "constant")


def lr_at(step: int, total_steps: int, *, schedule: str, lr: float, min_lr: float, warmup_steps: int) -> float:
    """Learning rate for optimizer step `step` of a run of `total_steps` steps."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {SCHEDULES}")
    total_steps = max(1, total_steps)
    if schedule == "constant":
        return lr
    if schedule == "linear":
        return lr * max(0.0, 1.0 - step / total_steps)

    warmup = min(warmup_steps, total_steps // 2)
    if step < warmup:  # nanoGPT-style: (step + 1) / (warmup + 1) so the first step already learns
        return lr * (step + 1) / (warmup + 1)
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    if schedule == "cosine":
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)
    return lr * (1.0 - progress)  # rewarm-linear: reaches 0 at total_steps
