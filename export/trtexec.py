"""The trtexec command equivalent to ``layover-edge build``, for users who build on the device by
hand (e.g. ``/usr/src/tensorrt/bin/trtexec`` on JetPack). Flags follow the precision mode: TensorRT 10
needs ``--stronglyTyped`` for Q/DQ and FP16 graphs, TensorRT 11 is always strongly typed and has
no ``--fp16``/``--int8``.
"""
from __future__ import annotations

import shlex
from pathlib import Path

from .precision import PrecisionMode, trt_major


def trtexec_command(onnx: str | Path, engine: str | Path, mode: PrecisionMode, trt_version: str, input_name: str,
                    image_size: int, batch: tuple[int, int, int], workspace_gb: float,
                    high_precision: list[str] = (), plugins: list[str] = (), timing_cache: str | None = None,
                    dla_core: int | None = None) -> str:
    """One shell command line that builds the same engine with trtexec."""
    def shape(b: int) -> str:
        return f"{input_name}:{b}x3x{image_size}x{image_size}"

    args = ["trtexec", f"--onnx={onnx}", f"--saveEngine={engine}",
            f"--minShapes={shape(batch[0])}", f"--optShapes={shape(batch[1])}", f"--maxShapes={shape(batch[2])}",
            f"--memPoolSize=workspace:{int(workspace_gb * 1024)}M"]
    if mode.strongly_typed and trt_major(trt_version) < 11:
        args.append("--stronglyTyped")
    if mode.fp16_flag:
        args.append("--fp16")
    if mode.pin_fp32 and high_precision:
        args += ["--precisionConstraints=obey", "--layerPrecisions=" + ",".join(f"{n}:fp32" for n in high_precision)]
    args += [f"--dynamicPlugins={p}" for p in plugins]
    if timing_cache:
        args.append(f"--timingCacheFile={timing_cache}")
    if dla_core is not None:
        args += [f"--useDLACore={dla_core}", "--allowGPUFallback"]
    args.append("--skipInference")
    return shlex.join(args)
