"""The one interface every runtime backend implements, so the tagger, parity, the benchmarks and
the server run the same code on PyTorch, ONNX Runtime and TensorRT.

A backend takes a preprocessed float32 NCHW batch (``info.preprocess`` says how to make one from
images) and returns the model's outputs as float32 numpy arrays: ``run`` gives ``logits`` and
``probabilities`` (B, K), ``predict`` the probabilities alone.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable

import numpy as np

from layover_edge.artifacts.model_info import ModelInfo

OUTPUTS = ("logits", "probabilities")


class Backend(ABC):
    """``run(batch) -> {logits, probabilities}``, ``predict(batch) -> probabilities``, plus warm-up,
    metadata and, where the model lives on a GPU, a device-resident runner for benchmarks."""

    name: str = "backend"
    #: (min, max) batch the model accepts (a static ONNX graph, an engine's profile), or None for
    #: any: ``run`` splits larger batches and pads smaller ones, dropping the padding again.
    batch_range: tuple[int, int] | None = None
    #: the model file, where there is one
    path: Path | None = None

    def __init__(self, info: ModelInfo):
        self.info = info

    @abstractmethod
    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """One call of the model on a batch whose size it accepts; float32 outputs by name."""

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """batch: float32 (B, 3, S, S), normalised. Returns float32 ``logits`` and ``probabilities``."""
        x = np.ascontiguousarray(batch, np.float32)
        if self.batch_range is None:
            return self._run(x)
        low, high = self.batch_range
        parts = []
        for start in range(0, len(x), high):
            chunk = x[start:start + high]
            n = len(chunk)
            if n < low:
                chunk = np.concatenate([chunk, np.zeros((low - n, *chunk.shape[1:]), np.float32)])
            parts.append({k: v[:n] for k, v in self._run(chunk).items()})
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Per-class probabilities (B, K), float32."""
        return self.run(batch)["probabilities"]

    def predict_with_alpha(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities and, where the backend can tell, the RM gate α per image (B,): how much the
        branch is in use. Exported graphs output logits and probabilities only, so here None."""
        return self.predict(batch), None

    def warmup(self, batch_size: int = 1, iterations: int = 3) -> None:
        s = self.info.preprocess.image_size
        x = np.zeros((batch_size, 3, s, s), np.float32)
        for _ in range(iterations):
            self.predict(x)

    def device_runner(self, batch: np.ndarray) -> Callable[[], Any] | None:
        """A zero-argument call that runs one inference on a copy of ``batch`` already where the model
        runs (its output left there; the torch backend's ``device_timer`` times it), or None if the backend
        cannot hold a batch there."""
        return None

    def device_timer(self, batch: np.ndarray) -> Callable[[], float] | None:
        """A zero-argument call that runs one inference on a copy of ``batch`` already on the GPU and
        returns its device time in ms (CUDA events on the backend's own stream, waited for: one
        request's latency), or None where the model does not run on a GPU."""
        return None

    def model_bytes(self) -> int:
        """What the model weighs: its file on disk, or its tensors in memory."""
        return self.path.stat().st_size if self.path is not None else 0

    def metadata(self) -> dict[str, Any]:
        """Backend name, device, precision and library versions, recorded beside every number."""
        return {"backend": self.name}
