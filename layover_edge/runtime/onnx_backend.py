"""ONNX Runtime backend: any layover-edge .onnx file (portable, plugin, INT8 Q/DQ, FP16).

The labels, thresholds and preprocessing come from the file's metadata. A graph holding the
``LayoverFusedMix`` plugin node runs through the onnxruntime-extensions op backed by the
PyTorch reference (CPU, float32), so the plugin graph is checkable without TensorRT.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from layover_edge.artifacts.model_info import ModelInfo
from layover_edge.artifacts.onnx_metadata import INPUT, OUTPUTS, get_metadata
from layover_edge.core.errors import LayoverError, NotFound
from layover_edge.kernels.identity import PLUGIN_DOMAIN

from .base import Backend

PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}
# ONNX Runtime's WeightBiasQuantization pass turns a Conv's float bias into int32 with the scale
# input_scale × weight_scale computed, divided into the bias and rounded in the scales' own type
# (onnxruntime core/optimizer/qdq_transformer/weight_bias_quantization.cc): with FP16 scales that
# product is subnormal and bias / scale overflows, so an INT8 graph that is FP16 outside its Q/DQ
# pairs scored 7.5 mAP instead of 51.6 on 250 real COCO photos (ONNX Runtime 1.32). TensorRT runs
# no such pass; without it ONNX Runtime matches the FP32-scale graph.
FP16_QDQ_DISABLED = ["WeightBiasQuantization"]


class OnnxBackend(Backend):
    name = "onnxruntime"

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None):
        import onnx
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise NotFound(f"ONNX file not found: {self.path}")
        try:
            proto = onnx.load(str(self.path), load_external_data=False)
        except Exception as e:  # protobuf DecodeError and friends: a truncated or foreign file
            raise LayoverError(f"{self.path} is not a readable ONNX file: {e}") from None
        self.meta = get_metadata(proto, self.path)
        kind = device.split(":")[0]
        if kind not in PROVIDERS:
            raise LayoverError(f"ONNX Runtime device must be cpu or cuda, got {device!r}")
        if PROVIDERS[kind][0] not in ort.get_available_providers():
            raise LayoverError(f"{PROVIDERS[kind][0]} is not available in this onnxruntime "
                               f"(available: {ort.get_available_providers()})")
        if any(n.domain == PLUGIN_DOMAIN for n in proto.graph.node):
            from layover_edge.kernels.ort_plugin import session_options
            options = session_options()
        else:
            options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        disabled = FP16_QDQ_DISABLED if _has_fp16_scales(proto) else []
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=PROVIDERS[kind],
                                                disabled_optimizers=disabled)
        except Exception as e:  # ORT raises its own Fail/InvalidGraph types
            raise LayoverError(f"ONNX Runtime cannot load {self.path}: {str(e).strip().splitlines()[0]}") from None
        self.device = kind
        info = ModelInfo.from_metadata(self.meta, str(self.path))
        _check_graph(self.session, info.preprocess.image_size, self.path)
        self.input = self.session.get_inputs()[0].name
        self.outputs = [o.name for o in self.session.get_outputs()]
        fixed = self.session.get_inputs()[0].shape[0]
        if isinstance(fixed, int):  # a static batch axis (export --static-batch): run pads to it
            self.batch_range = (fixed, fixed)
        super().__init__(info)

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(None, {self.input: batch})
        return {name: np.asarray(v, np.float32) for name, v in zip(self.outputs, values)}

    def metadata(self) -> dict[str, Any]:
        import onnxruntime as ort
        return {"backend": self.name, "device": self.device, "precision": self.meta.get("precision"),
                "form": self.meta.get("form"), "providers": self.session.get_providers(),
                "onnxruntime": ort.__version__, "model": str(self.path)}


def _has_fp16_scales(proto) -> bool:
    """Whether any Q/DQ node's scale is an FP16 initializer."""
    from onnx import TensorProto
    fp16 = {t.name for t in proto.graph.initializer if t.data_type == TensorProto.FLOAT16}
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 1 and n.input[1] in fp16
               for n in proto.graph.node)


def _check_graph(session, size: int, path: Path) -> None:
    """LayoverError unless the graph is what its metadata describes: one float image input
    (N, 3, S, S) and the logits and probabilities outputs (metadata copied onto another model is not)."""
    inputs, outputs = session.get_inputs(), [o.name for o in session.get_outputs()]
    shape = inputs[0].shape if len(inputs) == 1 else []
    fits = (len(inputs) == 1 and inputs[0].name == INPUT and inputs[0].type == "tensor(float)" and len(shape) == 4
            and all(not isinstance(d, int) or d == want for d, want in zip(shape[1:], (3, size, size)))
            and set(OUTPUTS) <= set(outputs))
    if not fits:
        got = ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs)
        raise LayoverError(f"{path}: the graph takes {got} and gives {outputs}, not the {INPUT!r} (N, 3, {size}, "
                           f"{size}) float input and {list(OUTPUTS)} outputs its metadata describes (metadata copied "
                           f"onto another model?)")
