"""Model selection from one feature cache (``train --method auto``): LP, RM in both mixes at every
tap and concat at every tap, each swept over the grid (``sweep.py``), the best on validation kept
as the run's ``best/``, and a table of every candidate, so a user sees whether the Layover branch
pays off on their data and exports the head that won.

Each tap's pooled features are read from the cache once and feed every head kind of that tap.
Every candidate's checkpoint is kept under ``OUT/candidates/`` (a few hundred KB each), so any row
of the table can be exported as it is.
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from layover_edge.core import distributed
from layover_edge.core.config import MIXES, ModelConfig, TrainConfig
from layover_edge.core.errors import LayoverError
from layover_edge.core.io import exclusive, write_json, write_text
from layover_edge.core.tables import format_table
from layover_edge.models import (build_backbone, build_model, load_checkpoint, resolve_config, save_checkpoint,
                                 stage_modules)

from .batches import cached_split
from .evaluate import size_metrics
from .metrics import METRIC_KEYS, multilabel_metrics
from .run import claim_run_folder, sweep_model
from .sweep import HeadKind

COLUMNS = ("mAP", "AP small", "AP large", "mAP hard", "mean α", "params", "extra params", "extra MACs", "lr",
           "wd", "step", "train s")


def candidates(taps: list[int], mixes=MIXES, concat: bool = True) -> list[HeadKind]:
    """LP, then per tap RM in each mix and concat."""
    kinds = [HeadKind("lp")]
    for tap in taps:
        kinds += [HeadKind("rm", tap, mix) for mix in mixes] + ([HeadKind("concat", tap)] if concat else [])
    return kinds


def head_cost(cfg: ModelConfig) -> dict[str, int]:
    """The head's parameters and multiply-accumulates per image (one per weight of its linear maps,
    plus the adds that pool the tap's map), built on the meta device."""
    with torch.device("meta"):
        model = build_model(cfg, load_weights=False)
    params = sum(p.numel() for p in model.head.parameters())
    macs = sum(p.numel() for name, p in model.head.named_parameters() if name.endswith("weight"))
    if getattr(model.head, "uses_tap", False):
        stage = stage_modules(model.backbone.model)[cfg.tap - 1]
        side = cfg.image_size // stage["reduction"]
        macs += side * side * int(stage["num_chs"])
    return {"params": params, "macs": macs}


@dataclass
class Selection:
    """What ``select`` returns: every candidate's row, the winner's name and checkpoint, the table."""

    rows: dict[str, dict]
    winner: str
    checkpoint: Path
    text: str
    seconds: float


def kind_config(base: ModelConfig, kind: HeadKind) -> ModelConfig:
    return replace(base, method=kind.method, tap=kind.tap or base.tap, mix=kind.mix or base.mix)


def slug(kind: HeadKind) -> str:
    return kind.name.replace("@", "").replace(" ", "-").lower()


def select(base: ModelConfig, tcfg: TrainConfig, train_ds, val_ds, out: str | Path, cache: str | Path | None = None,
           taps: list[int] | None = None, mixes=MIXES, concat: bool = True, progress: bool = True,
           overwrite: bool = False) -> Selection:
    """Sweep every candidate head from one cache and keep the best by validation mAP as ``OUT/best``;
    ``OUT/selection.json`` and ``OUT/selection.md`` hold the table. ``taps`` None: every tap. Under
    torchrun the ranks share the extraction and rank 0 sweeps."""
    if list(val_ds.classes) != list(train_ds.classes):
        raise LayoverError("the training and validation splits have different class lists")
    out = Path(out)
    cache = Path(cache) if cache else out / "features"
    base = resolve_config(replace(base, method="lp"))
    with torch.device("meta"):  # the stages, before any extraction: no weights, no memory
        stages = build_backbone(base, taps=None, load_weights=False).taps
    unknown = sorted(set(taps or []) - set(stages))
    if unknown:
        raise LayoverError(f"taps {unknown} are not stages of {base.backbone} (it has {stages})")
    with exclusive(out, "run folder") if distributed.is_main() else nullcontext():
        claim_run_folder(out, False, overwrite)
        train = cached_split(base, train_ds, "train", cache, tcfg, progress)
        val = cached_split(base, val_ds, "val", cache, tcfg, progress)
        kinds = candidates(taps or stages, mixes, concat)
        result = None
        if distributed.is_main():
            result = sweep_all(base, tcfg, train_ds, val_ds, train, val, out, kinds, progress)
    return distributed.all_gather_objects(result)[0]


