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


def add_data_args(p: argparse.ArgumentParser, splits: bool = True) -> None:
    from .data import DATASETS
    g = p.add_argument_group("data")
    g.add_argument("--data", default="synthetic", choices=sorted(DATASETS),
                   help="data set: synthetic (generated, no files), coco2014 / coco2017 (instances JSON), voc2007 "
                        "(XML or ImageSets), folder (your images + a CSV / JSON-lines label file) "
                        "(default: %(default)s)")
    g.add_argument("--data-root", default=None,
                   help="data set directory: COCO root with annotations/ and train2014/..; VOCdevkit (or VOC2007); "
                        "a folder with train.csv / val.jsonl / labels.csv (+ optional classes.txt)")
    if splits:
        g.add_argument("--train-split", default=None,
                       help="split to train on (default: train; trainval for voc2007)")
        g.add_argument("--val-split", default=None,
                       help="split to validate on (default: val; test for voc2007)")
    g.add_argument("--empty-images", choices=("auto", "drop", "keep"), default="auto",
                   help="COCO images without annotations: auto drops them from the train split (ML-GCN / ASL) "
                        "and keeps them as all-negative elsewhere; drop everywhere reproduces ML-GCN / ASL "
                        "evaluation exactly (default: %(default)s)")
    g.add_argument("--voc-source", choices=("auto", "xml", "imagesets"), default="auto",
                   help="VOC labels from Annotations/*.xml or ImageSets/Main/<class>_<split>.txt "
                        "(default: %(default)s: XML where present)")
    g.add_argument("--missing", choices=("error", "skip"), default="error",
                   help="listed images whose file does not exist: stop with an error, or skip and list them "
                        "with the unreadable ones (default: %(default)s)")
    g.add_argument("--train-size", type=int, default=2000, help="synthetic: training images (default: %(default)s)")
    g.add_argument("--val-size", type=int, default=1000, help="synthetic: validation images (default: %(default)s)")
    g.add_argument("--num-classes", type=int, default=10, help="synthetic: number of classes (default: %(default)s)")
    g.add_argument("--data-image-size", type=int, default=96,
                   help="synthetic: side of the generated images in pixels (default: %(default)s)")
    g.add_argument("--data-seed", type=int, default=0, help="synthetic: generator seed (default: %(default)s)")


def add_transform_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("transform (default: the backbone's timm pretrained config, at the paper's 448 px "
                             "for BiT)")
    g.add_argument("--mean", type=float, nargs=3, default=None, metavar=("R", "G", "B"),
                   help="normalisation mean, e.g. 0.485 0.456 0.406 (ImageNet, as the official code used)")
    g.add_argument("--std", type=float, nargs=3, default=None, metavar=("R", "G", "B"),
                   help="normalisation std, e.g. 0.229 0.224 0.225")
    g.add_argument("--interpolation", choices=("bilinear", "bicubic", "nearest"), default=None,
                   help="resize interpolation (default: the pretrained config's)")


def add_run_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available, else cpu)")
    g.add_argument("--batch-size", type=int, default=T.batch_size, help="batch size (default: %(default)s)")
    g.add_argument("--workers", type=int, default=0, help="data loader worker processes (default: %(default)s)")
    g.add_argument("--json", action="store_true", help="print the result as JSON on stdout instead of a table")
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def split_name(args, role: str) -> str:
    """The split for ``role`` ("train" or "val"): --train-split / --val-split / --split, else the data set's default."""
    from .data import default_splits
    given = getattr(args, f"{role}_split", None) or getattr(args, "split", None)
    return given or default_splits(args.data)[0 if role == "train" else 1]


def dataset(args, split: str):
    from .data import build_dataset
    if args.data == "synthetic":
        size = args.train_size if split == "train" else args.val_size
        return build_dataset("synthetic", split, num_images=size, image_size=args.data_image_size,
                             num_classes=args.num_classes, seed=args.data_seed)
    options: dict = {"missing": args.missing}
    if args.data.startswith("coco"):
        options["drop_empty"] = {"auto": None, "drop": True, "keep": False}[args.empty_images]
    if args.data == "voc2007":
        options["source"] = args.voc_source
    return build_dataset(args.data, split, root=args.data_root, **options)


