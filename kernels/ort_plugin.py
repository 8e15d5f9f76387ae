"""Run the ``LayoverFusedMix`` plugin node in ONNX Runtime (CPU), backed by the reference.

TensorRT is not available on the CPU machines, so the plugin-node ONNX graph is checked here:
onnxruntime-extensions registers a Python op under domain ``ai.onnx.contrib`` (the only domain
it serves) and the op calls ``fused_mix_reference``. float32 I/O only: a Python op has one
fixed signature per op type.
"""
from __future__ import annotations

import numpy as np
import torch
from onnxruntime_extensions import PyCustomOpDef, get_library_path, onnx_op

from .identity import LAYOUT_CODES, MIX_CODES, PLUGIN_NAME
from .reference import fused_mix_reference

_LAYOUTS = {code: name for name, code in LAYOUT_CODES.items()}
_MIXES = {code: name for name, code in MIX_CODES.items()}


@onnx_op(op_type=PLUGIN_NAME, inputs=[PyCustomOpDef.dt_float] * 6, outputs=[PyCustomOpDef.dt_float],
         attrs={"layout": PyCustomOpDef.dt_int64, "mix": PyCustomOpDef.dt_int64,
                "plugin_version": PyCustomOpDef.dt_string, "plugin_namespace": PyCustomOpDef.dt_string})
def _layover_fused_mix(h, z, w_rs, b_rs, w_sl, b_sl, **attrs):
    args = [torch.from_numpy(np.ascontiguousarray(a)) for a in (h, z, w_rs, b_rs, w_sl, b_sl)]
    return fused_mix_reference(*args, layout=_LAYOUTS[int(attrs["layout"])], form=_MIXES[int(attrs["mix"])]).numpy()


def session_options():
    """``onnxruntime.SessionOptions`` that can run graphs holding the plugin node."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.register_custom_ops_library(get_library_path())
    return so
