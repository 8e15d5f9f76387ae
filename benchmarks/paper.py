"""Reproduce the paper's Tables 1-4 on MS-COCO 2014 and Pascal VOC 2007 with its four backbones.

    python benchmarks/paper.py --coco /data/coco --voc /data/VOCdevkit --out runs/paper
    torchrun --nproc-per-node 8 benchmarks/paper.py --coco /data/coco --voc /data/VOCdevkit --out runs/paper

Each data set runs ``layover-edge paper`` once with the paper's settings (appendix A.2: 30
epochs, OneCycle max lr 0.1, 0.01 for the fine-tuned backbone; 448 px for BiT, 384 for Swin;
RM at taps @1-@3 in the paper's mix, eq. 5-6, which Table 1 and FT then use, and in the default
residual mix beside it). Extra arguments go to every run (e.g. ``--ft-epochs 0`` to skip FT, or
``--mean 0.485 0.456 0.406 --std 0.229 0.224 0.225`` for the official code's normalisation).
Needs the timm weights in the hub cache (or network) and about 3 GB of feature cache per
backbone for COCO. Prints nothing but the commands it runs and the tables.
"""
from __future__ import annotations

import argparse
import sys

from layover_edge import cli

BACKBONES = {  # the paper's Table 2 columns per data set
    "coco2014": ["resnetv2_101x3_bit.goog_in21k", "resnetv2_50x3_bit.goog_in21k",
                 "swin_base_patch4_window12_384.ms_in22k", "swin_large_patch4_window12_384.ms_in22k"],
    "voc2007": ["resnetv2_50x3_bit.goog_in21k", "swin_base_patch4_window12_384.ms_in22k"],
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--coco", help="COCO root (annotations/instances_*2014.json, train2014/, val2014/)")
    p.add_argument("--voc", help="VOCdevkit (or VOC2007) directory with trainval and test")
    p.add_argument("--out", required=True, help="output root: OUT/coco2014, OUT/voc2007")
    args, extra = p.parse_known_args(argv)
    roots = {"coco2014": args.coco, "voc2007": args.voc}
    if not any(roots.values()):
        p.error("give --coco and/or --voc")
    for data, root in roots.items():
        if root:
            cmd = ["paper", "--data", data, "--data-root", root, "--backbones", *BACKBONES[data],
                   "--taps", "1", "2", "3", "--recipe", "paper", "--mixes", "paper", "residual", "--out", f"{args.out}/{data}", *extra]
            print("layover-edge " + " ".join(cmd), file=sys.stderr)
            if cli.main(cmd):
                return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
