"""The deployment verbs: ``export``, ``build`` and ``parity``."""
from __future__ import annotations

import sys

from layover_edge.core.config import INT8_FLOATS, MAX_BATCH, MIN_CALIB, RECOMMENDED_CALIB, ExportConfig, ServeConfig
from layover_edge.core.errors import LayoverError
from layover_edge.export.targets import TARGETS

from .common import BATCH, NONNEGATIVE, NONNEGATIVE_NUMBER, PERCENT, POSITIVE, POSITIVE_NUMBER, emit

E = ExportConfig()


def cmd_export(args) -> int:
    from layover_edge.export.pipeline import export_all, export_text
    ec = ExportConfig(forms=args.form, int8=args.int8, fp16=args.fp16, calib_data=args.calib_data,
                      calib_size=args.calib_size, calib_method=args.calib_method, int8_float=args.int8_float,
                      opset=args.opset, static_batch=args.static_batch, triton_repo=args.triton_repo,
                      triton_engine=args.triton_engine, triton_max_batch=args.triton_max_batch,
                      overwrite=args.overwrite)
    rows = export_all(args.checkpoint, args.out, ec, args.data_root, progress=not args.quiet)
    emit(args, {"checkpoint": args.checkpoint, "files": rows}, export_text(args.checkpoint, rows))
    return 0


def cmd_build(args) -> int:
    from layover_edge.export.build import build_engine, build_text, installed_tensorrt, plan_engine
    req = plan_engine(args.onnx, args.precision, args.target, args.out, args.min_batch, args.opt_batch, args.max_batch,
                      args.workspace_gb, args.plugins or [], args.timing_cache, args.dla_core, args.trt_version)
    command = req.trtexec()
    if req.dla_note() and not args.json:
        print(req.dla_note(), file=sys.stderr)
    if args.trtexec_only:
        emit(args, {"trtexec": command, "tensorrt": req.trt_version, "mode": vars(req.mode)}, command)
        return 0
    if not installed_tensorrt():
        raise LayoverError(f"TensorRT is not installed here; build on the device with: {command}")
    if not args.json:
        print(f"equivalent trtexec command (TensorRT {req.trt_version}, target {req.target.name}):\n  {command}\n")
    sidecar = build_engine(req, any_gpu=args.any_gpu)
    emit(args, {"engine": str(req.engine), "sidecar": sidecar}, build_text(sidecar, req.engine))
    return 0


def cmd_parity(args) -> int:
    from layover_edge.apps.parity import markdown, run_parity
    result = run_parity(args.reference, args.against, args.data, args.data_root, args.size, args.batch_size,
                        args.out, args.cuda_graph, not args.quiet, max_logit_error=args.max_logit_error,
                        max_map_drop=args.max_map_drop, min_agreement=args.min_agreement)
    emit(args, result, markdown(result, result["title"]) + f"\nreports: {', '.join(result['reports'])}")
    return 0 if result["passed"] else 1


