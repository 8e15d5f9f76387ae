"""One training run end to end, the library call behind ``layover-edge train`` and
``layover_edge.train``: resolve the config, features from the cache where the method allows it
(LP, concat, RM with the linear RS) or images otherwise (FT, pool1d RS), fit, reload the best
epoch, and report what a user should know (unreadable images, a closed gate).

Heads that standardise the pooled tap (residual RM, concat) take its per-channel statistics from
the training split's feature cache, once, before training, and keep them fixed. That holds for FT
too: the statistics are the initial backbone's (the cache is extracted for them if need be), W_rs
and b_rs train on top of them, and as the backbone moves they remain a fixed affine
reparametrisation of W_rs that the training corrects for; the deployed head folds them in.

The default recipe (``sweep``) trains a cached head as a grid of heads and keeps the best on
validation (``sweep.py``), and FT for a schedule of the same length in steps, cut to ``budget_s``
(``schedule.py``); ``--recipe paper`` is the paper's 30 OneCycle epochs for every method (``loop.fit``).

Under torchrun (see ``core.distributed``): extraction is sharded over ranks, image batches are
sharded by a DistributedSampler and trained with DDP, cached heads train on rank 0 alone.
"""
from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from layover_edge.core import distributed
from layover_edge.core.config import ModelConfig, TrainConfig
from layover_edge.core.errors import LayoverError
from layover_edge.core.io import exclusive, make_dir, write_json
from layover_edge.core.tables import format_table
from layover_edge.data.loading import skipped_report, skipped_text
from layover_edge.models import (LayoverModel, build_model, load_checkpoint, resolve_config, save_checkpoint,
                                 standardisation)

from .batches import CachedBatches, cached_split, split_batches, trains_from_cache
from .loop import FitResult, fit
from .metrics import METRIC_KEYS, multilabel_metrics
from .resume import check_resume, read_state, run_identity
from .schedule import ft_epochs, plan_ft, steps_per_epoch, stop_before, sweep_steps
from .sweep import HeadKind, bank_stats, sweep

log = logging.getLogger(__name__)

# Below this mean gate the RM branch contributes almost nothing: RM has collapsed to LP.
GATE_CLOSED = 0.05


def gate_warnings(best: dict, cfg: ModelConfig) -> list[str]:
    alpha = best.get("alpha_mean")
    if alpha is None or alpha >= GATE_CLOSED:
        return []
    closed = (f"the gate α averages {alpha:.3g} at the best epoch: the RM branch is nearly switched off and RM "
              f"reduces to LP (metrics.json has α per epoch). ")
    if cfg.mix == "paper":
        return [closed + "The paper's convex mix of a sigmoid-squashed ĥ closes the gate on backbones whose "
                "pre-logits pass a ReLU; try the default --mix residual, whose gate stayed open (α 0.6-0.98) on "
                "every backbone measured (README, 'The method')."]
    return [closed + f"The tap @{cfg.tap} may add nothing z lacks here: try another --tap, a lower --lr, or "
            f"compare with --method concat (a linear head on z and the tap)."]


def set_standardisation(model: LayoverModel, cfg: ModelConfig, tcfg: TrainConfig, train_ds, cache_root: Path,
                        progress: bool) -> None:
    """Give a head that standardises the tap (residual RM, concat) the training split's statistics."""
    std = standardisation(model.head)
    if std is not None:
        std.set_(*cached_split(cfg, train_ds, "train", cache_root, tcfg, progress).tap_statistics(cfg.tap))


def sweeps(cfg: ModelConfig, tcfg: TrainConfig, cache_root: Path | None) -> bool:
    """Whether this run trains as a sweep of heads from the cache (``sweep.py``)."""
    return tcfg.recipe == "sweep" and cache_root is not None and trains_from_cache(cfg)


def sweep_model(cfg: ModelConfig, tcfg: TrainConfig, train: tuple, val: tuple, progress: bool):
    """(SweepResult, the model holding its best head) for ``cfg``'s head kind, swept on the cached
    (pooled tap, z, targets) of the training and validation splits."""
    (p, z, y), (vp, vz, vy) = train, val
    kind = HeadKind(cfg.method, None if cfg.method == "lp" else cfg.tap, cfg.mix if cfg.method == "rm" else None)
    r = sweep(kind, (z, p, y), (vz, vp, vy), bank_stats(z, p), tcfg.sweep_lrs, tcfg.sweep_weight_decays,
              sweep_steps(tcfg, len(z)), tcfg.batch_size, tcfg.seed, progress)
    model = build_model(cfg)
    model.head.load_state_dict(r.head.state_dict())
    return r, model


