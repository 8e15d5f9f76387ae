"""Backbone wrapper, LP/RM/concat heads, the assembled model, its weights and its checkpoint."""
from .backbone import Backbone, stage_modules, tap_layout
from .checkpoint import load_checkpoint, save_checkpoint
from .heads import ConcatHead, LayoverHead, LinearProbe, fold_standardisation, pool1d_summary, standardisation
from .model import LayoverModel, build_backbone, build_model, count_params, create_timm, resolve_config
from .weights import load_backbone_weights, weights_path

__all__ = ["Backbone", "ConcatHead", "LayoverHead", "LayoverModel", "LinearProbe", "build_backbone", "build_model",
           "count_params", "create_timm", "fold_standardisation", "load_backbone_weights", "load_checkpoint",
           "pool1d_summary", "resolve_config", "save_checkpoint", "stage_modules", "standardisation", "tap_layout",
           "weights_path"]
