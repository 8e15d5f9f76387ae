"""layover-edge: the Layover early-exit head for multi-label tagging, from training to the edge.

    import layover_edge as le
    model = le.load("runs/rm/best")   # checkpoint directory, model.onnx or model.engine
    model.predict("photo.jpg")[0].tags

See ``layover_edge.api`` for every call; the CLI (``layover-edge VERB``) runs the same ones.
"""
import sys
import types

from .api import (Model, Prediction, bench, connect, evaluate, export, load, parity, select, serve, start_server,
                  train, tune_thresholds)
from .core.config import ExportConfig, ModelConfig, ServeConfig, TrainConfig
from .core.errors import LayoverError
from .data.spec import DataSpec



class _Package(types.ModuleType):
    """``le.export`` is the API function. Importing the subpackage ``layover_edge.export`` (parity and
    the exporters do) would rebind it to the module, which Python sets on its parent after loading it;
    the subpackage stays reachable by its full name (``sys.modules``, ``from layover_edge.export ...``)."""

    def __setattr__(self, name: str, value) -> None:
        if name == "export" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__version__ = "0.1.0"
__all__ = ["DataSpec", "ExportConfig", "LayoverError", "Model", "ModelConfig", "Prediction", "ServeConfig",
           "TrainConfig", "bench", "connect", "evaluate", "export", "load", "parity", "select", "serve", "start_server",
           "train", "tune_thresholds"]
