"""Verbs for training and evaluation: params, features, train, eval, demo."""
from __future__ import annotations

from pathlib import Path

from ..config import METHODS, ModelConfig, TrainConfig
from ..errors import LayoverError
from ..models import RS_VARIANTS
from ..thresholds import OBJECTIVES
from .common import (T, add_data_args, add_model_args, add_run_args, add_transform_args, dataset, emit,
                     model_config, split_name, unreadable_text)


def cmd_params(args) -> int:
    from ..metrics import format_table
    from ..models import count_params
    methods = METHODS if args.method == "all" else (args.method,)
    rows = {m: count_params(ModelConfig(backbone=args.backbone, num_classes=args.num_classes, method=m,
                                        tap=args.tap, rs=args.rs)) for m in methods}
    table = format_table({m.upper(): {k: f"{v / 1e6:.3f}" for k, v in r.items()} for m, r in rows.items()},
                         columns=("trainable", "total", "backbone", "head"))
    emit(args, {"backbone": args.backbone, "tap": args.tap, "rs": args.rs, "num_classes": args.num_classes,
                "params": rows},
         f"Parameters (millions): {args.backbone}, tap @{args.tap}, rs={args.rs}, {args.num_classes} classes\n\n{table}")
    return 0


def cmd_features(args) -> int:
    from .. import distributed
    from ..features import extract_features
    from ..train import resolve_device
    split = split_name(args, "train")
    with distributed.session():
        ds = dataset(args, split)
        cfg = model_config(args, ds, method="lp")
        root = Path(args.cache) / split
        cache = extract_features(cfg, ds, split, root, args.batch_size, str(resolve_device(args.device)),
                                 args.workers, progress=not args.quiet)
        m = cache.manifest | {"unreadable": cache.skipped}
        if distributed.is_main():
            emit(args, m, f"feature cache {root}: {m['num_images']} images, taps {m['taps']}, "
                          f"{m.get('skipped', 0)} unreadable, {m.get('seconds', 0)} s"
                          + unreadable_text({split: cache.skipped}, f" (all in {root / 'skipped.json'})"))
    return 0


def train_config(args) -> TrainConfig:
    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, backbone_lr=args.backbone_lr,
                       weight_decay=args.weight_decay, num_workers=args.workers, seed=args.seed,
                       device=args.device, amp=not args.no_amp)


# Below this mean gate the RM branch contributes almost nothing: RM has collapsed to LP.
GATE_CLOSED = 0.05


def gate_warnings(best: dict) -> list[str]:
    alpha = best.get("alpha_mean")
    if alpha is None or alpha >= GATE_CLOSED:
        return []
    return [f"the gate α averages {alpha:.3f} at the best epoch: the RM branch is nearly switched off and RM "
            f"reduces to LP. Closing the gate is the quickest way down the loss while the branch is still "
            f"noise; another tap (--tap), learning rate (--lr) or more epochs may keep it open "
            f"(metrics.json has α per epoch)."]


def cmd_train(args) -> int:
    from .. import distributed
    from ..io import write_json
    from ..metrics import format_table
    from ..pipeline import train_run
    with distributed.session():
        train_ds, val_ds = dataset(args, split_name(args, "train")), dataset(args, split_name(args, "val"))
        if list(val_ds.classes) != list(train_ds.classes):
            raise LayoverError("the training and validation splits have different class lists")
        cfg = model_config(args, train_ds, method=args.method, tap=args.tap, rs=args.rs)
        out = Path(args.out)
        cache = Path(args.cache) if args.cache else out / "features"
        result, _ = train_run(cfg, train_config(args), train_ds, val_ds, out, cache, args.resume, not args.quiet)
        warnings = gate_warnings(result.best)
        summary = {"checkpoint": str(result.checkpoint), "best_epoch": result.best_epoch, "best": result.best,
                   "train_seconds": round(result.seconds, 3), "history": result.history,
                   "processes": distributed.world_size(), "unreadable": result.skipped, "warnings": warnings}
        if distributed.is_main():
            write_json(out / "unreadable.json", result.skipped)
            name = f"{args.method.upper()}" + (f"@{args.tap}" if args.method != "lp" else "")
            emit(args, summary, f"best epoch {result.best_epoch}/{args.epochs}, {result.seconds:.1f} s of training; "
                                f"checkpoint {result.checkpoint}\n\n{format_table({name: result.best})}"
                                + "".join(f"\nwarning: {w}" for w in warnings)
                                + unreadable_text(result.skipped, f" (all in {out / 'unreadable.json'})"))
    return 0


