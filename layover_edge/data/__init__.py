"""Data sets (each returns ``(PIL image, multi-hot target)`` items with ``classes`` and
``fingerprint()``) and how they become batches.

Targets: 1 = positive, 0 = negative, -1 = ignored (VOC "difficult"). File-based sets also have
``path(i)``, the image behind item i, so unreadable images are reported by name.
"""
from __future__ import annotations

from ..errors import LayoverError
from .loading import Skipped, build_transform, collate, image_loader, paper_image_size, skipped_report

# name -> (default training split, default evaluation split)
DATASETS = {
    "synthetic": ("train", "val"),
    "coco2014": ("train", "val"),
    "coco2017": ("train", "val"),
    "voc2007": ("trainval", "test"),
    "folder": ("train", "val"),
}


def default_splits(name: str) -> tuple[str, str]:
    if name not in DATASETS:
        raise LayoverError(f"unknown data set {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name]


def build_dataset(name: str, split: str, root: str | None = None, **options):
    """A data set by name. ``options`` go to its constructor (sizes and seed for synthetic;
    ``drop_empty`` for COCO; ``source`` for VOC; ``missing`` for the file-based sets)."""
    default_splits(name)
    if name == "synthetic":
        from .synthetic import SyntheticScenes
        return SyntheticScenes(split=split, **options)
    if root is None:
        raise LayoverError(f"data set {name!r} is read from disk: give its directory with --data-root")
    if name.startswith("coco"):
        from .coco import CocoDataset
        return CocoDataset(root, split, year=int(name[4:]), **options)
    if name == "voc2007":
        from .voc import Voc2007
        return Voc2007(root, split, **options)
    from .folder import ImageFolder
    return ImageFolder(root, split, **options)


__all__ = ["DATASETS", "Skipped", "build_dataset", "build_transform", "collate", "default_splits", "image_loader",
           "paper_image_size", "skipped_report"]
