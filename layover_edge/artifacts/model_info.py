"""What the runtime needs to tag with a model, whatever file it came from: labels, per-class
thresholds and preprocessing (from a checkpoint's ModelConfig, ONNX metadata or an engine sidecar)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from layover_edge.core.config import ModelConfig, Preprocess

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
    def from_metadata(cls, meta: dict[str, Any]) -> "ModelInfo":
        """From ONNX metadata or an engine sidecar (they share these keys)."""
        pre = Preprocess(int(meta["image_size"]), tuple(meta["mean"]), tuple(meta["std"]), meta["interpolation"])
        return cls(labels=list(meta["labels"]), thresholds=meta.get("thresholds"), preprocess=pre,
                   extra={k: meta[k] for k in DESCRIPTION_KEYS if k in meta})