def sweep_run(cfg: ModelConfig, tcfg: TrainConfig, train, val, out: Path, progress: bool) -> FitResult:
    """The sweep's best head as a run: ``best/``, and ``metrics.json`` with every grid point. A sweep
    takes seconds from the cache and is deterministic, so it keeps no resume state: run again, it
    gives the same head. ``train``, ``val``: the splits' feature caches."""
    tap = None if cfg.method == "lp" else cfg.tap
    vy = val.tensors(tap)[2]
    r, model = sweep_model(cfg, tcfg, train.tensors(tap), val.tensors(tap), progress)
    m = multilabel_metrics(r.scores, vy.numpy())
    best = {"step": r.step, **{k: m[k] for k in METRIC_KEYS}}
    if r.alpha is not None:
        best["alpha_mean"] = float(r.alpha.mean())
    chosen = {"lr": r.lr, "weight_decay": r.weight_decay, "step": r.step, "steps": r.steps, "steps_run": r.steps_run}
    make_dir(out)
    save_checkpoint(model, cfg, out / "best", extra={"step": r.step, "metrics": best, "train": tcfg.to_dict(),
                                                      "sweep": chosen})
    write_json(out / "metrics.json", {"method": cfg.method, "recipe": "sweep", "best": best, "chosen": chosen,
                                      "grid": r.grid, "seconds": round(r.seconds, 3)})
    predictions = {"scores": torch.from_numpy(r.scores), "targets": vy}
    if r.alpha is not None:
        predictions["alpha"] = torch.from_numpy(r.alpha)
    return FitResult(r.step, best, [], r.seconds, out / "best", predictions=predictions, sweep=chosen | {
        "grid": r.grid, "heads": len(r.grid)})


