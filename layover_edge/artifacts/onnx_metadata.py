"""What the runtime needs, stored in the ONNX file itself (``metadata_props``), so that an .onnx
file alone can be tagged with and an engine sidecar can copy it.

Every value is JSON text under a plain key; ``format`` marks a file written by layover-edge.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from layover_edge.core.errors import LayoverError

FORMAT = "layover-edge/onnx/1"
INPUT = "image"
OUTPUTS = ("logits", "probabilities")
PRECISIONS = ("fp32", "fp16", "int8")


def checkpoint_metadata(cfg, form: str, opset: int, high_precision: list[str]) -> dict[str, Any]:
    """The metadata of a graph exported from a checkpoint's ModelConfig ``cfg``."""
    return {"format": FORMAT, "labels": list(cfg.labels), "thresholds": cfg.thresholds,
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
    return meta


def check_onnx(path: str | Path) -> None:
    """onnx.checker on a file (full check for standard-op graphs); one LayoverError naming the problem."""
    import onnx
    path = Path(path)
    if not path.is_file():
        raise LayoverError(f"ONNX file not found: {path}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
        custom = any(n.domain not in ("", "ai.onnx") for n in proto.graph.node)
        onnx.checker.check_model(str(path), full_check=not custom)
    except Exception as e:  # DecodeError, ValidationError, InferenceError: all mean "not a valid model"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LayoverError(f"{path} fails the ONNX checker: {first}") from None
