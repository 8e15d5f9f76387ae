"""Which torch device a ``--device`` value means."""
from __future__ import annotations


def resolve_device(name: str):
    """``auto`` is CUDA when available, else the CPU; anything else is passed to torch."""
    import torch
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