def image_schedule(cfg: ModelConfig, tcfg: TrainConfig, train_ds, val_ds, out: Path, resume: bool, on_epoch):
    """(recipe, on_epoch) for a run from images under the sweep recipe: the sweep's length in steps as
    whole epochs, cut to ``budget_s`` by a plan from timed first steps (a resume keeps the plan's epochs)."""
    epochs = ft_epochs(tcfg, len(train_ds))
    if tcfg.budget_s is None:
        return replace(tcfg, epochs=epochs), on_epoch
    deadline = time.perf_counter() + tcfg.budget_s
    if resume:
        total = read_state(out / "last.pt", mmap=True)["scheduler"].get("total_steps", 0)
        epochs = max(1, total // steps_per_epoch(len(train_ds), tcfg.batch_size))
    else:
        plan = plan_ft(cfg, replace(tcfg, epochs=epochs), train_ds, val_ds, tcfg.budget_s)
        if plan["epochs"] == 0:
            log.warning("--budget %.0f s is shorter than one epoch (about %.0f s here, from timed steps): training "
                        "one epoch anyway", tcfg.budget_s, plan["epoch_s"])
        epochs = max(1, plan["epochs"])
    guard = stop_before(deadline)
    return replace(tcfg, epochs=epochs), (guard if on_epoch is None else lambda row: guard(row) or on_epoch(row))


def train_run(cfg: ModelConfig, tcfg: TrainConfig, train_ds, val_ds, out: Path, cache_root: Path | None,
              resume: bool = False, progress: bool = True, on_epoch=None) -> tuple[FitResult, LayoverModel]:
    """Build, train and return the fit result (with the unreadable images of each split) and
    the best epoch's model. ``cache_root`` None trains from images; a head's tap statistics then
    come from a cache in ``out/features``. ``on_epoch``: see ``loop.fit``."""
    cfg = resolve_config(cfg)
    out = Path(out)
    torch.manual_seed(tcfg.seed)
    progress = progress and distributed.is_main()
    if sweeps(cfg, tcfg, cache_root):
        train = cached_split(cfg, train_ds, "train", cache_root, tcfg, progress)
        val = cached_split(cfg, val_ds, "val", cache_root, tcfg, progress)
        result = sweep_run(cfg, tcfg, train, val, out, progress) if distributed.is_main() else None
        result = distributed.all_gather_objects(result)[0]
        result.skipped = {split: skipped_report(ds, [(s["index"], s["reason"]) for s in c.skipped])
                          for split, ds, c in (("train", train_ds, train), ("val", val_ds, val))}
        return result, load_checkpoint(result.checkpoint)[0]
    identity = run_identity(cfg, tcfg, {"train": train_ds.fingerprint(), "val": val_ds.fingerprint()})
    if resume:  # before any extraction or epoch: a resume with other options is refused up front
        check_resume(read_state(out / "last.pt", mmap=True), identity, out / "last.pt")
    if tcfg.recipe == "sweep":
        tcfg, on_epoch = image_schedule(cfg, tcfg, train_ds, val_ds, out, resume, on_epoch)
    model = build_model(cfg)
    set_standardisation(model, cfg, tcfg, train_ds, cache_root or Path(out) / "features", progress)
    train = split_batches(cfg, tcfg, train_ds, "train", cache_root, True, progress)
    val = split_batches(cfg, tcfg, val_ds, "val", cache_root, False, progress)
    if isinstance(train, CachedBatches) and distributed.world_size() > 1:
        result = fit(model, cfg, tcfg, train, val, out, resume=resume, progress=progress, on_epoch=on_epoch,
                     identity=identity) if distributed.is_main() else None
        result = distributed.all_gather_objects(result)[0]  # rank 0's result, after it finished
    else:
        result = fit(model, cfg, tcfg, train, val, out, resume=resume, progress=progress, on_epoch=on_epoch,
                     identity=identity)
    result.skipped = {split: skipped_report(ds, distributed.gather_skipped(b.skipped))
                      for split, ds, b in (("train", train_ds, train), ("val", val_ds, val))}
    best, _ = load_checkpoint(result.checkpoint)
    return result, best


@dataclass
class Trained:
    """What ``train`` returns: the summary (JSON-ready) and the best epoch's model."""

    summary: dict
    model: LayoverModel
    text: str


def claim_run_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """A run folder that already holds a run is continued (``resume``) or replaced (``overwrite``),
    never silently overwritten: its checkpoint may carry tuned thresholds."""
    held = [name for name in ("best", "last.pt") if (out / name).exists()]
    if not held or resume:
        return
    if not overwrite:
        raise LayoverError(f"{out} already holds a run ({', '.join(held)}): --resume continues it, --overwrite "
                           f"replaces it, or choose another --out")
    if distributed.is_main():  # the new run's first epoch replaces best/; a stale last.pt must not be resumed
        for name in ("last.pt", "metrics.json"):
            (out / name).unlink(missing_ok=True)


def train(cfg: ModelConfig, tcfg: TrainConfig, train_ds, val_ds, out: str | Path, cache: str | Path | None = None,
          resume: bool = False, progress: bool = True, overwrite: bool = False) -> Trained:
    """Train ``cfg`` on ``train_ds`` (best epoch by ``val_ds`` mAP) into the run folder ``out``:
    ``best/`` checkpoint, ``metrics.json``, ``last.pt``, ``unreadable.json``. LP and RM train from the
    feature cache (default ``out/features``). A folder holding a run needs ``resume`` or ``overwrite``;
    one process at a time writes it."""
    if list(val_ds.classes) != list(train_ds.classes):
        raise LayoverError("the training and validation splits have different class lists")
    out = Path(out)
    cache = Path(cache) if cache else out / "features"
    with exclusive(out, "run folder") if distributed.is_main() else nullcontext():
        if resume and sweeps(resolve_config(cfg), tcfg, cache) and (out / "best").exists():
            raise LayoverError(f"{out} holds a finished sweep: a sweep keeps no state to resume (it is seconds from "
                               f"the cache and deterministic); --overwrite runs it again")
        claim_run_folder(out, resume, overwrite)
        result, model = train_run(cfg, tcfg, train_ds, val_ds, out, cache, resume, progress)
        if distributed.is_main():
            write_json(out / "unreadable.json", result.skipped)
    warnings = gate_warnings(result.best, cfg)
    summary = {"checkpoint": str(result.checkpoint), "best_epoch": result.best_epoch, "best": result.best,
               "train_seconds": round(result.seconds, 3), "history": result.history,
               "processes": distributed.world_size(), "unreadable": result.skipped, "warnings": warnings}
    name = cfg.method.upper() + (f"@{cfg.tap}" if cfg.method != "lp" else "") + (
        f" ({cfg.mix} mix)" if cfg.method in ("rm", "ft") else "")
    if result.sweep:
        s = result.sweep
        summary["sweep"] = s
        how = (f"best of {s['heads']} heads (lr {s['lr']:g}, weight decay {s['weight_decay']:g}) at step "
               f"{s['step']}/{s['steps']} by validation mAP")
    else:
        how = f"best epoch {result.best_epoch}/{len(result.history) if tcfg.recipe == 'sweep' else tcfg.epochs}"
    columns = (*METRIC_KEYS, *(["alpha_mean"] if "alpha_mean" in result.best else []))
    text = (f"{how}, {result.seconds:.1f} s of training; checkpoint "
            f"{result.checkpoint}\n\n{format_table({name: result.best}, columns)}"
            + "".join(f"\nwarning: {w}" for w in warnings)
            + skipped_text(result.skipped, f" (all in {out / 'unreadable.json'})"))
    return Trained(summary, model, text)

