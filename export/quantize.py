"""Reduced precision expressed in the ONNX graph itself, through NVIDIA ModelOpt, so the same
file builds on TensorRT 10 (JetPack 6) and TensorRT 11 (strongly typed only, no implicit INT8):

- INT8: explicit Q/DQ (``modelopt.onnx.quantization``), calibrated on CPU with real images;
- FP16: a strongly typed FP16 graph (``modelopt.onnx.autocast``).

- INT8 for ONNX Runtime on the CPU (``quantize_int8_ort``): ONNX Runtime's own static quantizer in
  QOperator form (QLinearConv, QLinearMatMul). ModelOpt's graph is for TensorRT: on ONNX Runtime's CPU
  provider its Q/DQ pairs run as separate ops and it is slower than FP32, so it checks INT8 accuracy
  there, not speed (README "Benchmark": RM on efficientnet_lite0 at 224 px, batch 1, one run: FP32
  36.2 ms, ModelOpt Q/DQ 67.7 ms, QOperator 12.4 ms). TensorRT cannot build the QOperator graph.

All keep the head (RS sigmoid, α gate, mix, classifier) and the output sigmoid in FP32: the
node list is in the graph's metadata (``high_precision_nodes``), the same list the TensorRT 10
FP16 build pins to FP32.

Outside its Q/DQ pairs the INT8 graph is FP16 by default (``int8_float``), so a strongly typed build
does not run those ops in FP32/TF32: ModelOpt quantizes with ``high_precision_dtype="fp32"`` and
AutoCast then converts the rest with the head excluded by name, because ModelOpt's own
``high_precision_dtype="fp16"`` converts by op type only (its ``_convert_to_runtime_precision`` never
sees ``nodes_to_exclude``: nvidia-modelopt 0.47 quantization/precision_utils.py l.74-82) and would
turn the head FP16 too. AutoCast's reference run, which keeps any node whose values leave FP16's
range in FP32, sees the first ``REFERENCE_IMAGES`` calibration images: it holds every activation of
what it is given at once (all 255 photos of coco2017-mini's train split took 23 GB).
``int8_float="fp32"`` keeps the float ops FP32, for a device to compare the two engines. ONNX
Runtime runs the FP16 form correctly only with one of its passes off (``runtime/onnx_backend.py``,
``FP16_QDQ_DISABLED``); TensorRT runs no such pass.

Only the portable form is converted: ModelOpt would need TensorRT to
run the plugin node.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from layover_edge.artifacts.onnx_metadata import check_onnx, get_metadata, set_metadata
from layover_edge.core.config import INT8_FLOATS
from layover_edge.core.errors import LayoverError
from layover_edge.core.io import atomic_path

CALIB_METHODS = ("max", "entropy")
REFERENCE_IMAGES = 8
ORT_QUANTIZER = "onnxruntime-qoperator"  # metadata "quantizer" of quantize_int8_ort's graphs
INSTALL_HINT = ('ModelOpt is not installed: pip install "nvidia-modelopt>=0.44" onnxslim onnxconverter-common '
                'lief cppimport (or pip install "layover-edge[int8]")')


def _source(onnx_path: Path) -> tuple[object, dict]:
    import onnx
    check_onnx(onnx_path)
    proto = onnx.load(str(onnx_path))
    meta = get_metadata(proto, onnx_path)
    if meta["form"] != "portable" or meta["precision"] != "fp32":
        raise LayoverError(f"{onnx_path} is a {meta['form']} {meta['precision']} graph: quantize the portable "
                           f"FP32 export (model.onnx)")
    return proto, meta


def _finish(proto, meta: dict, precision: str, out_path: Path, extra: dict) -> Path:
    import onnx
    set_metadata(proto, {**meta, "precision": precision, **extra})
    with atomic_path(out_path) as tmp:
        onnx.save(proto, str(tmp))
        check_onnx(tmp)
    return out_path


def _exact(names: list[str]) -> list[str]:
    """ModelOpt matches node names as regular expressions: anchor and escape them."""
    return [f"^{re.escape(n)}$" for n in names]


class _DropExpectedNotices(logging.Filter):
    """ModelOpt's notices of what is expected here, which a user can do nothing about: "ERROR: Failed
    to get GPU count: NVML ..." on every machine without a GPU (calibration runs on the CPU as
    asked), and AutoCast's on every Q/DQ graph it converts: the opset raised to 19 for FP16 scales,
    shared constants duplicated, and values below FP16's smallest subnormal set to 6e-8 (the scales
    of channels whose weights or activations are all but zero)."""

    NOTICES = ("Failed to get GPU count", "Updating minimum opset", "Shared constants were detected",
               "smaller than smallest fp16 value")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(n in message for n in self.NOTICES)


class _NotModelOpt(logging.Filter):
    """ModelOpt's records, for the root handlers: its own handler has shown them already."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith("modelopt")


