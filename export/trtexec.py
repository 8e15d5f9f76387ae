"""The trtexec command equivalent to ``layover-edge build``, for users who build on the device by
hand (``/usr/src/tensorrt/bin/trtexec`` on JetPack). Every flag it can print is checked in the tests
against trtexec's option parser of TensorRT 10.3, 10.13 and 11.1 (tests/data/tensorrt/).

What trtexec's sources dictate (release/10.3 samples/common/; same rules in 10.13 and 11.1):
- no shape flags for a graph whose input is fully static: trtexec refuses "Static model does not
  take explicit shapes" (sampleEngines.cpp:838-845);
- ``--noTF32`` for FP32 builds (TF32 is on by default; sampleEngines.cpp:897 clears it for the flag);
- ``--stronglyTyped`` only on TensorRT 10 (11 is always strongly typed; the flag is a no-op there);
- weak typing follows ``precision.precision_mode``: ``--int8``/``--fp16``, the head's layers named in
  ``--layerPrecisions`` and ``--layerOutputTypes`` (exact names; applied only with
  ``--precisionConstraints``, sampleOptions.cpp:1281-1296), ``prefer`` on DLA where ``--useDLACore``
  sets kPREFER itself (sampleEngines.cpp:1129).
"""
from __future__ import annotations

import shlex
from pathlib import Path

from .precision import PrecisionMode, trt_major


def trtexec_command(onnx: str | Path, engine: str | Path, mode: PrecisionMode, trt_version: str, input_name: str,
                    image_size: int, batch: tuple[int, int, int], workspace_gb: float, dynamic: bool = True,
                    pinned: list[str] = (), plugins: list[str] = (), timing_cache: str | None = None,
                    dla_core: int | None = None) -> str:
    """One shell command line that builds the same engine with trtexec. ``dynamic``: the ONNX input
    has a dynamic batch axis (else no shape flags); ``pinned``: TensorRT layer names kept FP32."""
    def shape(b: int) -> str:
        return f"{input_name}:{b}x3x{image_size}x{image_size}"

    args = ["trtexec", f"--onnx={onnx}", f"--saveEngine={engine}"]
    if dynamic:
        args += [f"--minShapes={shape(batch[0])}", f"--optShapes={shape(batch[1])}", f"--maxShapes={shape(batch[2])}"]
    args.append(f"--memPoolSize=workspace:{int(workspace_gb * 1024)}M")
    if mode.strongly_typed and trt_major(trt_version) < 11:
        args.append("--stronglyTyped")
    if mode.int8_flag:
        args.append("--int8")
    if mode.fp16_flag:
        args.append("--fp16")
    if not mode.tf32:
        args.append("--noTF32")
    if mode.pin_fp32 and pinned:
        spec = ",".join(f"{n}:fp32" for n in pinned)
        args += [f"--precisionConstraints={mode.constraints}", f"--layerPrecisions={spec}",
                 f"--layerOutputTypes={spec}"]
    args += [f"--dynamicPlugins={p}" for p in plugins]
    if timing_cache:
        args.append(f"--timingCacheFile={timing_cache}")
    if dla_core is not None:
        args += [f"--useDLACore={dla_core}", "--allowGPUFallback"]
    args.append("--skipInference")
    return shlex.join(args)
