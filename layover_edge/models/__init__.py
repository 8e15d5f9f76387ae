"""Backbone wrapper, LP/RM heads and the assembled model."""
from .backbone import Backbone, stage_modules
from .heads import RS_VARIANTS, LayoverHead, LinearProbe, pool1d_summary
from .model import LayoverModel, build_backbone, build_model, count_params, create_timm, load_backbone_weights

__all__ = ["Backbone", "LayoverHead", "LayoverModel", "LinearProbe", "RS_VARIANTS", "build_backbone", "build_model",
           "count_params", "create_timm", "load_backbone_weights", "pool1d_summary", "stage_modules"]