class _CalibrationProgress(io.TextIOBase):
    """What ModelOpt and ONNX Runtime print while calibrating, as a person wants to read it: their
    per-batch lines ("Collecting tensor data and making histogram ...", each with a progress bar of
    its own: one pair per calibration image) become one bar, its fixed report of histogram sizes is
    dropped; every other line (a warning, an error) passes to ``out``."""

    NOISE = re.compile(r"Collecting tensor data|^\s*\d+%\||^\s*$|^Finding optimal threshold|^Number of (tensors|"
                       r"histogram bins|quantized bins) :")

    def __init__(self, out, bar):
        self.out, self.bar, self.pending = out, bar, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = re.split(r"[\r\n]", self.pending)
        for line in lines:
            if "Collecting tensor data" in line:
                self.bar.update(1)
            elif not self.NOISE.search(line):
                self.bar.write(line, file=self.out)
        return len(text)

    def flush(self) -> None:
        self.out.flush()


@contextlib.contextmanager
def _modelopt_output(quiet: bool, batches: int | None = None):
    """While ModelOpt runs: its prints, ONNX Runtime's calibration progress and the log handler it
    installs on what is then ``sys.stdout`` go to stderr (nowhere with ``quiet``), never into stdout
    (--json), the per-batch calibration lines as one bar over ``batches``; its records are not
    repeated by the root logger it also propagates to (under ``quiet`` the root logger is the one
    that shows its errors); the expected notices are dropped."""
    from tqdm.auto import tqdm
    notice, once = _DropExpectedNotices(), _NotModelOpt()
    own = [logging.getLogger(name) for name in ("modelopt.onnx", "modelopt.onnx.autocast")]
    handlers = [] if quiet else logging.getLogger().handlers[:]
    bar = tqdm(total=batches, desc="INT8 calibration", unit="batch", disable=quiet, file=sys.stderr)
    sink = open(os.devnull, "w") if quiet else _CalibrationProgress(sys.stderr, bar)
    for logger in own:
        logger.addFilter(notice)
    for h in handlers:
        h.addFilter(once)
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield
    finally:
        for logger in own:
            logger.removeFilter(notice)
        for h in handlers:
            h.removeFilter(once)
        bar.close()
        if quiet:
            sink.close()


