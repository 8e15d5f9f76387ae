"""How a precision request maps onto TensorRT 10 and 11, decided before TensorRT is imported, so
the builder, the trtexec command and the tests share one answer.

| graph (ONNX)   | --precision | TensorRT 10                                | TensorRT 11           |
|----------------|-------------|--------------------------------------------|-----------------------|
| FP32           | fp32        | default (weakly typed, TF32 allowed)       | strongly typed        |
| FP32           | fp16        | BuilderFlag.FP16, head pinned to FP32      | refused: no FP16 flag |
| FP16 (AutoCast)| fp16        | strongly typed                             | strongly typed        |
| INT8 (Q/DQ)    | int8        | strongly typed                             | strongly typed        |

Implicit INT8 (a calibrator) is not offered: deprecated since 10.1, removed in 11.
"""
from __future__ import annotations

from dataclasses import dataclass

from layover_edge.core.errors import LayoverError

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class PrecisionMode:
    strongly_typed: bool
    fp16_flag: bool       # TensorRT 10 weak typing: BuilderFlag.FP16
    pin_fp32: bool        # TensorRT 10: head layers FP32 + OBEY_PRECISION_CONSTRAINTS


def trt_major(version: str) -> int:
    return int(version.split(".")[0])


def precision_mode(graph_precision: str, precision: str, trt_version: str) -> PrecisionMode:
    """How to build a ``graph_precision`` ONNX at ``precision`` on TensorRT ``trt_version``."""
    if precision not in PRECISIONS:
        raise LayoverError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    major = trt_major(trt_version)
    if major < 10:
        raise LayoverError(f"TensorRT {trt_version} is too old: layover-edge builds with TensorRT 10 or 11")
    if graph_precision in ("fp16", "int8"):
        if precision != graph_precision:
            raise LayoverError(f"this ONNX is a {graph_precision} graph: build it with --precision {graph_precision}")
        return PrecisionMode(strongly_typed=True, fp16_flag=False, pin_fp32=False)
    if precision == "int8":
        raise LayoverError("INT8 needs the Q/DQ graph: run `layover-edge export CKPT --int8 --calib-data ...` and "
                           "build model.int8.onnx (implicit INT8 calibration is gone in TensorRT 11)")
    if precision == "fp16":
        if major >= 11:
            raise LayoverError("TensorRT 11 has no FP16 builder flag: run `layover-edge export CKPT --fp16` and "
                               "build the strongly typed model.fp16.onnx")
        return PrecisionMode(strongly_typed=False, fp16_flag=True, pin_fp32=True)
    return PrecisionMode(strongly_typed=major >= 11, fp16_flag=False, pin_fp32=False)