def add_parsers(sub) -> None:
    """Register ``export``, ``build`` and ``parity`` on the main CLI's subparsers."""
    p = sub.add_parser("export", help="checkpoint -> ONNX (portable + plugin graphs), INT8 Q/DQ and FP16",
                       description="Export the whole model (backbone + head) to ONNX with a dynamic batch axis; "
                                   "writes OUT/model.onnx (portable), OUT/model.plugin.onnx (LayoverFusedMix "
                                   "plugin node) and, on request, OUT/model.int8.onnx and OUT/model.fp16.onnx. "
                                   "Every graph is checked by onnx.checker and against PyTorch in ONNX Runtime.")
    p.add_argument("checkpoint", help="checkpoint directory (config.json + safetensors)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--form", nargs="+", choices=("portable", "plugin"), default=None,
                   help="ONNX forms to write (default: both; portable only for LP and pool1d checkpoints)")
    p.add_argument("--opset", type=POSITIVE, default=E.opset,
                   help="ONNX opset, ≥ 18 (default: %(default)s; INT8 graphs are raised to 19 by ModelOpt)")
    p.add_argument("--static-batch", type=BATCH, default=None,
                   help=f"fix the batch dimension to this size (1-{MAX_BATCH}) instead of a dynamic axis (e.g. for DLA)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace another checkpoint's export in OUT: its ONNX files, the engines built from them "
                        "and their parity reports are removed first (without it such a folder is refused)")
    g = p.add_argument_group("reduced precision (NVIDIA ModelOpt, on CPU)")
    g.add_argument("--int8", action="store_true", help="also write the explicitly quantized Q/DQ INT8 graph")
    g.add_argument("--fp16", action="store_true", help="also write the strongly typed FP16 graph (ModelOpt AutoCast)")
    g.add_argument("--calib-data", default=None,
                   help="INT8 calibration images: NAME:SPLIT[:key=value,...] through the data API "
                        "(e.g. synthetic:train) or a .npy of preprocessed (N, 3, S, S) images")
    g.add_argument("--calib-size", type=POSITIVE, default=E.calib_size,
                   help=f"calibration images (default: %(default)s; a warning below {RECOMMENDED_CALIB}, an error "
                        f"below {MIN_CALIB})")
    g.add_argument("--calib-method", choices=("max", "entropy"), default=E.calib_method,
                   help="activation range calibration (default: %(default)s)")
    g.add_argument("--int8-float", choices=INT8_FLOATS, default=E.int8_float,
                   help="the INT8 graph's float ops outside its Q/DQ pairs (default: %(default)s; the head stays "
                        "FP32 either way; fp32 makes a strongly typed engine run them in FP32/TF32)")
    g.add_argument("--data-root", default=None, help="data set directory, for data sets read from disk")
    g = p.add_argument_group("Triton Inference Server model repository")
    g.add_argument("--triton-repo", default=None, metavar="DIR",
                   help="also write DIR/tagger_onnx (ONNX Runtime backend, the portable graph): config.pbtxt, "
                        "labels.txt, 1/model.onnx")
    g.add_argument("--triton-engine", default=None, metavar="ENGINE",
                   help="add DIR/tagger_trt (TensorRT backend) with this engine, built by `layover-edge build` "
                        "for the GPU and TensorRT of the Triton release that will serve it")
    g.add_argument("--triton-max-batch", type=int, default=None,
                   help="max_batch_size of tagger_onnx (default: the engine profile's maximum, else %d); "
                        "tagger_trt always takes its engine's" % ServeConfig.max_batch)
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("build", help="ONNX -> TensorRT engine + sidecar JSON for a target device",
                       description="Build a TensorRT engine with the TensorRT 10/11 Python API and write "
                                   "ENGINE.json beside it; always prints the equivalent trtexec command. "
                                   "Without TensorRT installed it prints the command and stops with an error.")
    p.add_argument("onnx", help="model.onnx, model.plugin.onnx, model.int8.onnx or model.fp16.onnx")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), required=True,
                   help="engine precision; int8 needs the Q/DQ graph, fp16 on TensorRT 11 the FP16 graph")
    p.add_argument("--target", choices=sorted(TARGETS), required=True,
                   help="target device profile: compute capability, batch profile, workspace, DLA")
    p.add_argument("--out", default=None, help="engine path (default: ONNX.PRECISION.TARGET.engine)")
    p.add_argument("--min-batch", type=POSITIVE, default=1, help="optimisation profile minimum batch (default: 1)")
    p.add_argument("--opt-batch", type=POSITIVE, default=None, help="batch the kernels are tuned for (default: the target's; --max-batch if only that is given)")
    p.add_argument("--max-batch", type=POSITIVE, default=None,
                   help="largest batch the engine accepts; setting it replaces the target's profile "
                        "(default: the target's, or the ONNX file's fixed batch)")
    p.add_argument("--workspace-gb", type=POSITIVE_NUMBER, default=None, help="builder workspace limit in GiB (default: target's)")
    p.add_argument("--timing-cache", default=None, help="timing cache file, read if present and updated after the build")
    p.add_argument("--plugins", nargs="+", default=None,
                   help="plugin libraries to load (liblayover_plugins.so for model.plugin.onnx)")
    p.add_argument("--dla-core", type=NONNEGATIVE, default=None, help="run on this DLA core with GPU fallback (Jetson NX/AGX)")
    p.add_argument("--trt-version", default=None,
                   help="TensorRT version for the trtexec command when TensorRT is not installed "
                        "(default: the target's, e.g. 10.3 on JetPack 6)")
    p.add_argument("--trtexec-only", action="store_true", help="only print the trtexec command; build nothing")
    p.add_argument("--any-gpu", action="store_true",
                   help="build for the GPU present even if it is not the target's compute capability")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("parity", help="accuracy parity of an ONNX file or engine against PyTorch FP32",
                       description="Tensor-level (max/mean abs and rel error, cosine, Polygraphy) and task-level "
                                   "(mAP, CF1, OF1 deltas, tag agreement, mean |Δprobability|) parity; writes "
                                   "parity.json and parity.md; exit status 1 when a gate fails.")
    p.add_argument("reference", metavar="REFERENCE",
                   help="the reference: the checkpoint directory (PyTorch FP32), or on a device without torch the "
                        "FP32 model.onnx")
    p.add_argument("--against", required=True, help="candidate: an .onnx file or a TensorRT .engine")
    p.add_argument("--data", required=True, help="data split NAME:SPLIT[:key=value,...], e.g. synthetic:val")
    p.add_argument("--data-root", default=None, help="data set directory, for data sets read from disk")
    p.add_argument("--size", type=POSITIVE, default=None, help="use at most this many images (synthetic default: 500)")
    p.add_argument("--batch-size", type=POSITIVE, default=32, help="batch size (default: %(default)s)")
    p.add_argument("--out", default=None, help="report directory (default: beside the candidate)")
    p.add_argument("--max-logit-error", type=NONNEGATIVE_NUMBER, default=None, help="gate: max |Δlogit| (FP32 default 1e-3)")
    p.add_argument("--max-map-drop", type=NONNEGATIVE_NUMBER, default=None,
                   help="gate: mAP drop in points (defaults FP16 0.2, INT8 1.0)")
    p.add_argument("--min-agreement", type=PERCENT, default=None,
                   help="gate: tag agreement at the thresholds in percent (INT8 default 97)")
    p.add_argument("--cuda-graph", action="store_true", help="TensorRT candidate: replay CUDA graphs")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of the report")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_parity)