def _static_batch(onnx_path: Path) -> int:
    """The graph's fixed batch size; 0 for a dynamic batch axis."""
    import onnx
    return onnx.load(str(onnx_path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim[0].dim_value


def quantize_int8(onnx_path: str | Path, out_path: str | Path, images: np.ndarray, method: str = "max",
                  quiet: bool = False, int8_float: str = INT8_FLOATS[0]) -> Path:
    """Q/DQ INT8 copy of a portable FP32 graph, calibrated on ``images`` (N, 3, S, S) on CPU, its other
    float ops in ``int8_float`` (the head FP32 either way); ``quiet`` silences ModelOpt's and ONNX
    Runtime's progress."""
    import onnx
    try:
        from modelopt.onnx.quantization import quantize
    except ImportError:
        raise LayoverError(INSTALL_HINT) from None
    if method not in CALIB_METHODS:
        raise LayoverError(f"unknown calibration method {method!r}; choose one of {CALIB_METHODS}")
    if int8_float not in INT8_FLOATS:
        raise LayoverError(f"unknown INT8 float type {int8_float!r}; choose one of {INT8_FLOATS}")
    onnx_path = Path(onnx_path)
    _, meta = _source(onnx_path)
    with tempfile.TemporaryDirectory(prefix="layover-int8-") as tmp:
        src, dst = Path(tmp) / "model.onnx", Path(tmp) / "model.int8.onnx"
        shutil.copyfile(onnx_path, src)  # ModelOpt writes intermediate files beside its input
        head = _exact(meta["high_precision_nodes"])
        try:
            static = _static_batch(src)  # ModelOpt feeds the graph's batch, one image on a dynamic axis
            with _modelopt_output(quiet, -(-len(images) // (static or 1))):
                quantize(str(src), quantize_mode="int8", calibration_data={meta["input"]: images},
                         calibration_method=method, calibration_eps=["cpu"], output_path=str(dst),
                         nodes_to_exclude=head, op_types_to_exclude=["Sigmoid"],
                         high_precision_dtype="fp32", log_level="ERROR" if quiet else "WARNING")
                reference = {meta["input"]: images[:static or REFERENCE_IMAGES]}
                proto = _fp16_outside(dst, head, reference) if int8_float == "fp16" else onnx.load(str(dst))
        except Exception as e:  # ModelOpt surfaces ORT and graph errors as many types
            raise LayoverError(f"INT8 quantization failed: {str(e).strip().splitlines()[0]}") from None
    opset = max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    return _finish(proto, meta, "int8", Path(out_path),
                   {"opset": opset, "int8_float": int8_float,
                    "calibration": {"images": int(len(images)), "method": method}})


def _fp16_outside(qdq_path: Path, head: list[str], reference: dict[str, np.ndarray]):
    """The Q/DQ graph with every float op but the head's and the sigmoids in FP16 (scales included)."""
    from modelopt.onnx.autocast import convert_to_mixed_precision
    return convert_to_mixed_precision(str(qdq_path), low_precision_type="fp16", keep_io_types=True,
                                      nodes_to_exclude=head, op_types_to_exclude=["Sigmoid"],
                                      calibration_data=reference)


def convert_fp16(onnx_path: str | Path, out_path: str | Path) -> Path:
    """Strongly typed FP16 copy of a portable FP32 graph (float32 inputs and outputs kept)."""
    try:
        from modelopt.onnx.autocast import convert_to_mixed_precision
    except ImportError:
        raise LayoverError(INSTALL_HINT) from None
    onnx_path = Path(onnx_path)
    _, meta = _source(onnx_path)
    try:
        proto = convert_to_mixed_precision(str(onnx_path), low_precision_type="fp16", keep_io_types=True,
                                           nodes_to_exclude=_exact(meta["high_precision_nodes"]),
                                           op_types_to_exclude=["Sigmoid"])
    except Exception as e:
        raise LayoverError(f"FP16 conversion failed: {str(e).strip().splitlines()[0]}") from None
    return _finish(proto, meta, "fp16", Path(out_path), {})


def quantize_int8_ort(onnx_path: str | Path, out_path: str | Path, images: np.ndarray) -> Path:
    """INT8 for ONNX Runtime's CPU provider: static QOperator quantization (per-tensor uint8 activations,
    int8 weights), calibrated on ``images``, the head kept FP32. Not a TensorRT input.

    Runs in a child interpreter: ModelOpt patches ONNX Runtime's quantizer classes in place when it
    quantizes (modelopt/onnx/quantization/ort_patching.py), after which ONNX Runtime's own QOperator
    pass fails in the same process."""
    import subprocess

    import onnx
    onnx_path = Path(onnx_path)
    _, meta = _source(onnx_path)
    with tempfile.TemporaryDirectory(prefix="layover-int8-ort-") as tmp:
        dst, calib = Path(tmp) / "int8.onnx", Path(tmp) / "calib.npy"
        np.save(calib, np.ascontiguousarray(images, np.float32))
        child = subprocess.run([sys.executable, "-m", "layover_edge.export.quantize", str(onnx_path), str(dst),
                                str(calib), meta["input"], *meta["high_precision_nodes"]],
                               capture_output=True, text=True)
        if child.returncode != 0:
            lines = (child.stderr.strip() or "no message").splitlines()
            raise LayoverError(f"ONNX Runtime INT8 quantization failed: {lines[-1]}")
        proto = onnx.load(str(dst))
    opset = max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    return _finish(proto, meta, "int8", Path(out_path), {"opset": opset, "quantizer": ORT_QUANTIZER,
                                                         "calibration": {"images": int(len(images))}})


def _ort_quantize(src: str, dst: str, calib: str, input_name: str, *exclude: str) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    images = np.load(calib)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{input_name: images[i:i + 16]} for i in range(0, len(images), 16)])

        def get_next(self):
            return next(self.batches, None)

    pre = str(Path(dst).with_name("pre.onnx"))
    quant_pre_process(src, pre, skip_optimization=True)  # optimising would fuse the head's MatMul + Add
    quantize_static(pre, dst, Reader(), quant_format=QuantFormat.QOperator, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=False, nodes_to_exclude=list(exclude))


if __name__ == "__main__":  # quantize_int8_ort's child
    _ort_quantize(*sys.argv[1:])
