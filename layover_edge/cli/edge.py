"""The on-device verbs of ``layover-edge``: ``doctor`` (what this machine can run), ``tag``
(images, folders, videos, cameras, streams) and ``bench`` (LP vs RM vs FT latency across
backends). Registered by ``cli.build_parser``."""
from __future__ import annotations

import json
import sys
from functools import partial
from pathlib import Path

from layover_edge.core import checks
from layover_edge.core.config import MAX_BATCH
from layover_edge.core.errors import EXIT_INTERRUPTED, LayoverError, NotFound
from layover_edge.core.io import json_safe

from .common import BATCH, DEVICE, NONNEGATIVE, POSITIVE, PROBABILITY, add_backend_args, arg_type, emit

FLIP = arg_type(partial(checks.integer, low=0, high=7))  # nvvidconv's flip-method values


def add_parsers(sub) -> None:
    add_doctor_parser(sub)
    add_tag_parser(sub)
    add_bench_parser(sub)


# ---------------------------------------------------------------------------- doctor

def add_doctor_parser(sub) -> None:
    p = sub.add_parser("doctor", help="what this machine can run: GPU, kernels, TensorRT, ONNX Runtime, INT8, video",
                       description="Check each optional component (CUDA GPU and matching --target, Triton, the "
                                   "CUDA kernel library, TensorRT, the CUDA Python binding, the TensorRT plugin, "
                                   "ONNX Runtime and its providers, ONNX, ModelOpt, OpenCV and GStreamer) and print "
                                   "its version or why it is missing, and what it unlocks. Always exits 0.")
    p.add_argument("--kernels-lib", default=None,
                   help="liblayover_kernels.so to try loading (default: $LAYOVER_KERNELS_LIB)")
    p.add_argument("--plugins", default=None, help="liblayover_plugins.so to try loading")
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.set_defaults(func=cmd_doctor)


def cmd_doctor(args) -> int:
    from layover_edge.apps.doctor import as_dict, checks_text, run_checks
    checks = run_checks(args.kernels_lib, args.plugins)
    emit(args, as_dict(checks), checks_text(checks))
    return 0


# ---------------------------------------------------------------------------- tag

def add_tag_parser(sub) -> None:
    p = sub.add_parser(
        "tag", help="tag images, folders, videos, cameras or RTSP streams with a checkpoint, ONNX file or engine",
        description="Tag every frame of SOURCE and print one JSON line per frame "
                    '({"source", "frame", "labels": [{"label", "score"}]}; unreadable inputs get an "error" '
                    "line and are skipped). SOURCE is an image, a quoted glob ('shots/*.jpg'), a folder, a video "
                    "file, a camera (/dev/video0, v4l2:///dev/video0), a Jetson CSI camera (csi://0) or an RTSP "
                    "URL (rtsp://host:8554/path), as in jetson-inference. A folder is read with its sub-folders. "
                    "Ctrl-C stops cleanly (exit status 130). Exits non-zero when nothing could be processed, "
                    "or when the run failed, after writing what it had tagged.")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="what to tag; several may be given")
    p.add_argument("--model", required=True,
                   help="checkpoint directory (PyTorch), .onnx file (ONNX Runtime) or .engine/.plan (TensorRT)")
    p.add_argument("--threshold", type=PROBABILITY, default=None,
                   help="one probability threshold for every class (default: the model's per-class "
                        "thresholds, else 0.5)")
    p.add_argument("--topk", type=NONNEGATIVE, default=0,
                   help="keep at most K tags per frame, highest first; 0 keeps all above threshold (default: 0)")
    p.add_argument("--batch-size", type=BATCH, default=8,
                   help=f"frames per inference for files, folders and video files (at most {MAX_BATCH}); cameras and "
                        "streams run one frame at a time (default: %(default)s)")
    p.add_argument("--jsonl", default="-",
                   help="write the per-frame JSON lines to this file instead of stdout: it appears under its "
                        "name at the end, with every frame tagged (also when a later frame fails); '-' is "
                        "stdout, and a pipe or device is written line by line (default: -)")
    p.add_argument("--save", default=None, metavar="DIR",
                   help="also write the frames with their tags drawn: DIR/<image>.jpg, DIR/<video>.mp4")
    p.add_argument("--prefetch", type=NONNEGATIVE, default=2,
                   help="batches decoded and preprocessed ahead in a second thread while the current one is "
                        "inferred (live sources: 1); 0 runs the stages one after another (default: %(default)s)")
    add_backend_args(p)
    g = p.add_argument_group("camera and stream")
    g.add_argument("--width", type=POSITIVE, default=1280, help="capture width for cameras (default: %(default)s)")
    g.add_argument("--height", type=POSITIVE, default=720, help="capture height for cameras (default: %(default)s)")
    g.add_argument("--framerate", type=POSITIVE, default=30, help="capture frame rate for cameras (default: %(default)s)")
    g.add_argument("--flip", type=FLIP, default=0, help="CSI nvvidconv flip-method, 0-7 (default: %(default)s)")
    g.add_argument("--codec", choices=("h264", "h265"), default="h264", help="RTSP stream codec (default: %(default)s)")
    g.add_argument("--rtsp-latency", type=NONNEGATIVE, default=200, metavar="MS",
                   help="RTSP jitter buffer in milliseconds (GStreamer rtspsrc latency): lower for less delay on a "
                        "clean network, higher against dropped or late packets (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the final summary as JSON instead of a table "
                   "(on stderr when the JSON lines go to stdout)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars, and the summary is its one line (no per-label table)")
    p.set_defaults(func=cmd_tag)