def sweep_all(base: ModelConfig, tcfg: TrainConfig, train_ds, val_ds, train, val, out: Path, kinds: list[HeadKind],
              progress: bool) -> Selection:
    t0 = time.perf_counter()
    rows, lp_cost, features = {}, None, {}
    val_rows = np.flatnonzero(val.valid)  # cached rows -> data set index
    bar = tqdm(kinds, desc="select", unit="head", disable=not progress)
    for kind in bar:
        bar.set_postfix_str(kind.name)
        if kind.tap not in features:  # one read of each tap's features for every head kind of that tap
            features = {kind.tap: (train.tensors(kind.tap), val.tensors(kind.tap))}
        cfg = kind_config(base, kind)
        r, model = sweep_model(cfg, tcfg, *features[kind.tap], progress=False)
        vy = features[kind.tap][1][2]
        path = save_checkpoint(model, cfg, out / "candidates" / slug(kind), extra={
            "metrics": {"mAP": r.val_mAP}, "train": tcfg.to_dict(),
            "sweep": {"lr": r.lr, "weight_decay": r.weight_decay, "step": r.step}})
        m = multilabel_metrics(r.scores, vy.numpy())
        sizes = size_metrics(val_ds, r.scores, val_rows, vy.numpy())
        cost = head_cost(cfg)
        lp_cost = lp_cost or cost
        rows[kind.name] = {
            **{k: m[k] for k in METRIC_KEYS}, "AP small": sizes.get("AP_small"), "AP large": sizes.get("AP_large"),
            "mAP hard": sizes.get("mAP_hard"), "hard images": sizes.get("hard_images"),
            "mean α": None if r.alpha is None else round(float(r.alpha.mean()), 3),
            "params": cost["params"], "extra params": cost["params"] - lp_cost["params"],
            "extra MACs": cost["macs"] - lp_cost["macs"], "lr": r.lr, "wd": r.weight_decay, "step": r.step,
            "steps": r.steps, "steps run": r.steps_run, "train s": round(r.seconds, 2), "checkpoint": str(path),
            "grid": r.grid}
    # the best validation mAP; a tie goes to the cheaper head
    winner = max(rows, key=lambda n: (round(rows[n]["mAP"], 6), -rows[n]["params"]))
    model, cfg = load_checkpoint(rows[winner]["checkpoint"])
    checkpoint = save_checkpoint(model, cfg, out / "best", extra={"selected": winner,
                                                                  "metrics": {"mAP": rows[winner]["mAP"]}})
    seconds = time.perf_counter() - t0
    text = selection_text(rows, winner, checkpoint, seconds, tcfg, len(train_ds), len(val_ds))
    write_json(out / "selection.json", {"winner": winner, "checkpoint": str(checkpoint), "seconds": round(seconds, 2),
                                        "train": tcfg.to_dict(), "rows": rows})
    write_text(out / "selection.md", text + "\n")
    return Selection(rows, winner, checkpoint, text, seconds)


def selection_text(rows: dict, winner: str, checkpoint: Path, seconds: float, tcfg: TrainConfig, n_train: int,
                   n_val: int) -> str:
    shown = {name + (" ← best" if name == winner else ""): r | {
        "mean α": "–" if r["mean α"] is None else f"{r['mean α']:.3g}", "lr": f"{r['lr']:g}", "wd": f"{r['wd']:g}",
        "step": f"{r['step']}/{r['steps']}", "params": f"{r['params']:,}", "extra params": f"{r['extra params']:,}",
        "extra MACs": f"{r['extra MACs']:,}"} for name, r in rows.items()}
    columns = [c for c in COLUMNS if any(r.get(c) is not None for r in rows.values())]
    lp = rows["LP"]["mAP"]
    return (f"Model selection: {len(rows)} heads × {len(tcfg.sweep_lrs) * len(tcfg.sweep_weight_decays)} grid points "
            f"from one feature cache ({n_train} training, {n_val} validation images), {seconds:.1f} s. Validation mAP "
            f"chose {winner} ({rows[winner]['mAP']:.2f}; LP {lp:.2f}); the table's metrics are on the validation split "
            f"that chose them, so they are optimistic: measure the winner on held-out images.\n\n"
            f"{format_table(shown, columns, first='head')}\n\nbest/ = {winner} ({checkpoint}); every row's checkpoint "
            f"is in candidates/. extra params / MACs: over LP, per image (MACs include pooling the tap).")
