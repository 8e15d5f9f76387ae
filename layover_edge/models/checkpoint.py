"""A model to and from its checkpoint directory (the format: ``artifacts.checkpoint``)."""
from __future__ import annotations

from pathlib import Path

import torch

from layover_edge.artifacts.checkpoint import BACKBONE, HEAD, read_config, read_tensors, write_checkpoint
from layover_edge.core.config import ModelConfig
from layover_edge.core.errors import LayoverError

from .heads import fold_standardisation
from .model import LayoverModel, build_model, resolve_config
from .weights import published


def stores_backbone(cfg: ModelConfig) -> bool:
    """Whether the checkpoint holds the backbone: fine-tuned, or weights no name can bring back."""
    return cfg.method == "ft" or not published(cfg.weights)


def _tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def save_checkpoint(model: LayoverModel, cfg: ModelConfig, path: str | Path, extra: dict | None = None) -> Path:
    """``cfg`` is written resolved, so the checkpoint names its preprocessing whatever the caller left unset."""
    backbone = _tensors(model.backbone.model) if stores_backbone(cfg) else None
    return write_checkpoint(path, resolve_config(cfg), _tensors(model.head), backbone, extra)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[LayoverModel, ModelConfig]:
    """The model in its deployed form: a residual head's standardisation folded into its weights."""
    cfg, _ = read_config(path)
    has_backbone = stores_backbone(cfg)
    model = build_model(cfg, load_weights=not has_backbone)
    if has_backbone:
        state = read_tensors(path, BACKBONE, model.backbone.model.state_dict(), f"backbone {cfg.backbone}")
        model.backbone.model.load_state_dict(state)
    head = read_tensors(path, HEAD, model.head.state_dict(), f"{cfg.method} head")
    for k, v in head.items():
        if k.endswith("standardise.std") and not bool((v > 0).all()):
            raise LayoverError(f"{Path(path) / HEAD}: the tap standardisation σ ({k!r}) holds {v.min().item():g}: "
                               f"every σ must be positive (training floors it at 10⁻³ of its mean)")
    model.head.load_state_dict(head)
    fold_standardisation(model.head)
    if not all(bool(t.isfinite().all()) for t in model.head.state_dict().values() if t.is_floating_point()):
        raise LayoverError(f"{Path(path) / HEAD}: folding the tap standardisation into W_rs overflows (a σ too "
                           f"small for float32)")
    return model.to(map_location).eval(), cfg
