"""Checkpoints: a directory with ``config.json`` (the ModelConfig), ``head.safetensors`` and,
unless the backbone is timm's unchanged published weights, ``backbone.safetensors``.

Nothing is unpickled on load, and a checkpoint is written into a temporary directory that
replaces the target in one rename.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .config import ModelConfig
from .errors import LayoverError
from .io import atomic_dir, read_json, write_json
from .models import LayoverModel, build_model

FORMAT = "layover-edge/checkpoint/1"


def stores_backbone(cfg: ModelConfig) -> bool:
    return cfg.method == "ft" or cfg.weights != "pretrained"


def _tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def save_checkpoint(model: LayoverModel, cfg: ModelConfig, path: str | Path, extra: dict | None = None) -> Path:
    path = Path(path)
    with atomic_dir(path) as tmp:
        meta = {"format": FORMAT}
        save_file(_tensors(model.head), str(tmp / "head.safetensors"), metadata=meta)
        if stores_backbone(cfg):
            save_file(_tensors(model.backbone.model), str(tmp / "backbone.safetensors"), metadata=meta)
        doc = {"format": FORMAT, "model": cfg.to_dict(), **(extra or {})}
        (tmp / "config.json").write_text(json.dumps(doc, indent=2) + "\n")
    return path


def read_config(path: str | Path) -> tuple[ModelConfig, dict]:
    """The checkpoint's ModelConfig and the rest of its config.json (metrics, provenance)."""
    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise LayoverError(f"{path} is not a layover-edge checkpoint (no config.json)")
    doc = read_json(cfg_file, FORMAT)
    return ModelConfig.from_dict(doc["model"]), doc


def set_thresholds(path: str | Path, thresholds: list[float], provenance: dict) -> ModelConfig:
    """Store per-class thresholds in the checkpoint's config.json (rewritten atomically), with
    where they came from under ``"thresholds"``."""
    path = Path(path)
    cfg, doc = read_config(path)
    cfg = replace(cfg, thresholds=[float(t) for t in thresholds])  # checks the count
    try:
        write_json(path / "config.json", doc | {"model": cfg.to_dict(), "thresholds": provenance})
    except OSError as e:
        raise LayoverError(f"cannot write {path / 'config.json'}: {e}") from None
    return cfg


def _load_into(module: torch.nn.Module, file: Path, what: str) -> None:
    if not file.is_file():
        raise LayoverError(f"checkpoint is missing {file.name}")
    try:
        state = load_file(str(file))
    except Exception as e:  # truncated or foreign files raise several error types
        raise LayoverError(f"cannot read {file}: {e}") from None
    own = module.state_dict()
    if set(state) != set(own) or any(state[k].shape != own[k].shape for k in own):
        raise LayoverError(f"{file} does not match the {what} described by config.json "
                           f"(a checkpoint from another backbone, tap or class count?)")
    module.load_state_dict(state)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[LayoverModel, ModelConfig]:
    path = Path(path)
    cfg, _ = read_config(path)
    has_backbone = stores_backbone(cfg)
    model = build_model(cfg, load_weights=not has_backbone)
    if has_backbone:
        _load_into(model.backbone.model, path / "backbone.safetensors", f"backbone {cfg.backbone}")
    _load_into(model.head, path / "head.safetensors", f"{cfg.method} head")
    return model.to(map_location).eval(), cfg