def model_config(args, ds, **fields) -> ModelConfig:
    """ModelConfig for ``ds`` with the transform options (paper resolution for BiT unless --image-size)."""
    from .data import paper_image_size
    return ModelConfig(backbone=args.backbone, weights=args.weights, image_size=args.image_size or
                       paper_image_size(args.backbone), mean=tuple(args.mean) if args.mean else None,
                       std=tuple(args.std) if args.std else None, interpolation=args.interpolation,
                       num_classes=len(ds.classes), labels=list(ds.classes), **fields)


def unreadable_text(skipped: dict[str, list[dict]], where: str = "") -> str:
    """The unreadable images of each split, listed (never silently dropped)."""
    lines = []
    for split, items in skipped.items():
        if items:
            lines.append(f"\n{len(items)} unreadable image(s) skipped in {split}:")
            lines += [f"  {s.get('path', '#' + str(s['index']))}: {s['reason']}" for s in items[:50]]
            if len(items) > 50:
                lines.append(f"  ... and {len(items) - 50} more{where}")
    return "\n".join(lines)


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
    from . import distributed
    from .features import extract_features
    from .train import resolve_device
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


def cmd_train(args) -> int:
    from . import distributed
    from .io import write_json
    from .metrics import format_table
    from .pipeline import train_run
    with distributed.session():
        train_ds, val_ds = dataset(args, split_name(args, "train")), dataset(args, split_name(args, "val"))
        if list(val_ds.classes) != list(train_ds.classes):
            raise LayoverError("the training and validation splits have different class lists")
        cfg = model_config(args, train_ds, method=args.method, tap=args.tap, rs=args.rs)
        out = Path(args.out)
        cache = Path(args.cache) if args.cache else out / "features"
        result, _ = train_run(cfg, train_config(args), train_ds, val_ds, out, cache, args.resume, not args.quiet)
        summary = {"checkpoint": str(result.checkpoint), "best_epoch": result.best_epoch, "best": result.best,
                   "train_seconds": round(result.seconds, 3), "history": result.history,
                   "processes": distributed.world_size(), "unreadable": result.skipped}
        if distributed.is_main():
            write_json(out / "unreadable.json", result.skipped)
            name = f"{args.method.upper()}" + (f"@{args.tap}" if args.method != "lp" else "")
            emit(args, summary, f"best epoch {result.best_epoch}/{args.epochs}, {result.seconds:.1f} s of training; "
                                f"checkpoint {result.checkpoint}\n\n{format_table({name: result.best})}"
                                + unreadable_text(result.skipped, f" (all in {out / 'unreadable.json'})"))
    return 0


def cmd_eval(args) -> int:
    from . import distributed
    from .checkpoint import load_checkpoint
    from .data import skipped_report
    from .metrics import format_table, multilabel_metrics
    from .pipeline import image_batches
    from .train import predict, resolve_device
    with distributed.session():
        device = resolve_device(args.device)
        model, cfg = load_checkpoint(args.checkpoint, device)
        split = split_name(args, "val")
        ds = dataset(args, split)
        if list(ds.classes) != cfg.labels:
            raise LayoverError(f"the data set's classes do not match the checkpoint's labels "
                               f"({len(ds.classes)} vs {len(cfg.labels)} classes)")
        batches = image_batches(cfg, ds, args.batch_size, shuffle=False, num_workers=args.workers)
        pred = predict(model, batches, device)
        thresholds = args.threshold if args.threshold is not None else (cfg.thresholds or 0.5)
        m = multilabel_metrics(pred["scores"].numpy(), pred["targets"].numpy(), thresholds)
        m["unreadable"] = skipped_report(ds, distributed.gather_skipped(batches.skipped))
        m["per_class"] = dict(zip(cfg.labels, m["AP"]))
        if distributed.is_main():
            emit(args, m, f"{args.checkpoint} on {args.data}/{split}: {m['num_images']} images, "
                          f"{len(m['unreadable'])} unreadable\n\n{format_table({cfg.method.upper(): m})}"
                          + unreadable_text({split: m["unreadable"]}))
    return 0


def cmd_paper(args) -> int:
    from . import distributed
    from .paper import PaperConfig, run_paper, tables_markdown
    weights = args.weights * len(args.backbones) if len(args.weights) == 1 else args.weights
    pc = PaperConfig(backbones=args.backbones, weights=weights, taps=tuple(args.taps), epochs=args.epochs,
                     ft_epochs=args.ft_epochs, image_size=args.image_size,
                     mean=tuple(args.mean) if args.mean else None, std=tuple(args.std) if args.std else None,
                     interpolation=args.interpolation, batch_size=args.batch_size, num_workers=args.workers,
                     seed=args.seed, device=args.device, top_alpha=args.top_alpha, gallery=args.gallery)
    with distributed.session():
        train_ds, val_ds = dataset(args, split_name(args, "train")), dataset(args, split_name(args, "val"))
        if list(val_ds.classes) != list(train_ds.classes):
            raise LayoverError("the training and validation splits have different class lists")
        results = run_paper(pc, train_ds, val_ds, args.out, args.data, progress=not args.quiet)
        if distributed.is_main():
            emit(args, results, tables_markdown(results, args.top_alpha) + f"\n(written to {args.out}/tables.md)")
    return 0


