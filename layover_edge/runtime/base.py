"""The one interface every runtime backend implements, so the tagger, the parity check and
the benchmarks run the same code on PyTorch, ONNX Runtime and TensorRT.

A backend takes a preprocessed float32 NCHW batch (``Preprocess`` says how to make one from
images) and returns per-class probabilities as a float32 numpy array (B, K).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Preprocess:
    """What a model expects as input, read from its checkpoint, ONNX metadata or engine sidecar."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"


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


class Backend(ABC):
    """``predict(batch) -> probabilities``, plus warm-up and metadata."""

    name: str = "backend"

    def __init__(self, info: ModelInfo):
        self.info = info

    @abstractmethod
    def predict(self, batch: np.ndarray) -> np.ndarray:
        """batch: float32 (B, 3, S, S), normalised. Returns float32 probabilities (B, K)."""

    def warmup(self, batch_size: int = 1, iterations: int = 3) -> None:
        s = self.info.preprocess.image_size
        x = np.zeros((batch_size, 3, s, s), np.float32)
        for _ in range(iterations):
            self.predict(x)

    def metadata(self) -> dict[str, Any]:
        """Backend name, device, precision and library versions, recorded beside every number."""
        return {"backend": self.name}
