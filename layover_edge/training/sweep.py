"""Heads that converge at any data set size: a bank of heads of one kind, one per (learning rate,
weight decay) pair of a grid, trained together from the feature cache in one pass, the best
(head, step) kept by validation mAP. dinov2's linear evaluation is the model (``eval/linear.py``:
many linear heads, one pass over cached features, the best kept on validation).

Why not the paper's recipe by default: it was set for 82,081 COCO images (1,283 steps an epoch);
on a few hundred images its 30 epochs are ~120 SGD steps, and every head stops long before it
converges. Here the schedule is counted in optimiser steps (``sweep_steps``), enough to converge on
small data and a few epochs on large, and the learning rate and weight decay are chosen on the
validation split instead of being fixed.

Every head trains in a *standardised parametrisation*: the classifier, the gate and the residual
branch see z̃ = (z − μ_z)/σ_z and the tap p̃ = (p − μ_p)/σ_p (statistics of the training split,
``bank_stats``), which makes SGD well conditioned whatever the backbone's feature scales are (on
ImageNet EfficientNet-Lite0's raw z the same grid ends 2-25 mAP lower). Each head is then folded back into
the plain parametrisation of ``models.heads`` (``Bank.head``), so checkpoints, exports and kernels
see the same function in the form they always had:

* LP        logits = V·z̃ + c                                 fc.W = V/σ_z, fc.b = c − fc.W·μ_z
* concat    logits = V·[z̃, p̃] + c                            (the p̃ half keeps its ``Standardise``)
* residual  α = σ(s·z̃ + s₀), logits = V·z̃ + c + α·(M·p̃ + m), i.e. V·(z̃ + α·ĥ̃) + c with ĥ̃ = R·p̃ + r
            for any R, r with V·R = M, V·r = m (trained as M, m: the same functions at K/N of the cost)
            → rs.W = diag(σ_z)·R, rs.b = σ_z⊙r (on p̃: the head's ``Standardise``),
              sl.w = s/σ_z, sl.b = s₀ − sl.w·μ_z, fc as LP; since z + α·σ_z⊙ĥ̃ standardises to z̃ + α·ĥ̃
* paper     ĥ = σ(R·p) (raw p, no bias: eq. 5-6 exactly), α as above,
            logits = V·((α·ĥ + (1−α)·z − μ_z)/σ_z) + c         → sl and fc folded as above

The branch starts at zero (R = 0, r = 0: a residual RM starts as LP) and its weight decay pulls it
back there, so on data too small for the branch RM falls back towards LP instead of below it.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from layover_edge.core.errors import LayoverError
from layover_edge.models import ConcatHead, LayoverHead, LinearProbe

from .features import column_statistics
from .metrics import average_precision

# momentum SGD, as dinov2 and the paper; no clipping: the standardised problem is well conditioned
MOMENTUM = 0.9
# validation points per run: the early-stopping resolution
EVALS = 20
# the sweep stops when the best validation mAP has not improved for this many validation points
PATIENCE = 8
# the paper mix's gate bias at the start: σ(−4) ≈ 0.018
PAPER_GATE_INIT = -4.0


@dataclass(frozen=True)
class HeadKind:
    """One head to sweep: ``lp``, ``concat`` at a tap, or ``rm`` at a tap in a mix."""

    method: str
    tap: int | None = None
    mix: str | None = None

    @property
    def name(self) -> str:
        if self.method == "lp":
            return "LP"
        return f"{self.method.upper() if self.method == 'rm' else self.method}@{self.tap}" + (
            f" {self.mix}" if self.method == "rm" else "")


@dataclass
class Stats:
    """Per-channel mean and std of z and of the pooled tap over the training split."""

    z: tuple[torch.Tensor, torch.Tensor]
    p: tuple[torch.Tensor, torch.Tensor] | None = None


def bank_stats(z: torch.Tensor, p: torch.Tensor | None) -> Stats:
    """The training split's statistics a bank standardises with. σ_z is floored at its mean over
    channels: z of a ReLU backbone has near-dead channels, and scaling those up by 1/σ turned their
    noise into features the heads overfit (on the demo, LP 74.7 with a floor at a tenth of the mean σ
    against 77.4; on the real photos the two are equal). The tap keeps the residual head's own
    ``tap_statistics`` rule, so a checkpoint's standardisation is the same whichever recipe trained it."""
    return Stats(column_statistics(z, 1.0), None if p is None else column_statistics(p))