def capture_options(args):
    from layover_edge.apps.sources import CaptureOptions
    return CaptureOptions(args.width, args.height, args.framerate, args.flip, args.codec, args.rtsp_latency)


def cmd_tag(args) -> int:
    from layover_edge.runtime.factory import open_model
    backend = open_model(args.model, args.device, args.precision, args.mode)
    from layover_edge.apps.sources import NO_SUCH_FILE
    from layover_edge.apps.tag import summary_text, tag
    summary = {"model": args.model} | tag(
        backend, args.sources, args.jsonl, args.save, args.threshold, args.topk, args.batch_size,
        capture_options(args), not args.quiet, args.prefetch)
    text = json.dumps(json_safe(summary), indent=2) if args.json else \
        summary_text(summary, backend.info.labels, table=not args.quiet)
    print(text, file=sys.stderr if args.jsonl == "-" else sys.stdout)  # stdout stays pure JSON lines
    if summary["interrupted"]:
        return EXIT_INTERRUPTED
    if summary["frames"] == 0:
        bad = summary["unreadable"]
        missing = bool(bad) and all(u["reason"].startswith(NO_SUCH_FILE) for u in bad)
        raise (NotFound if missing else LayoverError)(
            "nothing could be processed" + (f": {bad[0]['source']}: {bad[0]['reason']}" if bad else "")
            + (f" (and {len(bad) - 1} more unreadable inputs)" if len(bad) > 1 else ""))
    return 0


# -------------------------------------------------------------------------- bench

