"""How long heads train: a schedule counted in optimiser steps that scales with the data set, and
FT's time budget.

The paper's 30 epochs were set for 82,081 COCO images (1,283 steps an epoch); on 255 images they
are 120 steps, and the heads stop long before they converge. ``auto_steps`` asks for
``MIN_EPOCHS`` passes (the paper's 30 epochs, where the data is large enough for them to be many
steps) and never fewer than ``MIN_STEPS`` steps: 300 steps (75 passes) on a few hundred images,
960 on the demo's 2,000, 38,490 on full COCO; the sweep's early stopping ends a bank sooner once
its best has converged. (10 passes, dinov2's length for ImageNet, left the demo's heads still
improving at their last step, 2-5 mAP short.)

FT cannot sweep a grid (one backbone each), so it trains one schedule of the same length, cut to
a wall-clock budget where one is given: its epochs are planned from its first steps, timed, and an
epoch whose successor would end past the deadline is its last.
"""
from __future__ import annotations

import math
import time

import numpy as np

from layover_edge.core.config import MIN_EPOCHS, MIN_STEPS, ModelConfig, TrainConfig
from layover_edge.core.device import resolve_device
from layover_edge.models import build_model

from .batches import image_batches
from .loop import forward_batch, soft_margin_loss

# FT's epochs are planned from its first steps timed, with this margin for a machine whose load
# changes while it trains (on the shared 2-core machines it moved by 10-20 % within minutes, and
# up to 3x over hours: no margin covers that, a budget is a plan, not a guarantee).
FT_SAFETY = 1.15


def steps_per_epoch(num_images: int, batch_size: int) -> int:
    return max(1, math.ceil(num_images / batch_size))


def auto_steps(num_images: int, batch_size: int) -> int:
    """``MIN_EPOCHS`` passes over ``num_images``, and never fewer than ``MIN_STEPS`` steps."""
    return max(MIN_STEPS, MIN_EPOCHS * steps_per_epoch(num_images, batch_size))


def sweep_steps(tcfg: TrainConfig, num_images: int) -> int:
    return tcfg.steps or auto_steps(num_images, tcfg.batch_size)


def ft_epochs(tcfg: TrainConfig, num_images: int) -> int:
    """FT's epochs: the recipe's under ``paper``; under ``sweep`` the steps' worth in whole epochs, at
    most ``tcfg.epochs`` (the paper's 30: more passes over a small set only overfit a whole backbone)."""
    if tcfg.recipe == "paper":
        return tcfg.epochs
    steps = sweep_steps(tcfg, num_images)
    return min(tcfg.epochs, math.ceil(steps / steps_per_epoch(num_images, tcfg.batch_size)))


def seconds_per_ft_step(cfg: ModelConfig, tcfg: TrainConfig, train_ds, steps: int = 2) -> float:
    """Wall-clock seconds of one FT training step (forward, backward) on one batch of ``train_ds``,
    after one warm-up step: what an FT epoch will cost per batch on this machine, now."""
    model = build_model(cfg).to(resolve_device(tcfg.device)).train()
    inputs, y = next(iter(image_batches(cfg, train_ds, tcfg.batch_size, shuffle=False)))
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        logits, _ = forward_batch(model, inputs, resolve_device(tcfg.device))
        soft_margin_loss(logits, y.to(logits.device)).backward()
        times.append(time.perf_counter() - t0)
    return float(np.median(times[1:]))


def plan_ft(cfg: ModelConfig, tcfg: TrainConfig, train_ds, val_ds, budget_s: float,
            predict_rate: float | None = None) -> dict:
    """FT's epochs within ``budget_s`` seconds: each epoch trains on every batch and predicts the
    validation split (at ``predict_rate`` images/s, the frozen backbone's; None: a third of a training
    step per batch, a forward without the backward). ``epochs`` 0 means not even one fits."""
    step_s = seconds_per_ft_step(cfg, tcfg, train_ds)
    rate = predict_rate or tcfg.batch_size / (step_s / 3)
    epoch_s = steps_per_epoch(len(train_ds), tcfg.batch_size) * step_s + len(val_ds) / rate
    fits = int(budget_s / (epoch_s * FT_SAFETY))
    return {"budget_s": round(budget_s, 1), "step_s": round(step_s, 3), "epoch_s": round(epoch_s, 1),
            "requested_epochs": tcfg.epochs, "epochs": max(0, min(tcfg.epochs, fits))}


def stop_before(deadline: float):
    """An ``on_epoch`` that ends training when the next epoch, as long as the last one, would end
    after ``deadline`` (a time.perf_counter value): the guard a plan made on a machine whose load
    then rose needs."""
    last = [time.perf_counter()]

    def on_epoch(row: dict) -> bool:
        now = time.perf_counter()
        took, last[0] = now - last[0], now
        return now + took > deadline
    return on_epoch
