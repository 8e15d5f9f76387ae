"""Runtime backends behind one interface: ``predict(batch) -> probabilities``."""
from .base import Backend, ModelInfo, Preprocess
from .factory import KINDS, kind_of, open_backend
from .torch_backend import TorchBackend, model_info

__all__ = ["Backend", "KINDS", "ModelInfo", "Preprocess", "TorchBackend", "kind_of", "model_info", "open_backend"]
