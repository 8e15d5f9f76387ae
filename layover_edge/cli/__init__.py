"""The ``layover-edge`` command: one verb per job, each with --help, --json and a summary table.

Verbs live beside this file by subject (train.py, paper.py, deploy.py, edge.py); each module
registers its own with ``add_parsers``. Every verb parses its arguments, makes one library call
(the same one the Python API makes) and prints a table or JSON.
"""
from __future__ import annotations

import argparse
import errno
import logging
import os
import sys

from layover_edge.core.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    LayoverError,
    os_error_text,
    os_exit_code,
)

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
        code = args.func(args)
        sys.stdout.flush()  # a full disk behind stdout fails here, inside the handlers below
        return code
    except LayoverError as e:  # 2; 3 for a path that does not exist (NotFound); 5 for a failed server
        return _fail(args.verb, str(e), e.exit_code)
    except BrokenPipeError:  # `layover-edge tag ... | head`: the reader left; say so once, quietly exit
        _drop_stdout()
        return _fail(args.verb, "broken pipe: the program reading the output closed it", EXIT_BROKEN_PIPE)
    except OSError as e:  # the one place where disk full, read-only, missing and wrong-kind paths end up
        try:
            sys.stdout.flush()
        except OSError:
            _drop_stdout()
        if e.errno == errno.EPIPE:
            return _fail(args.verb, "broken pipe: the program reading the output closed it", EXIT_BROKEN_PIPE)
        return _fail(args.verb, os_error_text(e), os_exit_code(e))
    except KeyboardInterrupt:
        print(f"layover-edge {args.verb}: interrupted (train and features resume where they stopped)",
              file=sys.stderr)
        return EXIT_INTERRUPTED


def _drop_stdout() -> None:
    """Point a stdout that cannot be written at /dev/null, so the interpreter's flush at exit does not
    print a second error (and exit 120) after ours."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _fail(verb: str, message: str, code: int) -> int:
    print(f"layover-edge {verb}: error: {message}", file=sys.stderr)
    return code
