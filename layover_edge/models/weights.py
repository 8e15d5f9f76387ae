"""Backbone weights named by ``--weights``: a file (safetensors, or a torch checkpoint read with
``weights_only=True``) in timm's layout or in EfficientNet-PyTorch's (converted by role, see
``efficientnet.py``), or an installed weights package (``efficientnet-lite0``). Classifier keys
are dropped where the model has none; every tensor is checked against the model.

``trained_preprocess`` says how named weights were trained (resolution, mean/std, interpolation);
``models.resolve_config`` fills a config's unset preprocessing from it, so the checkpoint records it.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from layover_edge.core.errors import LayoverError, NotFound

from . import efficientnet

BUILTIN = ("pretrained", "none")  # timm's published weights, one fixed random init


def weights_path(weights: str) -> Path:
    """The file ``weights`` (not "pretrained" or "none") names: an installed package's checkpoint,
    or the path itself."""
    package = efficientnet.package_of(weights)
    if package is not None:
        return efficientnet.package_checkpoint(package)
    path = Path(weights)
    if not path.is_file():
        raise NotFound(f"weights file not found: {path} (nor a weights package: "
                           f"{', '.join(sorted(efficientnet.PACKAGES.values()))})")
    return path


def published(weights: str) -> bool:
    """Weights a name brings back on any machine that has them: timm's, or an installed package's."""
    return weights == "pretrained" or efficientnet.package_of(weights) is not None


def trained_preprocess(weights: str) -> efficientnet.Trained | None:
    """How ``weights`` were trained, when they say (a weights package, or a file named after its
    EfficientNet-PyTorch model); None for timm's own weights, random ones and unnamed files."""
    if weights in BUILTIN:
        return None
    name = efficientnet.model_name(weights if efficientnet.package_of(weights) else Path(weights).name)
    return efficientnet.PREPROCESSING.get(name) if name else None


def _read(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            for key in ("state_dict", "model", "state_dict_ema", "model_state_dict"):
                if isinstance(state, dict) and isinstance(state.get(key), dict):
                    state = state[key]
                    break
    except Exception as e:  # safetensors/torch raise many types for truncated or foreign files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LayoverError(f"cannot read weights {path}: {first}") from None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise LayoverError(f"weights {path} hold no state dict of tensors (a whole pickled model? save its "
                           f"state_dict() instead)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_backbone_weights(model: nn.Module, weights: str | Path) -> None:
    """Load a weights file or package (see module doc) into a timm model."""
    path = weights_path(str(weights))
    state = _read(path)
    own = model.state_dict()
    if efficientnet.is_efficientnet_pytorch(state):
        name = efficientnet.model_name(str(weights) if efficientnet.package_of(str(weights)) else path.name)
        efficientnet.check_twin(model, name)
        state = efficientnet.convert_state_dict(state, model)
    missing = sorted(set(own) - set(state))
    if missing:
        raise LayoverError(f"weights {path} do not fit {type(model).__name__}: "
                           f"{len(missing)} missing keys, e.g. {missing[:3]}")
    bad = [k for k in own if tuple(state[k].shape) != tuple(own[k].shape)]
    if bad:
        raise LayoverError(f"weights {path} do not fit: shape mismatch for {bad[:3]}")
    model.load_state_dict({k: state[k] for k in own})
