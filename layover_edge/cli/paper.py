"""Verbs for the paper's experiments: paper (Tables 1-4) and cam (Figure 2)."""
from __future__ import annotations

from layover_edge.core.config import MIXES, RECIPES

from .common import (
    DEVICE,
    MIX_HELP,
    NONNEGATIVE,
    POSITIVE,
    WEIGHTS_HELP,
    T,
    add_data_args,
    add_run_args,
    add_transform_args,
    dataset,
    emit,
)


def cmd_paper(args) -> int:
    from layover_edge.apps.paper import PaperConfig, run_paper, tables_markdown
    from layover_edge.core import distributed
    weights = args.weights * len(args.backbones) if len(args.weights) == 1 else args.weights
    pc = PaperConfig(backbones=args.backbones, weights=weights, taps=tuple(args.taps), mixes=tuple(args.mixes),
                     concat=args.concat, recipe=args.recipe, epochs=args.epochs,
                     ft_epochs=args.ft_epochs, image_size=args.image_size,
                     mean=tuple(args.mean) if args.mean else None, std=tuple(args.std) if args.std else None,
                     interpolation=args.interpolation, batch_size=args.batch_size, num_workers=args.workers,
                     seed=args.seed, device=args.device, top_alpha=args.top_alpha, gallery=args.gallery)
    with distributed.session():
        results = run_paper(pc, dataset(args, "train"), dataset(args, "val"), args.out, args.data,
                            progress=not args.quiet)
        if distributed.is_main():
            emit(args, results, tables_markdown(results, args.top_alpha) + f"\n(written to {args.out}/tables.md)")
    return 0


def cmd_cam(args) -> int:
    from layover_edge.apps.cam import cam_figure
    result = cam_figure(args.checkpoint, args.images, args.class_name, args.out, args.device)
    emit(args, result, f"EigenCAM grid ({len(args.images)} image(s) x {result['stages']} stages) -> {result['png']}")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("paper", help="the paper's experiments: LP, RM@k, FT per backbone and Tables 1-4",
                       description="For each backbone: extract features once, train LP and RM at every tap from "
                                   "the cache and FT from images, evaluate the best epochs, and write Tables 1-4, "
                                   "the hard-instance gallery and EigenCAM maps into OUT (results.json, tables.md).")
    g = p.add_argument_group("model")
    g.add_argument("--backbones", nargs="+", required=True, metavar="NAME",
                   help="timm model names, e.g. resnetv2_101x3_bit.goog_in21k swin_base_patch4_window12_384.ms_in22k")
    g.add_argument("--weights", nargs="+", default=["pretrained"], metavar="W",
                   help="one for all backbones, or one each: " + WEIGHTS_HELP.replace("%(default)s", "pretrained"))
    g.add_argument("--taps", type=POSITIVE, nargs="+", default=[1, 2, 3], help="RM taps @k (default: 1 2 3)")
    g.add_argument("--mixes", nargs="+", choices=MIXES, default=list(MIXES), metavar="MIX",
                   help="RM at every tap in each of these mixes; the first is Table 1's RM and FT's. "
                        + MIX_HELP.replace(" (default: %(default)s)", "") + f" (default: {' '.join(MIXES)})")
    g.add_argument("--concat", action="store_true",
                   help="also the one-tap concat baseline (a linear head on z and the standardised pooled tap) "
                        "at every tap")
    g.add_argument("--image-size", type=POSITIVE, default=None,
                   help="input resolution (default: 448 for BiT, else the backbone's pretrained config)")
    add_data_args(p)
    add_transform_args(p)
    g = p.add_argument_group("training")
    g.add_argument("--out", required=True, help="output directory: tables.md, results.json, runs/, features/, PNGs")
    g.add_argument("--recipe", choices=RECIPES, default=T.recipe,
                   help="sweep: every head swept over the lr x weight-decay grid from the cache, FT for the same "
                        "steps; paper: the paper's appendix A.2 exactly (30 OneCycle epochs), to reproduce its "
                        "tables (default: %(default)s)")
    g.add_argument("--epochs", type=POSITIVE, default=T.epochs,
                   help="--recipe paper: LP and RM epochs (default: %(default)s)")
    g.add_argument("--ft-epochs", type=NONNEGATIVE, default=T.epochs,
                   help="FT epochs (--recipe sweep: at most); 0 skips FT (default: %(default)s)")
    g.add_argument("--seed", type=int, default=T.seed, help="seed for head init and shuffling (default: %(default)s)")
    g.add_argument("--top-alpha", type=POSITIVE, default=8, help="classes in Table 3 (default: %(default)s)")
    g.add_argument("--gallery", type=NONNEGATIVE, default=12, help="hard instances in the gallery (default: %(default)s)")
    add_run_args(p)
    p.set_defaults(func=cmd_paper)

    p = sub.add_parser("cam", help="EigenCAM activation maps at every backbone stage (the paper's Figure 2)",
                       description="Save a PNG grid: one row per image, the image and the EigenCAM map of each "
                                   "stage @1..@n of the checkpoint's backbone, captioned with the class score.")
    p.add_argument("checkpoint", help="checkpoint directory (config.json + safetensors)")
    p.add_argument("--image", dest="images", nargs="+", required=True, metavar="PATH", help="image file(s)")
    p.add_argument("--class", dest="class_name", required=True, help="class name whose score captions each row")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--device", type=DEVICE, default="auto", help="cpu, cuda, ... (default: auto)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a line of text")
    p.set_defaults(func=cmd_cam)
