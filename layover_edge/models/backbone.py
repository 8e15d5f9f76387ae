"""A frozen-or-not timm backbone that yields the tapped stage outputs h and the pre-logits z
in one forward pass.

Taps follow the paper's naming: ``@k`` is the output of the k-th stage. They are read from
timm's ``feature_info``, dropping a leading stride-2 stem entry, so for
- ResNet / BiT ResNetV2: @1..@4 = ``stages.0..3`` (``layer1..4`` for torchvision-style ResNets);
  BiT-R50x3 @1 at 448 px is (B, 768, 112, 112) NCHW;
- Swin: @1..@4 = ``layers.0..3``, NHWC, Swin-B @1 at 384 px is (B, 96, 96, 128). timm >= 0.9
  puts patch merging at the *start* of a stage, so the official code's Swin "@1" (timm 0.6.7,
  merging at the end) is today's @2;
- ViT: @1..@depth = ``blocks.0..``, tokens (B, L, C) with the class token included.
"""
from __future__ import annotations

import torch
from torch import nn

from layover_edge.core.errors import LayoverError

Layout = str  # "NCHW" | "NHWC" | "NLC"


def stage_modules(model: nn.Module) -> list[dict]:
    """feature_info entries for the paper's stages @1..@n (stride-2 stems dropped)."""
    info = list(getattr(model, "feature_info", None) or [])
    if not info:
        raise LayoverError(f"{type(model).__name__} has no feature_info; it cannot be tapped")
    if info[0]["reduction"] <= 2 and len(info) > 1:
        info = info[1:]
    return info


def tap_layout(model: nn.Module, ndim: int) -> Layout:
    if ndim == 3:
        return "NLC"
    return "NHWC" if getattr(model, "output_fmt", "NCHW") == "NHWC" else "NCHW"


class Backbone(nn.Module):
    """Wraps a timm model (built with ``num_classes=0``) and captures stage outputs by hooks.

    ``forward(x) -> (taps, z)``: ``taps`` lists the outputs of ``self.taps`` (1-based stage
    indices, None for all stages) in their native layout, ``z`` is the pooled, normalised pre-logit vector.
    """

    def __init__(self, model: nn.Module, taps: list[int] | None):
        super().__init__()
        self.model = model
        stages = stage_modules(model)
        taps = list(range(1, len(stages) + 1)) if taps is None else taps
        for t in taps:
            if not 1 <= t <= len(stages):
                raise LayoverError(f"tap @{t} is out of range: this backbone has stages @1..@{len(stages)}")
        self.taps = list(taps)
        self.tap_modules = [stages[t - 1]["module"] for t in taps]
        self.tap_channels = [int(stages[t - 1]["num_chs"]) for t in taps]
        # the pre-logit width: differs from num_features where the head has a hidden layer (MambaOut)
        self.num_features = int(getattr(model, "head_hidden_size", None) or model.num_features)
        self._captured: dict[str, torch.Tensor] = {}
        modules = dict(model.named_modules())
        for name in dict.fromkeys(self.tap_modules):
            modules[name].register_forward_hook(self._capture(name))

    def _capture(self, name: str):
        def hook(_module, _inputs, output):
            self._captured[name] = output
        return hook

    def layout(self, h: torch.Tensor) -> Layout:
        return tap_layout(self.model, h.dim())

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        self._captured.clear()
        feats = self.model.forward_features(x)
        z = self.model.forward_head(feats, pre_logits=True)
        taps = [self._captured[name] for name in self.tap_modules]
        self._captured.clear()
        return taps, z