class Bank(nn.Module):
    """G heads of one kind in the standardised parametrisation (the module docstring's table).

    The heads share their inputs, so LP, concat and the residual RM run as one matrix product over
    all G at once (weights laid out (in, G, K)); only the paper's mix, whose sigmoid sits inside
    each head, runs a batched product per head. ``axes`` names each parameter's head axis."""

    def __init__(self, kind: HeadKind, groups: int, num_features: int, tap_channels: int, num_classes: int,
                 stats: Stats):
        super().__init__()
        self.kind, self.stats = kind, stats
        g, n, c, k = groups, num_features, tap_channels, num_classes
        width = n + c if kind.method == "concat" else n
        self.V = nn.Parameter(torch.zeros(width, g, k))
        self.c = nn.Parameter(torch.zeros(g, k))
        self.axes = {"V": 1, "c": 0}
        if kind.method == "rm":
            residual = kind.mix == "residual"
            # residual: the branch's logits V·R·p̃ are trained as M = R·V (C×K, not C×N: the same functions,
            # a fraction of the work at N = 1280); the paper's sigmoid sits between R and V, so it keeps R
            self.R = nn.Parameter(torch.zeros(c, g, k) if residual else torch.zeros(g, c, n))
            self.s = nn.Parameter(torch.zeros(n, g))
            # the paper's mix starts closed (α ≈ 0.018, z' ≈ z: LP), as the residual starts with ĥ = 0
            self.s0 = nn.Parameter(torch.full((g,), 0.0 if residual else PAPER_GATE_INIT))
            self.axes |= {"R": 1 if residual else 0, "s": 1, "s0": 0}
            if residual:
                self.r = nn.Parameter(torch.zeros(g, k))
                self.axes["r"] = 0

    def decayed(self) -> set[str]:
        """The weights that weight decay pulls towards zero (not the biases)."""
        return {"V", "R", "s"}

    def forward(self, z: torch.Tensor, p: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits (B, G, K), α (B, G) or None) from raw z and the raw pooled tap."""
        mz, sz = self.stats.z
        zt = (z - mz) / sz
        b, (_, g, k) = len(z), self.V.shape
        if self.kind.method == "concat":
            mp, sp = self.stats.p
            zt = torch.cat([zt, (p - mp) / sp], 1)
        if self.kind.method in ("lp", "concat"):
            return (zt @ self.V.reshape(len(self.V), -1)).view(b, g, k) + self.c, None
        alpha = torch.sigmoid(zt @ self.s + self.s0)                                    # (B, G)
        if self.kind.mix == "residual":
            mp, sp = self.stats.p
            branch = (((p - mp) / sp) @ self.R.reshape(len(self.R), -1)).view(b, g, k) + self.r
            return (zt @ self.V.reshape(len(self.V), -1)).view(b, g, k) + self.c + alpha[..., None] * branch, alpha
        a = alpha.T[..., None]                                                          # (G, B, 1)
        mixed = (a * torch.sigmoid(p @ self.R) + (1 - a) * z - mz) / sz                 # (G, B, N)
        return torch.bmm(mixed, self.V.transpose(0, 1)).transpose(0, 1) + self.c, alpha

    @torch.no_grad()
    def head(self, g: int) -> nn.Module:
        """Head ``g`` as a ``models.heads`` module in the plain parametrisation (same function)."""
        mz, sz = self.stats.z
        n, k = mz.numel(), self.V.shape[2]
        v = self.V[:, g]                                # (width, K)
        fc_w = v[:n].T / sz                             # (K, N)
        fc_b = self.c[g] - fc_w @ mz
        if self.kind.method == "lp":
            head = LinearProbe(n, k)
            head.fc.weight.copy_(fc_w)
            head.fc.bias.copy_(fc_b)
            return head
        c = self.stats.p[0].numel()
        if self.kind.method == "concat":
            head = ConcatHead(c, n, k)
            head.standardise.set_(*self.stats.p)
            head.fc.weight.copy_(torch.cat([fc_w, v[n:].T], 1))
            head.fc.bias.copy_(fc_b)
            return head
        head = LayoverHead(c, n, k, "linear", self.kind.mix)
        head.fc.weight.copy_(fc_w)
        head.fc.bias.copy_(fc_b)
        sl_w = self.s[:, g] / sz
        head.sl.weight.copy_(sl_w.view(1, -1))
        head.sl.bias.copy_(self.s0[g] - sl_w @ mz)
        if self.kind.mix == "residual":
            # ĥ̃ = p̃·R + r in z̃'s space with R·V = M, r·V = m: V (N×K, K ≤ N) has full column rank, so the
            # least-norm solution through V's pseudo-inverse reproduces the trained logits exactly
            m, vd = self.R[:, g].double(), v.double()
            v_pinv = torch.linalg.pinv(vd)
            rs_w, rs_b = m @ v_pinv, self.r[g].double() @ v_pinv
            err = float((rs_w @ vd - m).abs().max())
            if err > 1e-4 * max(float(m.abs().max()), 1.0):
                raise LayoverError(f"{self.kind.name}: the classifier has rank below the class count, so the branch "
                                   f"cannot be written as W_rs (error {err:.2g}); use --recipe paper")
            head.standardise.set_(*self.stats.p)
            head.rs.weight.copy_((rs_w.T * sz.double().view(-1, 1)).float())
            head.rs.bias.copy_((rs_b * sz.double()).float())
        else:
            head.rs.weight.copy_(self.R[g].T)
        return head


@dataclass
class SweepResult:
    """The best head of a sweep and how it was found."""

    kind: HeadKind
    head: nn.Module
    lr: float
    weight_decay: float
    step: int
    steps: int
    steps_run: int              # fewer than ``steps`` when it stopped early
    val_mAP: float
    grid: list[dict]            # per (lr, wd): its best validation mAP and step
    seconds: float
    scores: np.ndarray          # the best head's validation probabilities
    alpha: np.ndarray | None    # its gate per validation image (RM)


def soft_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per head (G,): ``loop.soft_margin_loss`` (targets of -1 ignored) for a bank's (B, G, K) logits."""
    weight = (y >= 0).to(logits.dtype)[:, None]
    per = nn.functional.binary_cross_entropy_with_logits(
        logits, y.clamp(min=0)[:, None].expand_as(logits), weight=weight.expand_as(logits), reduction="none")
    return per.mean((0, 2))


