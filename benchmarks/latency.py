"""LP vs RM vs FT latency across backends: the same benchmark as ``layover-edge bench``.

    python benchmarks/latency.py --backbone resnetv2_50x3_bit.goog_in21k --image-size 448 \
        --weights none --device cuda --batches 1 16 --modes eager graph --out runs/latency-bit

or, on your own files (checkpoints, ONNX files, engines; torch-free for the last two):

    python benchmarks/latency.py lp/model.onnx rm/model.onnx ft/model.onnx --batches 1 8 --out runs/latency-files

Writes OUT/bench.json, OUT/bench.md (the table) and OUT/bench.png. ``--help`` lists every option.
"""
import sys

from layover_edge.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
