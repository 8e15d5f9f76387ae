"""layover-edge: the Layover early-exit head for multi-label tagging, from training to the edge.

    import layover_edge as le
    model = le.load("runs/rm/best")   # checkpoint directory, model.onnx or model.engine
    model.predict("photo.jpg")[0].tags

See ``layover_edge.api`` for every call; the CLI (``layover-edge VERB``) runs the same ones.
"""
from .api import (Model, Prediction, bench, connect, evaluate, export, load, parity, select, serve, start_server,
                  train, tune_thresholds)
from .core.config import ExportConfig, ModelConfig, ServeConfig, TrainConfig
from .core.errors import LayoverError
from .data.spec import DataSpec

__version__ = "0.1.0"
__all__ = ["DataSpec", "ExportConfig", "LayoverError", "Model", "ModelConfig", "Prediction", "ServeConfig",
           "TrainConfig", "bench", "connect", "evaluate", "export", "load", "parity", "select", "serve", "start_server",
           "train", "tune_thresholds"]
