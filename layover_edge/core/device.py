"""Which torch device a ``--device`` value means, refused up front when this machine lacks it."""
from __future__ import annotations

from .config import check_device
from .errors import LayoverError


def resolve_device(name: str):
    """``auto`` is CUDA when available, else the CPU; ``cuda[:N]`` and ``mps`` must exist here."""
    import torch
    check_device(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise LayoverError(f"--device {name}: this machine has {count} CUDA device(s)"
                               + (" (no driver or no GPU)" if count == 0 else f" (cuda:0 to cuda:{count - 1})"))
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise LayoverError(f"--device {name}: MPS is not available on this machine")
    return device