def cmd_cam(args) -> int:
    from PIL import Image
    from .cam import save_cam_grid
    from .checkpoint import load_checkpoint
    from .models import stage_modules
    from .train import resolve_device
    model, cfg = load_checkpoint(args.checkpoint, resolve_device(args.device))
    if args.class_name not in cfg.labels:
        raise LayoverError(f"class {args.class_name!r} is not among the checkpoint's {len(cfg.labels)} labels")
    images = []
    for path in args.images:
        try:
            with Image.open(path) as im:
                images.append(im.convert("RGB"))
        except OSError as e:
            raise LayoverError(f"cannot read image {path}: {e}") from None
    out = save_cam_grid(model, cfg, images, cfg.labels.index(args.class_name), args.out,
                        titles=[Path(p).name for p in args.images])
    emit(args, {"png": str(out), "class": args.class_name, "images": args.images},
         f"EigenCAM grid ({len(images)} image(s) x {len(stage_modules(model.backbone.model))} stages) -> {out}")
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

    p = sub.add_parser("paper", help="the paper's experiments: LP, RM@k, FT per backbone and Tables 1-4",
                       description="For each backbone: extract features once, train LP and RM at every tap from "
                                   "the cache and FT from images, evaluate the best epochs, and write Tables 1-4, "
                                   "the hard-instance gallery and EigenCAM maps into OUT (results.json, tables.md).")
    g = p.add_argument_group("model")
    g.add_argument("--backbones", nargs="+", required=True, metavar="NAME",
                   help="timm model names, e.g. resnetv2_101x3_bit.goog_in21k swin_base_patch4_window12_384.ms_in22k")
    g.add_argument("--weights", nargs="+", default=["pretrained"], metavar="W",
                   help="'pretrained', 'none' or a checkpoint path: one for all backbones, or one each "
                        "(default: pretrained)")
    g.add_argument("--taps", type=int, nargs="+", default=[1, 2, 3], help="RM taps @k (default: 1 2 3)")
    g.add_argument("--image-size", type=int, default=None,
                   help="input resolution (default: 448 for BiT, else the backbone's pretrained config)")
    add_data_args(p)
    add_transform_args(p)
    g = p.add_argument_group("training")
    g.add_argument("--out", required=True, help="output directory: tables.md, results.json, runs/, features/, PNGs")
    g.add_argument("--epochs", type=int, default=T.epochs, help="LP and RM epochs (default: %(default)s)")
    g.add_argument("--ft-epochs", type=int, default=T.epochs, help="FT epochs; 0 skips FT (default: %(default)s)")
    g.add_argument("--seed", type=int, default=T.seed, help="seed for head init and shuffling (default: %(default)s)")
    g.add_argument("--top-alpha", type=int, default=8, help="classes in Table 3 (default: %(default)s)")
    g.add_argument("--gallery", type=int, default=12, help="hard instances in the gallery (default: %(default)s)")
    add_run_args(p)
    p.set_defaults(func=cmd_paper)

    p = sub.add_parser("cam", help="EigenCAM activation maps at every backbone stage (the paper's Figure 2)",
                       description="Save a PNG grid: one row per image, the image and the EigenCAM map of each "
                                   "stage @1..@n of the checkpoint's backbone, captioned with the class score.")
    p.add_argument("checkpoint", help="checkpoint directory (config.json + safetensors)")
    p.add_argument("--image", dest="images", nargs="+", required=True, metavar="PATH", help="image file(s)")
    p.add_argument("--class", dest="class_name", required=True, help="class name whose score captions each row")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--device", default="auto", help="cpu, cuda, ... (default: auto)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a line of text")
    p.set_defaults(func=cmd_cam)

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
    from .export.cli import add_parsers as add_export_parsers
    add_export_parsers(sub)
    from .cli_edge import add_parsers as add_edge_parsers
    add_edge_parsers(sub)
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