def add_bench_parser(sub) -> None:
    from layover_edge.apps.bench import FORMATS, TORCH_MODES, BenchConfig
    d = BenchConfig()
    p = sub.add_parser(
        "bench", help="latency of your LP/RM/FT model files (or of one backbone's) on every backend here",
        description="With MODEL files (checkpoint directories, .onnx files, TensorRT .engine/.plan files, any mix, "
                    "e.g. the LP, RM and FT exports of one backbone): time each on every backend that can run it "
                    "on this machine (engines in TensorRT with CUDA graphs, host copies included and device-resident, "
                    "and trtexec where installed; ONNX files in ONNX Runtime CPU and CUDA; checkpoints in PyTorch "
                    "where installed). Each file's method comes from its metadata, and the files one backend runs "
                    "are timed interleaved, so RM/LP and FT/LP come out of one run. Torch-free for ONNX files and "
                    "engines. On a Jetson it also records the power mode, the clocks and the energy per image. "
                    "Without MODEL files: build LP, RM and FT of --backbone (random weights by default: no "
                    "download) and run them on PyTorch (eager / CUDA graphs / torch.compile) and ONNX Runtime (FP32 "
                    "and INT8). Writes OUT/bench.json, OUT/bench.md (a table like Ultralytics' benchmark) and "
                    "OUT/bench.png.")
    p.add_argument("models", nargs="*", metavar="MODEL",
                   help="model files to time: checkpoint directories, .onnx files, .engine/.plan files")
    g = p.add_argument_group("backbone-name mode (no MODEL files)")
    g.add_argument("--backbone", default=None, help=f"timm model name (default: {d.backbone})")
    g.add_argument("--weights", default=None,
                   help=f"'none' (random, no download), 'pretrained' or a weights file (default: {d.weights})")
    g.add_argument("--image-size", type=POSITIVE, default=None, help="input pixels (default: the backbone's own)")
    g.add_argument("--num-classes", type=POSITIVE, default=None, help=f"classes of the head (default: {d.num_classes})")
    g.add_argument("--tap", type=POSITIVE, default=None, help=f"RM/FT tap, the paper's @k (default: {d.tap})")
    g.add_argument("--methods", nargs="+", choices=("lp", "rm", "ft"), default=None,
                   help="methods to compare (default: lp rm ft)")
    g.add_argument("--formats", nargs="+", choices=FORMATS, default=None,
                   help="backends (default: every installed one)")
    g.add_argument("--calib-images", type=POSITIVE, default=None,
                   help=f"synthetic images to calibrate ONNX INT8 with (default: {d.calib_images})")
    p.add_argument("--batches", type=POSITIVE, nargs="+", default=list(d.batches), help="batch sizes (default: 1 8 32)")
    p.add_argument("--device", type=DEVICE, default="auto",
                   help="backbone mode: cpu, cuda, cuda:1 (default: cuda if available, else cpu); with MODEL files: "
                        "auto (every backend here), cpu (CPU backends only) or cuda[:N] (GPU backends only)")
    p.add_argument("--precisions", nargs="+", choices=("fp32", "fp16", "bf16", "int8", "int8-ort"), default=None,
                   help="precisions; torch takes fp32/fp16/bf16, ONNX Runtime fp32, int8 (the TensorRT Q/DQ graph: "
                        "accuracy emulation on the CPU) and int8-ort (ONNX Runtime's own INT8, the CPU speed path) "
                        "(default: fp32 and both ONNX int8 forms on CPU, fp16 on CUDA). With MODEL files they apply "
                        "to checkpoints (an ONNX file's or engine's precision is its own)")
    p.add_argument("--modes", nargs="+", choices=TORCH_MODES, default=None,
                   help="PyTorch modes (default: eager on CPU; eager and graph on CUDA)")
    p.add_argument("--warmup", type=NONNEGATIVE, default=d.warmup, help="warm-up calls per model and batch (default: %(default)s)")
    p.add_argument("--iters", type=POSITIVE, default=d.iters, help="timed calls per model and batch (default: %(default)s)")
    p.add_argument("--rounds", type=POSITIVE, default=d.rounds,
                   help="interleaving rounds the timed calls are split into (default: %(default)s)")
    p.add_argument("--threads", type=POSITIVE, default=None,
                   help="CPU threads for PyTorch and ONNX Runtime (default: their own); pin it for comparable CPU runs")
    p.add_argument("--no-trtexec", action="store_true", help="with engines: do not also time them with trtexec")
    p.add_argument("--no-power", action="store_true", help="on a Jetson: do not sample the power rails")
    p.add_argument("--out", required=True, help="output folder: bench.json, bench.md, bench.png (and models/)")
    p.add_argument("--json", action="store_true", help="print bench.json instead of the table")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_bench)


BACKBONE_ONLY = ("backbone", "weights", "image_size", "num_classes", "tap", "methods", "formats", "calib_images")


def bench_config(args):
    """The config the arguments describe: model files, or a backbone name."""
    if args.models:
        given = [f"--{k.replace('_', '-')}" for k in BACKBONE_ONLY if getattr(args, k) is not None]
        if given:
            raise LayoverError(f"{', '.join(given)} apply to the backbone-name mode; with MODEL files each file's "
                               "own metadata says what it is")
        from layover_edge.apps.bench_files import FileBenchConfig
        return FileBenchConfig(
            models=tuple(args.models), batches=tuple(args.batches), device=args.device,
            precisions=tuple(args.precisions) if args.precisions else None,
            modes=tuple(args.modes) if args.modes else None, warmup=args.warmup, iters=args.iters, rounds=args.rounds,
            threads=args.threads, trtexec=not args.no_trtexec, power=not args.no_power)
    from layover_edge.apps.bench import BenchConfig
    from layover_edge.core.device import resolve_device
    given = {k: tuple(v) if isinstance(v, list) else v for k in BACKBONE_ONLY if (v := getattr(args, k)) is not None}
    return BenchConfig(**given, batches=tuple(args.batches), device=str(resolve_device(args.device)),
                       precisions=tuple(args.precisions) if args.precisions else None,
                       modes=tuple(args.modes) if args.modes else None, warmup=args.warmup, iters=args.iters,
                       rounds=args.rounds, threads=args.threads)


def cmd_bench(args) -> int:
    from layover_edge.apps.bench import run_any_bench
    result, text = run_any_bench(bench_config(args), Path(args.out), progress=not args.quiet)
    emit(args, result, text)
    if not any(r["status"] == "ok" for r in result["rows"]):
        raise LayoverError(f"nothing could be timed; see {Path(args.out) / 'bench.md'}")
    return 0
