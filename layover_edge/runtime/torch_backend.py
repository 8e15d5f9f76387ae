"""PyTorch eager backend: a layover-edge checkpoint on CPU or CUDA."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import load_checkpoint
from ..config import ModelConfig
from .base import Backend, ModelInfo, Preprocess


def model_info(cfg: ModelConfig, extra: dict | None = None) -> ModelInfo:
    return ModelInfo(labels=list(cfg.labels), thresholds=cfg.thresholds,
                     preprocess=Preprocess(cfg.image_size, tuple(cfg.mean), tuple(cfg.std),
                                           cfg.interpolation or "bilinear"),
                     extra={"method": cfg.method, "backbone": cfg.backbone, **(extra or {})})


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, checkpoint: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32):
        self.device = torch.device(device)
        self.dtype = dtype
        self.model, self.cfg = load_checkpoint(checkpoint, self.device)
        self.model.to(dtype=dtype)
        super().__init__(model_info(self.cfg))

    @torch.inference_mode()
    def predict(self, batch: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(batch).to(self.device, self.dtype)
        return torch.sigmoid(self.model(x).float()).cpu().numpy()

    def metadata(self) -> dict[str, Any]:
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        return {"backend": self.name, "device": name, "precision": str(self.dtype).removeprefix("torch."),
                "torch": torch.__version__}