def _predict_split(args):
    """The checkpoint's scores on a split from images: (cfg, predictions, split, unreadable)."""
    from .. import distributed
    from ..checkpoint import load_checkpoint
    from ..data import skipped_report
    from ..pipeline import image_batches
    from ..train import predict, resolve_device
    device = resolve_device(args.device)
    model, cfg = load_checkpoint(args.checkpoint, device)
    split = split_name(args, "val")
    ds = dataset(args, split)
    if list(ds.classes) != cfg.labels:
        raise LayoverError(f"the data set's classes do not match the checkpoint's labels "
                           f"({len(ds.classes)} vs {len(cfg.labels)} classes)")
    batches = image_batches(cfg, ds, args.batch_size, shuffle=False, num_workers=args.workers)
    pred = predict(model, batches, device)
    return cfg, pred, split, skipped_report(ds, distributed.gather_skipped(batches.skipped))


def cmd_eval(args) -> int:
    from .. import distributed
    from ..metrics import format_table, multilabel_metrics
    with distributed.session():
        cfg, pred, split, unreadable = _predict_split(args)
        thresholds = args.threshold if args.threshold is not None else (cfg.thresholds or 0.5)
        m = multilabel_metrics(pred["scores"].numpy(), pred["targets"].numpy(), thresholds)
        m["unreadable"] = unreadable
        m["per_class"] = dict(zip(cfg.labels, m["AP"]))
        if distributed.is_main():
            emit(args, m, f"{args.checkpoint} on {args.data}/{split}: {m['num_images']} images, "
                          f"{len(m['unreadable'])} unreadable\n\n{format_table({cfg.method.upper(): m})}"
                          + unreadable_text({split: m["unreadable"]}))
    return 0


def cmd_thresholds(args) -> int:
    from dataclasses import asdict

    from .. import distributed
    from ..checkpoint import set_thresholds
    from ..metrics import format_table, multilabel_metrics
    from ..thresholds import plot_thresholds, tune_thresholds
    if not 0.0 < args.min_precision <= 1.0:
        raise LayoverError(f"--min-precision must be in (0, 1], got {args.min_precision}")
    with distributed.session():
        cfg, pred, split, unreadable = _predict_split(args)
        scores, targets = pred["scores"].numpy(), pred["targets"].numpy()
        tuned = tune_thresholds(scores, targets, args.objective, args.min_precision)
        values = [t.threshold for t in tuned]
        before = multilabel_metrics(scores, targets, cfg.thresholds or 0.5)
        after = multilabel_metrics(scores, targets, values)
        provenance = {"data": args.data, "split": split, "objective": args.objective,
                      "min_precision": args.min_precision if args.objective == "precision" else None,
                      "num_images": after["num_images"]}
        never = [label for label, t in zip(cfg.labels, tuned) if not t.reached]
        if args.write and distributed.is_main():
            set_thresholds(args.checkpoint, values, provenance)
        if args.plot and distributed.is_main():
            plot_thresholds(scores, targets, tuned, args.plot)
        result = provenance | {"checkpoint": str(args.checkpoint), "written": bool(args.write), "plot": args.plot,
                               "before": before, "after": after, "never_tagged": never, "unreadable": unreadable,
                               "per_class": {label: asdict(t) | {"AP": ap}
                                             for label, t, ap in zip(cfg.labels, tuned, after["AP"])}}
        if distributed.is_main():
            per_class = format_table(
                {label: {"positives": r["positives"], "AP": r["AP"], "threshold": f"{r['threshold']:.4f}",
                         "P": 100 * r["precision"], "R": 100 * r["recall"], "F1": 100 * r["f1"]}
                 for label, r in result["per_class"].items()},
                columns=("positives", "AP", "threshold", "P", "R", "F1"), first="class")
            summary = format_table({"before": before, "tuned": after}, first="thresholds")
            text = (f"{args.checkpoint} on {args.data}/{split}: {after['num_images']} images, objective "
                    f"{args.objective}\n\n{per_class}\n\n{summary}\n\n"
                    f"Both rows are measured on the split the thresholds were tuned on, so 'tuned' is optimistic; "
                    f"report metrics on another split.")
            if never:
                text += f"\nNo threshold reaches precision {args.min_precision} for: {', '.join(never)} (never tagged)."
            text += (f"\nWrote {len(values)} thresholds to {args.checkpoint}/config.json: tag, export and parity "
                     f"use them." if args.write else "\nNothing written (add --write to store them in the checkpoint).")
            emit(args, result, text + unreadable_text({split: unreadable}))
    return 0


