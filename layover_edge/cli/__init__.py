"""The ``layover-edge`` command: one verb per job, each with --help, --json and a summary table.

Verbs live beside this file by subject (train.py, paper.py, deploy.py, edge.py); each module
registers its own with ``add_parsers``. Every verb parses its arguments, makes one library call
(the same one the Python API makes) and prints a table or JSON.
"""
from __future__ import annotations

import argparse
import logging
import sys

from layover_edge.core.errors import LayoverError

from . import deploy, edge, paper, serve, train


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="layover-edge", description=(
        "Layover early-exit multi-label tagging: train LP / RM / FT on frozen timm backbones, export to "
        "ONNX and TensorRT, check parity, tag images and streams, benchmark latency."))
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verbs in (train, paper, deploy, edge, serve):
        verbs.add_parsers(sub)
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
