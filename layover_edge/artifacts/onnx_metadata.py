"""What the runtime needs, stored in the ONNX file itself (``metadata_props``), so that an .onnx
file alone can be tagged with and an engine sidecar can copy it.

Every value is JSON text under a plain key; ``format`` marks a file written by layover-edge.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from layover_edge.core.errors import LayoverError, NotFound

FORMAT = "layover-edge/onnx/1"
INPUT = "image"
OUTPUTS = ("logits", "probabilities")
PRECISIONS = ("fp32", "fp16", "int8")


def checkpoint_metadata(cfg, form: str, opset: int, high_precision: list[str],
                        checkpoint: str | None = None) -> dict[str, Any]:
    """The metadata of a graph exported from a checkpoint's ModelConfig ``cfg`` (``checkpoint``: its
    ``artifacts.checkpoint.checkpoint_id``, which tells the files of one export from another's)."""
    return {"format": FORMAT, "checkpoint": checkpoint, "labels": list(cfg.labels), "thresholds": cfg.thresholds,
            "image_size": cfg.image_size, "mean": list(cfg.mean), "std": list(cfg.std),
            "interpolation": cfg.interpolation or "bilinear", "method": cfg.method, "backbone": cfg.backbone,
            "tap": cfg.tap, "rs": cfg.rs, "mix": cfg.mix, "opset": opset, "form": form, "precision": "fp32",
            "input": INPUT, "outputs": list(OUTPUTS), "high_precision_nodes": high_precision}


def set_metadata(proto, meta: dict[str, Any]) -> None:
    """Replace the model's metadata_props with ``meta`` (values JSON-encoded)."""
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)


def get_metadata(proto, source: str | Path = "model") -> dict[str, Any]:
    """The layover-edge metadata of a ModelProto; LayoverError if it was not written by us."""
    props = {p.key: p.value for p in proto.metadata_props}
    try:
        meta = {k: json.loads(v) for k, v in props.items()}
    except json.JSONDecodeError:
        meta = {}
    if meta.get("format") != FORMAT:
        raise LayoverError(f"{source} carries no layover-edge metadata (labels, preprocessing): "
                           f"export it with `layover-edge export`")
    found = graph_precision(proto)
    if meta.get("precision") != found:  # parity's gates, the build's flags and the engine follow this value
        raise LayoverError(f"{source}: its metadata says precision {meta.get('precision')!r} but the graph is "
                           f"{found} ({PRECISION_EVIDENCE[found]}): a file edited or renamed by hand? Export it again")
    return meta


QUANTIZED_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear")
PRECISION_EVIDENCE = {"int8": "it holds quantize/dequantize or QLinear nodes",
                      "fp16": "it holds float16 weights or casts to float16, and no Q/DQ nodes",
                      "fp32": "no Q/DQ node, no float16 weight or cast"}


def graph_precision(proto) -> str:
    """What the graph computes in, read from its nodes and tensors (never from its metadata): int8
    where it quantizes (ModelOpt's Q/DQ pairs, ONNX Runtime's QLinear/Integer ops), fp16 where it
    holds float16 weights or casts to float16, else fp32."""
    from onnx import TensorProto
    nodes = list(proto.graph.node)
    if any(n.op_type in QUANTIZED_OPS or n.op_type.startswith("QLinear") or n.op_type.endswith("Integer")
           for n in nodes):
        return "int8"
    half = TensorProto.FLOAT16
    if any(t.data_type == half for t in proto.graph.initializer) or any(
            n.op_type == "Cast" and any(a.name == "to" and a.i == half for a in n.attribute) for n in nodes) or any(
            n.op_type == "Constant" and any(a.t.data_type == half for a in n.attribute) for n in nodes):
        return "fp16"
    return "fp32"


def check_onnx(path: str | Path) -> None:
    """onnx.checker on a file (full check for standard-op graphs); one LayoverError naming the problem."""
    import onnx
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"ONNX file not found: {path}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
        custom = any(n.domain not in ("", "ai.onnx") for n in proto.graph.node)
        onnx.checker.check_model(str(path), full_check=not custom)
    except Exception as e:  # DecodeError, ValidationError, InferenceError: all mean "not a valid model"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LayoverError(f"{path} fails the ONNX checker: {first}") from None