def bank_map(logits: torch.Tensor, y: np.ndarray) -> np.ndarray:
    """Validation mAP (percent) of every head of a bank, classes without positives left out."""
    b, g, k = logits.shape
    ap = average_precision(logits.reshape(b, g * k).numpy(), np.tile(y, (1, g)))
    return 100 * np.nanmean(ap.reshape(g, k), axis=1)


def sweep(kind: HeadKind, train: tuple, val: tuple, stats: Stats, lrs, weight_decays, steps: int,
          batch_size: int, seed: int = 0, progress: bool = True) -> SweepResult:
    """Train one head per (lr, wd) in ``lrs`` × ``weight_decays`` for ``steps`` SGD steps (cosine
    decay, momentum 0.9, shared mini-batches), validate EVALS times, and keep the best (head, step);
    stop early once the best has not improved for PATIENCE validations.

    ``train`` / ``val``: (z, p, y) tensors, p None for LP; targets in {1, 0, -1}. A learning rate
    that diverges stops its head; the others go on."""
    if len(train[0]) == 0 or len(val[0]) == 0:
        raise LayoverError("a sweep needs training and validation images")
    with one_thread():
        return _sweep(kind, train, val, stats, lrs, weight_decays, steps, batch_size, seed, progress)


@contextmanager
def one_thread():
    """torch on one intra-op thread for the block: a sweep's products are small (a batch of 64 rows),
    and on 2 cores shared with other work two OpenMP threads ran it 8× slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _sweep(kind: HeadKind, train: tuple, val: tuple, stats: Stats, lrs, weight_decays, steps: int,
           batch_size: int, seed: int, progress: bool) -> SweepResult:
    (z, p, y), (vz, vp, vy) = train, val
    t0 = time.perf_counter()
    lr = torch.tensor([float(a) for a in lrs for _ in weight_decays])
    wd = torch.tensor([float(w) for _ in lrs for w in weight_decays])
    groups, n = len(lr), len(z)
    bank = Bank(kind, groups, z.shape[1], 0 if p is None else p.shape[1], y.shape[1], stats)
    params = dict(bank.named_parameters())
    momenta = {name: torch.zeros_like(q) for name, q in params.items()}
    # a per-head value shaped to broadcast along each parameter's head axis
    along = {name: [-1 if d == bank.axes[name] else 1 for d in range(q.dim())] for name, q in params.items()}
    generator = torch.Generator().manual_seed(seed)
    order, at = torch.randperm(n, generator=generator), 0
    batch_size = min(batch_size, n)
    every = max(1, steps // EVALS)
    vy_np = vy.numpy()
    best_map, best_step = np.full(groups, -1.0), np.zeros(groups, int)
    diverged = np.zeros(groups, bool)
    best = (-1.0, 0, 0, None)  # validation mAP, head, step, the bank's state then
    bar = tqdm(total=steps, desc=f"sweep {kind.name}", unit="step", leave=False, disable=not progress)
    for step in range(steps):
        if at + batch_size > n:
            order, at = torch.randperm(n, generator=generator), 0
        i = order[at:at + batch_size]
        at += batch_size
        logits, _ = bank(z[i], None if p is None else p[i])
        loss = soft_margin(logits, y[i])
        dead = ~torch.isfinite(loss)
        if dead.any():  # a learning rate of the grid diverged: that head stops, the others go on
            diverged |= dead.numpy()
            if diverged.all():
                raise LayoverError(f"sweep {kind.name}, step {step + 1}: every head's training loss is not finite; "
                                   f"lower the grid's learning rates (or is the feature cache corrupt?)")
            lr[dead] = 0.0
            loss = torch.where(dead, 0.0, loss)
        for q in params.values():
            q.grad = None
        loss.sum().backward()
        step_lr = lr * (0.5 * (1 + math.cos(math.pi * step / steps)))
        with torch.no_grad():  # in place: the paper mix's R is G·C·N floats (4.9 M at @4 of Lite0)
            for name, q in params.items():
                m = momenta[name].mul_(MOMENTUM).add_(q.grad)
                if name in bank.decayed():
                    m.addcmul_(q, wd.view(along[name]))
                if diverged.any():
                    torch.nan_to_num_(m, 0.0, 0.0, 0.0)
                q.addcmul_(m, step_lr.view(along[name]), value=-1.0)
        bar.update()
        ran = step + 1
        if (step + 1) % every == 0 or step + 1 == steps:
            with torch.no_grad():
                maps = bank_map(bank(vz, vp)[0], vy_np)
            maps[diverged] = -1.0
            better = maps > best_map
            best_map[better], best_step[better] = maps[better], step + 1
            top = int(np.argmax(maps))
            if maps[top] > best[0]:
                best = (float(maps[top]), top, step + 1, {k: v.clone() for k, v in bank.state_dict().items()})
            elif 2 * (step + 1) >= steps and step + 1 - best[2] >= PATIENCE * every:
                break  # early stopping, in the second half: the cosine's low-lr end is often where heads gain
    bar.close()
    val_map, top, step, state = best
    bank.load_state_dict(state)
    with torch.no_grad():
        logits, alpha = bank(vz, vp)
    grid = [{"lr": float(a), "weight_decay": float(w), "val_mAP": float(best_map[j]), "step": int(best_step[j]),
             "diverged": bool(diverged[j])} for j, (a, w) in enumerate((a, w) for a in lrs for w in weight_decays)]
    return SweepResult(kind, bank.head(top), grid[top]["lr"], grid[top]["weight_decay"], step, steps, ran, val_map,
                       grid, time.perf_counter() - t0, torch.sigmoid(logits[:, top]).numpy(),
                       None if alpha is None else alpha[:, top].numpy())
