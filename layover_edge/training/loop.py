"""Training LP, RM and FT with the paper's recipe: SGD (momentum 0.9), multi-label soft-margin
loss, OneCycle (max lr 0.1; 0.01 for fine-tuned backbone weights), 30 epochs, the best epoch
by validation mAP. LP and RM train from the feature cache in seconds; FT (and the pool1d RS)
trains from images.

Every epoch writes ``metrics.json`` (the history), ``last.pt`` (the state to resume from, loaded
with ``weights_only=True``; what it holds: ``resume.py``) and, when validation mAP improves, the
``best/`` checkpoint. A loss that turns NaN or infinite stops the run, naming the epoch and the cause.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from layover_edge.core import distributed
from layover_edge.core.config import ModelConfig, TrainConfig
from layover_edge.core.device import resolve_device
from layover_edge.core.errors import LayoverError
from layover_edge.core.io import make_dir, save_torch, write_json
from layover_edge.models import LayoverHead, LayoverModel, save_checkpoint

from .batches import Batch, ImageBatches
from .metrics import multilabel_metrics
from .resume import check_resume, read_state, rng_state, run_identity, set_rng_state


def soft_margin_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """nn.MultiLabelSoftMarginLoss, except that targets of -1 (ignored, e.g. VOC difficult)
    contribute nothing: mean over classes of the BCE with logits, then mean over the batch."""
    weight = (targets >= 0).to(logits.dtype)
    per = F.binary_cross_entropy_with_logits(logits.float(), targets.clamp(min=0).float(),
                                             weight=weight, reduction="none")
    return per.mean(dim=1).mean()


def forward_batch(model: LayoverModel, inputs: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, z) for a cached batch (z, p) or an image batch (x,)."""
    if len(inputs) == 2:
        z, p = (t.to(device, non_blocking=True) if t is not None else None for t in inputs)
        return model.head.forward_pooled(z, p), z
    h, z = model.features(inputs[0].to(device, non_blocking=True))
    logits = model.head(z) if h is None else model.head(z, h, model.backbone.layout(h))
    return logits, z


@torch.inference_mode()
def predict(model: LayoverModel, batches: Iterable[Batch], device: torch.device,
            amp: bool = False) -> dict[str, torch.Tensor]:
    """Probabilities, targets and (for RM) the mixing scale α over a whole split."""
    model.eval()
    scores, targets, alphas = [], [], []
    for inputs, y in batches:
        with _autocast(device, amp):
            logits, z = forward_batch(model, inputs, device)
        scores.append(torch.sigmoid(logits.float()).cpu())
        targets.append(y.cpu())
        if isinstance(model.head, LayoverHead):
            alphas.append(model.head.alpha(z).float().cpu())
    out = {"scores": torch.cat(scores), "targets": torch.cat(targets)}
    if alphas:
        out["alpha"] = torch.cat(alphas)
    if isinstance(batches, ImageBatches):  # sharded under torchrun: every rank gets all rows
        out = distributed.gather_rows(out, torch.cat(batches.order))
    return out


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast(device.type, enabled=False)


def build_optimizer(model: LayoverModel, cfg: ModelConfig, tcfg: TrainConfig, steps_per_epoch: int):
    groups = [{"params": [p for p in model.head.parameters() if p.requires_grad], "lr": tcfg.lr}]
    if cfg.method == "ft":
        groups.append({"params": list(model.backbone.parameters()), "lr": tcfg.backbone_lr})
    opt = torch.optim.SGD(groups, lr=tcfg.lr, momentum=tcfg.momentum, weight_decay=tcfg.weight_decay)
    pct = tcfg.pct_start
    if pct * tcfg.epochs * steps_per_epoch == 1:
        # OneCycleLR divides by its warm-up length pct·steps − 1, zero for a one-step warm-up (5 steps at
        # 0.2): a hair more warm-up is the same schedule in the limit, without the division by zero.
        pct = math.nextafter(pct, 1.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[g["lr"] for g in groups], epochs=tcfg.epochs,
        steps_per_epoch=steps_per_epoch, pct_start=pct)
    return opt, sched


def _nonfinite_loss(value: float, epoch: int, step: int, tcfg: TrainConfig, inputs: tuple) -> str:
    where = f"epoch {epoch + 1}/{tcfg.epochs}, step {step + 1}: the training loss is {value}"
    if any(t is not None and not bool(torch.isfinite(t).all()) for t in inputs):
        return f"{where}: the input batch holds NaN or infinite values (a corrupt feature cache or images?)"
    return (f"{where}: training diverged at learning rate {tcfg.lr:g} (backbone {tcfg.backbone_lr:g}); lower "
            f"--lr (last.pt holds the last good epoch, if any)")


