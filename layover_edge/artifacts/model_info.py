"""What the runtime needs to tag with a model, whatever file it came from: labels, per-class
thresholds and preprocessing (from a checkpoint's ModelConfig, ONNX metadata or an engine sidecar)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from layover_edge.core.config import ModelConfig, Preprocess, check_labels
from layover_edge.core.errors import LayoverError

# The keys of ONNX metadata and sidecars that describe the model (beyond labels and preprocessing).
DESCRIPTION_KEYS = ("method", "backbone", "form", "precision")


@dataclass
class ModelInfo:
    labels: list[str]
    thresholds: list[float] | None
    preprocess: Preprocess
    extra: dict[str, Any] = field(default_factory=dict)

    def threshold_array(self, override: float | None = None) -> np.ndarray:
        if override is not None:
            return np.full(len(self.labels), override, np.float32)
        return np.asarray(self.thresholds or [0.5] * len(self.labels), np.float32)

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> "ModelInfo":
        return cls(labels=list(cfg.labels), thresholds=cfg.thresholds, preprocess=cfg.preprocess,
                   extra={"method": cfg.method, "backbone": cfg.backbone})

    @classmethod
    def from_metadata(cls, meta: dict[str, Any], source: str = "model") -> "ModelInfo":
        """From ONNX metadata or an engine sidecar (they share these keys); LayoverError naming
        ``source`` when a key is missing or a value is not what the runtime can use."""
        missing = [k for k in ("labels", "image_size", "mean", "std", "interpolation") if k not in meta]
        if missing:
            raise LayoverError(f"{source}: its metadata lacks {missing}")
        try:
            mean, std = (tuple(v) if isinstance(v, list) else v for v in (meta["mean"], meta["std"]))
            pre = Preprocess(meta["image_size"], mean, std, meta["interpolation"])
            check_labels(meta["labels"], meta.get("thresholds"), len(meta["labels"]))
        except (LayoverError, TypeError) as e:
            raise LayoverError(f"{source}: unusable metadata: {e}") from None
        return cls(labels=list(meta["labels"]), thresholds=meta.get("thresholds"), preprocess=pre,
                   extra={k: meta[k] for k in DESCRIPTION_KEYS if k in meta})
