"""Data sets (each returns ``(PIL image, multi-hot target)`` items with ``classes`` and
``fingerprint()``) and how they become batches."""
from __future__ import annotations

from ..errors import LayoverError
from .loading import Skipped, build_transform, collate, image_loader

DATASETS = ("synthetic",)


def build_dataset(name: str, split: str, root: str | None = None, **options):
    """A data set by name. ``options`` go to its constructor (sizes, seed, ...)."""
    if name == "synthetic":
        from .synthetic import SyntheticScenes
        return SyntheticScenes(split=split, **options)
    raise LayoverError(f"unknown data set {name!r}; choose one of {DATASETS}")


__all__ = ["DATASETS", "Skipped", "build_dataset", "build_transform", "collate", "image_loader"]
