"""The ``layover-edge`` command: one verb per job, each with --help, --json and a summary table."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .config import METHODS, ModelConfig, TrainConfig
from .errors import LayoverError
from .io import json_safe
from .models import RS_VARIANTS

T = TrainConfig()


def add_model_args(p: argparse.ArgumentParser, method: bool = True) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--backbone", required=True, help="timm model name, e.g. resnetv2_50x3_bit.goog_in21k")
    g.add_argument("--weights", default="pretrained",
                   help="'pretrained' (timm's weights, from its hub cache), 'none' (random init) or a path "
                        "to a .safetensors / torch checkpoint of the backbone (default: %(default)s)")
    if method:
        g.add_argument("--method", choices=METHODS, default="rm",
                       help="lp: linear probe; rm: the Layover head; ft: fine-tune everything (default: %(default)s)")
        g.add_argument("--tap", type=int, default=1,
                       help="stage whose output feeds the RM branch, the paper's @k (default: %(default)s)")
        g.add_argument("--rs", choices=RS_VARIANTS, default="linear",
                       help="representation summarisation: linear (pool, Linear, sigmoid) or pool1d "
                            "(the paper's eq. 3, parameter-free) (default: %(default)s)")
    g.add_argument("--image-size", type=int, default=None,
                   help="input resolution in pixels (default: the backbone's pretrained config)")


def add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", default="synthetic", help="data set name (default: %(default)s)")
    g.add_argument("--data-root", default=None, help="data set directory, for data sets read from disk")
    g.add_argument("--train-size", type=int, default=2000, help="synthetic: training images (default: %(default)s)")
    g.add_argument("--val-size", type=int, default=1000, help="synthetic: validation images (default: %(default)s)")
    g.add_argument("--num-classes", type=int, default=10, help="synthetic: number of classes (default: %(default)s)")
    g.add_argument("--data-image-size", type=int, default=96,
                   help="synthetic: side of the generated images in pixels (default: %(default)s)")
    g.add_argument("--data-seed", type=int, default=0, help="synthetic: generator seed (default: %(default)s)")


def add_run_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available, else cpu)")
    g.add_argument("--batch-size", type=int, default=T.batch_size, help="batch size (default: %(default)s)")
    g.add_argument("--workers", type=int, default=0, help="data loader worker processes (default: %(default)s)")
    g.add_argument("--json", action="store_true", help="print the result as JSON on stdout instead of a table")
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def dataset(args, split: str):
    from .data import build_dataset
    if args.data == "synthetic":
        size = args.train_size if split == "train" else args.val_size
        return build_dataset("synthetic", split, num_images=size, image_size=args.data_image_size,
                             num_classes=args.num_classes, seed=args.data_seed)
    return build_dataset(args.data, split, root=args.data_root)


def emit(args, result: dict, text: str) -> None:
    print(json.dumps(json_safe(result), indent=2, allow_nan=False) if args.json else text)


def cmd_params(args) -> int:
    from .metrics import format_table
    from .models import count_params
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
    from .features import extract_features
    from .train import resolve_device
    ds = dataset(args, args.split)
    cfg = ModelConfig(backbone=args.backbone, weights=args.weights, method="lp", image_size=args.image_size,
                      num_classes=len(ds.classes), labels=list(ds.classes))
    cache = extract_features(cfg, ds, args.split, Path(args.cache) / args.split, args.batch_size,
                             str(resolve_device(args.device)), args.workers, progress=not args.quiet)
    m = cache.manifest
    emit(args, m, f"feature cache {Path(args.cache) / args.split}: {m['num_images']} images, taps "
                  f"{m['taps']}, {m.get('skipped', 0)} unreadable, {m.get('seconds', 0)} s")
    return 0


def train_config(args) -> TrainConfig:
    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, backbone_lr=args.backbone_lr,
                       weight_decay=args.weight_decay, num_workers=args.workers, seed=args.seed,
                       device=args.device, amp=not args.no_amp)


def cmd_train(args) -> int:
    from .metrics import format_table
    from .pipeline import train_run
    train_ds, val_ds = dataset(args, "train"), dataset(args, "val")
    labels = list(train_ds.classes)
    cfg = ModelConfig(backbone=args.backbone, weights=args.weights, method=args.method, tap=args.tap,
                      rs=args.rs, image_size=args.image_size, num_classes=len(labels), labels=labels)
    out = Path(args.out)
    cache = Path(args.cache) if args.cache else out / "features"
    result, _ = train_run(cfg, train_config(args), train_ds, val_ds, out, cache, args.resume, not args.quiet)
    summary = {"checkpoint": str(result.checkpoint), "best_epoch": result.best_epoch, "best": result.best,
               "train_seconds": round(result.seconds, 3), "history": result.history}
    name = f"{args.method.upper()}" + (f"@{args.tap}" if args.method != "lp" else "")
    emit(args, summary, f"best epoch {result.best_epoch}/{args.epochs}, {result.seconds:.1f} s of training; "
                        f"checkpoint {result.checkpoint}\n\n{format_table({name: result.best})}")
    return 0


def cmd_eval(args) -> int:
    from .checkpoint import load_checkpoint
    from .data import image_loader
    from .metrics import format_table, multilabel_metrics
    from .train import ImageBatches, predict, resolve_device
    device = resolve_device(args.device)
    model, cfg = load_checkpoint(args.checkpoint, device)
    ds = dataset(args, args.split)
    if list(ds.classes) != cfg.labels:
        raise LayoverError(f"the data set's classes do not match the checkpoint's labels "
                           f"({len(ds.classes)} vs {len(cfg.labels)} classes)")
    batches = ImageBatches(image_loader(ds, cfg, args.batch_size, num_workers=args.workers))
    pred = predict(model, batches, device)
    thresholds = args.threshold if args.threshold is not None else (cfg.thresholds or 0.5)
    m = multilabel_metrics(pred["scores"].numpy(), pred["targets"].numpy(), thresholds)
    m["unreadable"] = [{"index": i, "reason": r} for i, r in batches.skipped]
    m["per_class"] = dict(zip(cfg.labels, m["AP"]))
    emit(args, m, f"{args.checkpoint} on {args.data}/{args.split}: {m['num_images']} images, "
                  f"{len(batches.skipped)} unreadable\n\n{format_table({cfg.method.upper(): m})}")
    return 0


def cmd_demo(args) -> int:
    from .demo import DemoConfig, run_demo
    cfg = DemoConfig.quick() if args.quick else DemoConfig()
    result = run_demo(cfg, Path(args.out), progress=not args.quiet, device=args.device)
    emit(args, result, (Path(args.out) / "report.md").read_text())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="layover-edge", description=(
        "Layover early-exit multi-label tagging: LP / RM / FT on frozen timm backbones, "
        "feature cache, the paper's metrics."))
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

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
    add_data_args(p)
    p.add_argument("--split", default="train", help="split to extract (default: %(default)s)")
    p.add_argument("--cache", required=True, help="cache directory; the split goes into CACHE/SPLIT")
    add_run_args(p)
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("train", help="train LP, RM or FT and keep the best epoch",
                       description="Train with the paper's recipe; LP and RM train from the feature cache.")
    add_model_args(p)
    add_data_args(p)
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
    add_data_args(p)
    p.add_argument("--split", default="val", help="split to evaluate (default: %(default)s)")
    p.add_argument("--threshold", type=float, default=None,
                   help="probability threshold for CP..OF1 (default: the checkpoint's per-class thresholds, else 0.5)")
    add_run_args(p)
    p.set_defaults(func=cmd_eval)

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
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LayoverError as e:
        print(f"layover-edge {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"layover-edge {args.verb}: interrupted (train and features resume where they stopped)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
