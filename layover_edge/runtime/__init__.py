"""Runtime backends behind one interface: ``predict(batch) -> probabilities``."""
from .base import Backend, ModelInfo, Preprocess
from .torch_backend import TorchBackend, model_info

__all__ = ["Backend", "ModelInfo", "Preprocess", "TorchBackend", "model_info"]
