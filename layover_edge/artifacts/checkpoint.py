"""The checkpoint directory: ``config.json`` (the ModelConfig, plus training provenance),
``head.safetensors`` and, unless the backbone is unchanged published weights (timm's, or an
installed weights package: ``models.checkpoint.stores_backbone``), ``backbone.safetensors``.

Tensors are safetensors (nothing is unpickled), and a checkpoint is written into a temporary
directory that replaces the target in one rename. Building the model they fill is
``models.load_checkpoint``'s job.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

from layover_edge.core.config import ModelConfig
from layover_edge.core.errors import LayoverError, NotFound
from layover_edge.core.io import atomic_dir, read_json, safetensors_bytes, sha256, write_json

FORMAT = "layover-edge/checkpoint/1"
HEAD, BACKBONE = "head.safetensors", "backbone.safetensors"


def write_checkpoint(path: str | Path, cfg: ModelConfig, head: Mapping[str, Any],
                     backbone: Mapping[str, Any] | None = None, extra: dict | None = None) -> Path:
    """Write the tensors (name -> CPU tensor) and config.json as one atomic directory."""
    path = Path(path)
    with atomic_dir(path) as tmp:
        meta = {"format": FORMAT}
        (tmp / HEAD).write_bytes(safetensors_bytes(dict(head), meta))
        if backbone is not None:
            (tmp / BACKBONE).write_bytes(safetensors_bytes(dict(backbone), meta))
        doc = {"format": FORMAT, "model": cfg.to_dict(), **(extra or {})}
        (tmp / "config.json").write_text(json.dumps(doc, indent=2) + "\n")
    return path


def read_config(path: str | Path) -> tuple[ModelConfig, dict]:
    """The checkpoint's ModelConfig and the rest of its config.json (metrics, provenance)."""
    path = Path(path)
    cfg_file = path / "config.json"
    if not path.exists():
        raise NotFound(f"checkpoint not found: {path}")
    if not cfg_file.is_file():
        raise LayoverError(f"{path} is not a layover-edge checkpoint (no config.json)")
    doc = read_json(cfg_file, FORMAT)
    try:
        return ModelConfig.from_dict(doc.get("model")), doc
    except LayoverError as e:  # wrong types or ranges: name the file, never build from it
        raise LayoverError(f"{cfg_file}: {e}") from None


def checkpoint_id(path: str | Path) -> str:
    """What identifies a checkpoint's model: a hash of its ModelConfig (labels and thresholds
    included) and its tensor files, recorded in every export so a folder's files can be matched."""
    import hashlib
    path = Path(path)
    cfg, _ = read_config(path)
    h = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode())
    for name in (HEAD, BACKBONE):
        if (path / name).is_file():
            h.update(f"{name}:{sha256(path / name)}".encode())
    return h.hexdigest()[:16]


def read_tensors(path: str | Path, name: str, expected: Mapping[str, Any], what: str) -> dict:
    """The tensors of ``path/name``; LayoverError unless their names and shapes are ``expected``'s
    (a state dict of the module they are for)."""
    from safetensors.torch import load_file
    file = Path(path) / name
    if not file.is_file():
        raise LayoverError(f"checkpoint is missing {file.name}")
    try:
        state = load_file(str(file))
    except Exception as e:  # truncated or foreign files raise several error types
        raise LayoverError(f"cannot read {file}: {e}") from None
    if set(state) != set(expected) or any(state[k].shape != expected[k].shape for k in expected):
        raise LayoverError(f"{file} does not match the {what} described by config.json "
                           f"(a checkpoint from another backbone, tap, mix or class count?)")
    for k in sorted(expected):  # loading would cast silently: an int8 weight would become a float one
        if state[k].dtype != expected[k].dtype:
            raise LayoverError(f"{file}: tensor {k!r} is {str(state[k].dtype).removeprefix('torch.')}, the {what} "
                               f"holds {str(expected[k].dtype).removeprefix('torch.')} (a damaged or hand-edited "
                               f"checkpoint)")
        if state[k].is_floating_point() and not bool(state[k].isfinite().all()):
            bad = "NaN" if bool(state[k].isnan().any()) else "infinite values"
            raise LayoverError(f"{file}: tensor {k!r} holds {bad}: a model computed from it would answer garbage")
    return state


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