def cmd_demo(args) -> int:
    from ..demo import DemoConfig, run_demo
    cfg = DemoConfig.quick() if args.quick else DemoConfig()
    result = run_demo(cfg, Path(args.out), progress=not args.quiet, device=args.device)
    emit(args, result, (Path(args.out) / "report.md").read_text())
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("params", help="trainable and total parameter counts (the paper's Table 1)",
                       description="Count parameters on the meta device: no weights are downloaded or allocated.")
    p.add_argument("--backbone", required=True, help="timm model name")
    p.add_argument("--method", choices=(*METHODS, "all"), default="all", help="method to count (default: %(default)s)")
    p.add_argument("--tap", type=int, default=1, help="RM tap, the paper's @k (default: %(default)s)")
    p.add_argument("--rs", choices=RS_VARIANTS, default="linear", help="RS variant (default: %(default)s)")
    p.add_argument("--num-classes", type=int, default=80, help="classes of the target task (default: %(default)s, COCO)")
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

    p = sub.add_parser("train", help="train LP, RM or FT and keep the best epoch",
                       description="Train with the paper's recipe; LP and RM train from the feature cache.")
    add_model_args(p)
    add_data_args(p)
    add_transform_args(p)
    g = p.add_argument_group("training")
    g.add_argument("--out", required=True, help="run directory: best/ checkpoint, metrics.json, last.pt")
    g.add_argument("--cache", default=None, help="feature cache directory (default: OUT/features)")
    g.add_argument("--epochs", type=int, default=T.epochs, help="epochs (default: %(default)s)")
    g.add_argument("--lr", type=float, default=T.lr, help="OneCycle max lr of the head (default: %(default)s)")
    g.add_argument("--backbone-lr", type=float, default=T.backbone_lr,
                   help="OneCycle max lr of the backbone when fine-tuning (default: %(default)s)")
    g.add_argument("--weight-decay", type=float, default=T.weight_decay, help="SGD weight decay (default: %(default)s)")
    g.add_argument("--seed", type=int, default=T.seed, help="seed for head init and shuffling (default: %(default)s)")
    g.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    g.add_argument("--resume", action="store_true", help="continue from OUT/last.pt after an interruption")
    add_run_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint on a split: mAP, CP, CR, CF1, OP, OR, OF1",
                       description="Evaluate a checkpoint from images.")
    p.add_argument("checkpoint", help="checkpoint directory (config.json + safetensors)")
    add_data_args(p, splits=False)
    p.add_argument("--split", default=None, help="split to evaluate (default: the data set's validation split)")
    p.add_argument("--threshold", type=float, default=None,
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

    p = sub.add_parser("demo", help="offline demo: pre-train a small backbone, then LP vs RM vs FT",
                       description="Fully offline on CPU: pre-train a small timm backbone on the synthetic source "
                                   "task, then LP, RM and FT on the synthetic hard-instance task; writes "
                                   "OUT/results.json, OUT/report.md and OUT/per_class_ap.png.")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--quick", action="store_true", help="a tiny run for smoke tests (seconds, not minutes)")
    p.add_argument("--device", default="auto", help="cpu, cuda, ... (default: auto)")
    p.add_argument("--json", action="store_true", help="print results.json instead of the report")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)
