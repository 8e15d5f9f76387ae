"""Data sets (each returns ``(PIL image, multi-hot target)`` items with ``classes`` and
``fingerprint()``) and how they become batches (``loading``).

Targets: 1 = positive, 0 = negative, -1 = ignored (VOC "difficult"). File-based sets also have
``path(i)``, the image behind item i, so unreadable images are reported by name.
"""
from .spec import DATASETS, DataSpec, build_dataset, default_splits

__all__ = ["DATASETS", "DataSpec", "build_dataset", "default_splits"]
