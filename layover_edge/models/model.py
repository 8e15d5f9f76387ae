"""The whole model (backbone + head), how to build it from a config, and its parameter counts."""
from __future__ import annotations

from dataclasses import replace

import timm
import torch
from torch import nn

from layover_edge.core.config import ModelConfig
from layover_edge.core.errors import LayoverError

from .backbone import Backbone
from .heads import ConcatHead, LayoverHead, LinearProbe
from .weights import BUILTIN, load_backbone_weights, trained_preprocess


class LayoverModel(nn.Module):
    """Backbone + LP or RM head. With ``frozen`` the backbone stays in eval mode and gets no grads."""

    def __init__(self, backbone: Backbone, head: nn.Module, frozen: bool):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.frozen = frozen
        if frozen:
            backbone.requires_grad_(False)

    def train(self, mode: bool = True) -> "LayoverModel":
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        taps, z = self.backbone(x)
        return (taps[0] if taps else None), z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_alpha(x)[0]

    @property
    def has_gate(self) -> bool:
        return isinstance(self.head, LayoverHead)

    def forward_with_alpha(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits and, for RM, the gate α per image (B,)."""
        h, z = self.features(x)
        if h is None:
            return self.head(z), None
        return self.head(z, h, self.backbone.layout(h)), self.head.alpha(z) if self.has_gate else None


def unknown_backbone(name: str) -> LayoverError:
    """The error for a name timm does not know, with the closest names it does."""
    import difflib
    close = difflib.get_close_matches(name, timm.list_models() + timm.list_models(pretrained=True), n=3, cutoff=0.7)
    hint = f"did you mean {', '.join(close)}?" if close else "timm.list_models() lists the names"
    return LayoverError(f"unknown backbone {name!r}: {hint}")


def create_timm(name: str, pretrained: bool = False) -> nn.Module:
    """A timm model without classifier. ``pretrained`` goes through timm's normal loading: the
    Hugging Face hub cache (``HF_HOME``), so it works offline (``HF_HUB_OFFLINE=1``) once cached."""
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=0)
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise unknown_backbone(name) from None
        raise
    except OSError as e:  # huggingface_hub's offline / not-found errors are OSErrors
        raise LayoverError(f"cannot get the pretrained weights of {name!r} ({type(e).__name__}): not in the "
                           f"hub cache and no network? Download once with network "
                           f"(python -c \"import timm; timm.create_model('{name}', pretrained=True)\"), "
                           f"or pass --weights PATH to a local .safetensors / timm checkpoint") from None


def resolve_config(cfg: ModelConfig) -> ModelConfig:
    """``cfg`` with image size, mean, std and interpolation filled in where unset: from what the
    weights say they were trained with (``weights.trained_preprocess``: a weights package), else
    from the backbone's timm pretrained config. The config is not changed; nothing is built or
    downloaded. The one place a model's preprocessing is decided."""
    if cfg.resolved:
        return cfg
    pretrained = timm.models.get_pretrained_cfg(cfg.backbone)
    if pretrained is None and not timm.is_model(cfg.backbone.split(".")[0]):
        raise unknown_backbone(cfg.backbone)
    trained = trained_preprocess(cfg.weights)
    if trained is not None:
        data = {"input_size": (3, trained.image_size, trained.image_size), "mean": trained.mean, "std": trained.std,
                "interpolation": trained.interpolation}
    else:
        data = timm.data.resolve_data_config(pretrained_cfg=pretrained.to_dict() if pretrained else {})
    return replace(cfg, image_size=cfg.image_size or int(data["input_size"][-1]),
                   mean=cfg.mean or tuple(float(v) for v in data["mean"]),
                   std=cfg.std or tuple(float(v) for v in data["std"]),
                   interpolation=cfg.interpolation or data.get("interpolation", "bilinear"))


def build_head(cfg: ModelConfig, backbone: Backbone) -> nn.Module:
    if cfg.method == "lp":
        return LinearProbe(backbone.num_features, cfg.num_classes)
    if cfg.method == "concat":
        return ConcatHead(backbone.tap_channels[0], backbone.num_features, cfg.num_classes)
    return LayoverHead(backbone.tap_channels[0], backbone.num_features, cfg.num_classes, cfg.rs, cfg.mix)


RANDOM_INIT_SEED = 0


def build_backbone(cfg: ModelConfig, taps: list[int] | None, load_weights: bool = True) -> Backbone:
    """The timm model named by ``cfg`` with its weights, tapped at ``taps``."""
    pretrained = load_weights and cfg.weights == "pretrained"
    with torch.random.fork_rng(devices=[]):
        # "none" means one fixed random init, so the feature cache and the model built to train
        # on it hold the same backbone, whatever the caller's random state
        torch.manual_seed(RANDOM_INIT_SEED)
        timm_model = create_timm(cfg.backbone, pretrained=pretrained)
    if load_weights and cfg.weights not in BUILTIN:
        load_backbone_weights(timm_model, cfg.weights)
    return Backbone(timm_model, taps)


def build_model(cfg: ModelConfig, load_weights: bool = True) -> LayoverModel:
    """Build backbone + head. ``load_weights=False`` skips weight loading (checkpoint restore, meta)."""
    backbone = build_backbone(cfg, [] if cfg.method == "lp" else [cfg.tap], load_weights)
    return LayoverModel(backbone, build_head(cfg, backbone), frozen=cfg.method != "ft")


def count_params(cfg: ModelConfig) -> dict[str, int]:
    """Trainable and total parameters, built on the meta device: no memory, no download."""
    with torch.device("meta"):
        model = build_model(cfg, load_weights=False)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "trainable": trainable,
        "total": sum(p.numel() for p in model.parameters()),
        "backbone": sum(p.numel() for p in model.backbone.parameters()),
        "head": sum(p.numel() for p in model.head.parameters()),
    }
