"""The ``serve`` verb: the tagger behind Triton Inference Server. Registered by ``cli.build_parser``."""
from __future__ import annotations

import json
import sys
from dataclasses import fields
from functools import partial

from layover_edge.core import checks
from layover_edge.core.config import ServeConfig

from .common import NONNEGATIVE, POSITIVE, PROBABILITY, add_backend_args, arg_type

S = ServeConfig()
PORT = arg_type(partial(checks.integer, low=0, high=65535))


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "serve", help="serve a checkpoint, ONNX file or engine with NVIDIA Triton Inference Server (HTTP, gRPC)",
        description="Start Triton (through PyTriton) with two models: 'tagger' takes encoded images (BYTES: JPEG, "
                    "PNG, ...), decoded and preprocessed as `tag` does; 'tagger_tensor' takes preprocessed FP32 "
                    "(3, S, S) tensors. Both return probabilities, the labels and scores above threshold, and an "
                    "error text for a bad image. Dynamic batching; health, readiness and Prometheus metrics are "
                    "Triton's own (/v2/health/ready, METRICS_PORT/metrics). Serves until Ctrl-C or SIGTERM, then "
                    "shuts down cleanly. Needs the serve extra: pip install 'layover-edge[serve]'.")
    p.add_argument("model", metavar="MODEL",
                   help="checkpoint directory (PyTorch), .onnx file (ONNX Runtime) or .engine/.plan (TensorRT)")
    g = p.add_argument_group("network")
    g.add_argument("--host", default=S.host,
                   help="IPv4 address to listen on; 0.0.0.0 exposes the server to the network (default: %(default)s)")
    g.add_argument("--http-port", type=PORT, default=S.http_port,
                   help="HTTP port, 0-65535; 0 picks a free one (default: %(default)s)")
    g.add_argument("--grpc-port", type=PORT, default=S.grpc_port,
                   help="gRPC port; 0 picks a free one (default: %(default)s)")
    g.add_argument("--metrics-port", type=PORT, default=S.metrics_port,
                   help="Prometheus metrics port; 0 picks a free one (default: %(default)s)")
    g = p.add_argument_group("batching and limits")
    g.add_argument("--max-batch", type=POSITIVE, default=S.max_batch,
                   help="most images per model execution, gathered from concurrent requests (default: %(default)s)")
    g.add_argument("--max-queue-delay-us", type=NONNEGATIVE, default=S.max_queue_delay_us,
                   help="how long the dynamic batcher may hold a request to fill a batch, in microseconds "
                        "(default: %(default)s: batch only what is already queued)")
    g.add_argument("--max-request-mb", type=POSITIVE, default=S.max_request_mb,
                   help="refuse an HTTP request whose body is larger than this many MiB, before reading it "
                        "(default: %(default)s)")
    g.add_argument("--max-image-pixels", type=POSITIVE, default=S.max_image_pixels,
                   help="refuse an image with more pixels than this, before decoding it (default: %(default)s)")
    g = p.add_argument_group("tags")
    g.add_argument("--threshold", type=PROBABILITY, default=S.threshold,
                   help="one probability threshold for every class (default: the model's per-class thresholds, "
                        "else 0.5)")
    g.add_argument("--topk", type=NONNEGATIVE, default=S.topk,
                   help="return at most K labels per image, highest first; 0 returns all above threshold (default: 0)")
    add_backend_args(p)
    p.add_argument("--log-file", default=S.log_file,
                   help="tritonserver's own log (default: a new layover-edge-serve-PID-XXXX.log in the temporary "
                        "directory, created for this run alone)")
    p.add_argument("--json", action="store_true",
                   help="announce readiness as one JSON line on stdout (addresses, ports, model) instead of text")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    cfg = ServeConfig(**{f.name: getattr(args, f.name) for f in fields(ServeConfig)})  # before any heavy import
    from layover_edge.apps.serve import serve
    from layover_edge.runtime.factory import open_model
    backend = open_model(args.model, args.device, args.precision, args.mode)
    serve(backend, cfg, on_ready=lambda info: print(json.dumps(info) if args.json else ready_text(args.model, info),
                                                    flush=True))
    print("layover-edge serve: stopped", file=sys.stderr)
    return 0


def ready_text(model: str, info: dict) -> str:
    b = info["backend"]
    return (f"serving {model} ({b['backend']}, {b.get('device', 'cpu')}) as 'tagger' (encoded images) and "
            f"'tagger_tensor' (FP32 3x{info['image_size']}x{info['image_size']})\n"
            f"  HTTP {info['host']}:{info['http']}   gRPC {info['host']}:{info['grpc']}   "
            f"metrics {info['metrics_url']}\n"
            f"  tritonserver log: {info['log_file']}\n"
            "  Ctrl-C or SIGTERM stops it")
