"""How a precision request maps onto TensorRT 10 and 11, decided before TensorRT is imported, so
the builder, the trtexec command and the tests share one answer.

| graph (ONNX)    | --precision | TensorRT 10, GPU                      | TensorRT 10, DLA                          | TensorRT 11     |
|-----------------|-------------|---------------------------------------|-------------------------------------------|-----------------|
| FP32            | fp32        | weakly typed, TF32 off                | refused: DLA runs FP16/INT8 only          | strongly typed, TF32 off |
| FP32            | fp16        | FP16 flag, head pinned FP32, obey     | FP16 flag, head pinned FP32, prefer       | refused         |
| FP16 (AutoCast) | fp16        | strongly typed                        | FP16 flag, head pinned FP32, prefer       | strongly typed  |
| INT8 (Q/DQ)     | int8        | strongly typed                        | INT8 + FP16 flags, head pinned, prefer    | strongly typed  |

Why DLA builds on TensorRT 10 are weakly typed: with ``--useDLACore`` trtexec sets
kPREFER_PRECISION_CONSTRAINTS and, unless ``--int8`` is given, kFP16 (release/10.3
samples/common/sampleEngines.cpp:1123-1146, unchanged in 10.13 and 10.16), while ``--stronglyTyped``
clears ``--fp16``/``--int8`` (sampleOptions.cpp:1231-1247) and a strongly typed network refuses the
kFP16 flag: no strongly typed DLA build exists on 10.x. DLA computes only FP16 and INT8, so the
builder must be free to lower the backbone; the head is pinned to FP32 and runs on the GPU. Prefer,
not obey: trtexec's DLA block sets kPREFER, and TensorRT refuses both constraint flags at once.
TensorRT 11 has no precision flags at all (strongly typed only; DLA returns in 11.4.1, strongly typed).

TF32 off for FP32: BuilderFlag.TF32 is "Enabled by default" (its docstring in the 10.3.0, 10.13.0.35
and 11.4.0.106 bindings; kTF32 in include/NvInfer.h, release/10.3 l.8318-8320) and rounds matrix
inputs to 10-bit mantissas, while parity gates an FP32 engine at |Δlogit| ≤ 1e-3. The builder clears
the flag and the trtexec command says ``--noTF32`` (sampleOptions.cpp release/10.3 l.1225, 10.13
l.1252, 11.1 l.1213). FP16 and INT8 builds keep it: their gates are in mAP points.

Implicit INT8 (a calibrator) is not offered: deprecated since 10.1, removed in 11.
"""
from __future__ import annotations

from dataclasses import dataclass

from layover_edge.core.errors import LayoverError

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class PrecisionMode:
    strongly_typed: bool
    fp16_flag: bool                  # TensorRT 10 weak typing: BuilderFlag.FP16 (trtexec --fp16)
    pin_fp32: bool                   # TensorRT 10: the head's layers run and output FP32
    int8_flag: bool = False          # TensorRT 10 weak typing with Q/DQ (DLA): BuilderFlag.INT8 (--int8)
    constraints: str | None = None   # "obey" (GPU) or "prefer" (DLA): how pin_fp32 is enforced
    tf32: bool = True                # BuilderFlag.TF32 left on (TensorRT's default); off for FP32 builds


def trt_major(version: str) -> int:
    return int(version.split(".")[0])


def precision_mode(graph_precision: str, precision: str, trt_version: str, dla: bool = False) -> PrecisionMode:
    """How to build a ``graph_precision`` ONNX at ``precision`` on TensorRT ``trt_version``, on a DLA
    core when ``dla`` (whose own rules ``targets.check_dla`` checks)."""
    if precision not in PRECISIONS:
        raise LayoverError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    major = trt_major(trt_version)
    if major < 10:
        raise LayoverError(f"TensorRT {trt_version} is too old: layover-edge builds with TensorRT 10 or 11")
    if graph_precision in ("fp16", "int8") and precision != graph_precision:
        raise LayoverError(f"this ONNX is a {graph_precision} graph: build it with --precision {graph_precision}")
    if graph_precision == "fp32" and precision == "int8":
        raise LayoverError("INT8 needs the Q/DQ graph: run `layover-edge export CKPT --int8 --calib-data ...` and "
                           "build model.int8.onnx (implicit INT8 calibration is gone in TensorRT 11)")
    if graph_precision == "fp32" and precision == "fp16" and major >= 11:
        raise LayoverError("TensorRT 11 has no FP16 builder flag: run `layover-edge export CKPT --fp16` and "
                           "build the strongly typed model.fp16.onnx")
    if major >= 11:
        return PrecisionMode(strongly_typed=True, fp16_flag=False, pin_fp32=False, tf32=precision != "fp32")
    if precision == "fp32":
        return PrecisionMode(strongly_typed=False, fp16_flag=False, pin_fp32=False, tf32=False)
    if dla:
        return PrecisionMode(strongly_typed=False, fp16_flag=True, pin_fp32=True, int8_flag=precision == "int8",
                             constraints="prefer")
    if graph_precision == "fp32":
        return PrecisionMode(strongly_typed=False, fp16_flag=True, pin_fp32=True, constraints="obey")
    return PrecisionMode(strongly_typed=True, fp16_flag=False, pin_fp32=False)
