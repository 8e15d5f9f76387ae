"""Backbone wrapper, LP/RM heads, the assembled model, its weights and its checkpoint."""
from .backbone import Backbone, stage_modules, tap_layout
from .checkpoint import load_checkpoint, save_checkpoint
from .heads import LayoverHead, LinearProbe, pool1d_summary
from .model import LayoverModel, build_backbone, build_model, count_params, create_timm, resolve_config
from .weights import load_backbone_weights

__all__ = ["Backbone", "LayoverHead", "LayoverModel", "LinearProbe", "build_backbone", "build_model",
           "count_params", "create_timm", "load_backbone_weights", "load_checkpoint", "pool1d_summary",
           "resolve_config", "save_checkpoint", "stage_modules", "tap_layout"]