@dataclass
class FitResult:
    best_epoch: int
    best: dict
    history: list[dict]
    seconds: float
    checkpoint: Path
    skipped: dict[str, list[dict]] = field(default_factory=dict)  # split -> unreadable images
    # the best epoch's validation predictions (``predict``), so callers need not run the split again;
    # None after a resume whose best epoch came before the interruption
    predictions: dict[str, torch.Tensor] | None = None
    # a sweep's chosen learning rate, weight decay and step, and its grid (``run.sweep_run``); None for an epoch run
    sweep: dict | None = None


def _trainable_state(model: LayoverModel, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    return (model if cfg.method == "ft" else model.head).state_dict()


def fit(model: LayoverModel, cfg: ModelConfig, tcfg: TrainConfig, train: Iterable[Batch],
        val: Iterable[Batch], out: str | Path, resume: bool = False, progress: bool = True,
        on_epoch: Callable[[dict], bool | None] | None = None, identity: dict | None = None) -> FitResult:
    """Train, validate every epoch, keep the best checkpoint in ``out/best``. ``on_epoch(row)`` runs
    after each epoch's files are written; a true return ends training there (a time budget).
    ``identity`` (``run_identity``) is what a resume must match; by default the model and the recipe.

    Under torchrun, image batches train through DistributedDataParallel and only rank 0
    writes files; cached batches are trained by one process (see ``distributed``).
    """
    out = Path(out)
    main = distributed.is_main()
    if main:
        make_dir(out)
    device = resolve_device(tcfg.device)
    model.to(device)
    step_model = None  # the DDP wrapper, whose forward syncs gradients
    if distributed.world_size() > 1 and isinstance(train, ImageBatches):
        step_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index or 0] if device.type == "cuda" else None)
    opt, sched = build_optimizer(model, cfg, tcfg, len(train))
    scaler = torch.amp.GradScaler("cuda", enabled=tcfg.amp and device.type == "cuda"
                                  and not torch.cuda.is_bf16_supported())
    history, best, best_epoch, start, elapsed, best_pred = [], {"mAP": -1.0}, -1, 0, 0.0, None
    state_file = out / "last.pt"
    identity = identity or run_identity(cfg, tcfg)
    if resume:
        state = read_state(state_file, device)
        check_resume(state, identity, state_file, tcfg.epochs * len(train))
        (model if cfg.method == "ft" else model.head).load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        set_rng_state(train, state["rng"])
        history, best, best_epoch = state["history"], state["best"], state["best_epoch"]
        start, elapsed = state["epoch"] + 1, state["seconds"]

    for epoch in range(start, tcfg.epochs):
        t0 = time.perf_counter()
        (step_model or model).train()
        if isinstance(train, ImageBatches):
            train.set_epoch(epoch)
        total, count = 0.0, 0
        for step, (inputs, y) in enumerate(tqdm(train, desc=f"{cfg.method} epoch {epoch + 1}/{tcfg.epochs}",
                                                leave=False, disable=not progress or not main)):
            with _autocast(device, tcfg.amp):
                if step_model is not None:
                    logits = step_model(inputs[0].to(device, non_blocking=True))
                else:
                    logits, _ = forward_batch(model, inputs, device)
                loss = soft_margin_loss(logits, y.to(device))
            value = loss.item()
            if not math.isfinite(value):
                raise LayoverError(_nonfinite_loss(value, epoch, step, tcfg, inputs))
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if tcfg.grad_clip > 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], tcfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            sched.step()
            total += value * len(y)
            count += len(y)
        if step_model is not None:  # the epoch's loss over all ranks' images
            total, count = map(sum, zip(*distributed.all_gather_objects((total, count))))
        elapsed += time.perf_counter() - t0
        pred = predict(model, val, device, tcfg.amp)
        metrics = multilabel_metrics(pred["scores"].numpy(), pred["targets"].numpy())
        row = {"epoch": epoch + 1, "loss": total / max(count, 1), "seconds": round(elapsed, 3),
               **{k: metrics[k] for k in ("mAP", "CP", "CR", "CF1", "OP", "OR", "OF1")}}
        if "alpha" in pred:  # a gate closing towards 0 means the RM branch is being switched off
            row["alpha_mean"] = float(pred["alpha"].mean())
        history.append(row)
        improved = metrics["mAP"] > best["mAP"]
        if improved:
            best, best_epoch, best_pred = row, epoch + 1, pred
        if main:
            if improved:
                save_checkpoint(model, cfg, out / "best", extra={"epoch": epoch + 1, "metrics": row,
                                                                 "train": tcfg.to_dict()})
            write_json(out / "metrics.json", {"method": cfg.method, "history": history,
                                              "best_epoch": best_epoch, "best": best})
            save_torch({"model": _trainable_state(model, cfg), "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(), "history": history, "best": best,
                        "best_epoch": best_epoch, "epoch": epoch, "seconds": elapsed, "run": identity,
                        "rng": rng_state(train)}, state_file)
        if on_epoch and on_epoch(row):
            break
    if step_model is not None:
        distributed.barrier()  # rank 0's files are complete before anyone reads them
    return FitResult(best_epoch, best, history, elapsed, out / "best", predictions=best_pred)
