"""The whole model (backbone + head), how to build it from a config, and its parameter counts."""
from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

from ..config import ModelConfig
from ..errors import LayoverError
from .backbone import Backbone
from .heads import LayoverHead, LinearProbe


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
        h, z = self.features(x)
        if h is None:
            return self.head(z)
        return self.head(z, h, self.backbone.layout(h))


def create_timm(name: str, pretrained: bool = False) -> nn.Module:
    """A timm model without classifier. ``pretrained`` goes through timm's normal loading: the
    Hugging Face hub cache (``HF_HOME``), so it works offline (``HF_HUB_OFFLINE=1``) once cached."""
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=0)
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise LayoverError(f"unknown backbone {name!r} (see timm.list_models())") from None
        raise
    except OSError as e:  # huggingface_hub's offline / not-found errors are OSErrors
        raise LayoverError(f"cannot get the pretrained weights of {name!r} ({type(e).__name__}): not in the "
                           f"hub cache and no network? Download once with network "
                           f"(python -c \"import timm; timm.create_model('{name}', pretrained=True)\"), "
                           f"or pass --weights PATH to a local .safetensors / timm checkpoint") from None


def load_backbone_weights(model: nn.Module, path: str | Path) -> None:
    """Load a safetensors or torch checkpoint into a timm model; classifier keys are dropped."""
    path = Path(path)
    if not path.is_file():
        raise LayoverError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            for key in ("state_dict", "model", "state_dict_ema"):
                if isinstance(state, dict) and isinstance(state.get(key), dict):
                    state = state[key]
                    break
    except Exception as e:  # safetensors/torch raise many types for truncated or foreign files
        raise LayoverError(f"cannot read weights {path}: {e}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise LayoverError(f"weights {path} hold no state dict of tensors (a whole pickled model? save its "
                           f"state_dict() instead)")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    if missing:
        raise LayoverError(f"weights {path} do not fit {type(model).__name__}: "
                           f"{len(missing)} missing keys, e.g. {missing[:3]}")
    bad = [k for k in own if tuple(state[k].shape) != tuple(own[k].shape)]
    if bad:
        raise LayoverError(f"weights {path} do not fit: shape mismatch for {bad[:3]}")
    model.load_state_dict({k: state[k] for k in own})


def resolve_data_config(cfg: ModelConfig, model: nn.Module) -> None:
    """Fill image size, mean, std and interpolation from timm's pretrained config where unset."""
    data = timm.data.resolve_data_config({}, model=model)
    cfg.image_size = cfg.image_size or int(data["input_size"][-1])
    cfg.mean = cfg.mean or tuple(float(v) for v in data["mean"])
    cfg.std = cfg.std or tuple(float(v) for v in data["std"])
    cfg.interpolation = cfg.interpolation or data.get("interpolation", "bilinear")


def build_head(cfg: ModelConfig, backbone: Backbone) -> nn.Module:
    if cfg.method == "lp":
        return LinearProbe(backbone.num_features, cfg.num_classes)
    return LayoverHead(backbone.tap_channels[0], backbone.num_features, cfg.num_classes, cfg.rs)


RANDOM_INIT_SEED = 0


def build_backbone(cfg: ModelConfig, taps: list[int] | None, load_weights: bool = True) -> Backbone:
    """The timm model named by ``cfg`` with its weights, tapped at ``taps``; fills cfg's data config."""
    pretrained = load_weights and cfg.weights == "pretrained"
    with torch.random.fork_rng(devices=[]):
        # "none" means one fixed random init, so the feature cache and the model built to train
        # on it hold the same backbone, whatever the caller's random state
        torch.manual_seed(RANDOM_INIT_SEED)
        timm_model = create_timm(cfg.backbone, pretrained=pretrained)
    if load_weights and cfg.weights not in ("pretrained", "none"):
        load_backbone_weights(timm_model, cfg.weights)
    resolve_data_config(cfg, timm_model)
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
