"""Backbone weights from a local file: safetensors or a torch checkpoint (read with
``weights_only=True``), classifier keys dropped, every tensor checked against the model."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from layover_edge.core.errors import LayoverError


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
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LayoverError(f"cannot read weights {path}: {first}") from None
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
