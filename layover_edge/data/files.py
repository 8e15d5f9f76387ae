"""What every data set read from disk shares: a list of image paths with a target matrix, images
opened lazily, a fingerprint of the content, and the checks that turn bad input into one clear
message naming the file and the problem.

Targets are int8 with 1 = positive, 0 = negative, -1 = ignored (VOC "difficult"). Torch-free:
parity reads these sets on a device without torch, and a DataLoader needs only __len__/__getitem__.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from layover_edge.core.errors import LayoverError
from layover_edge.core.images import DECODE, open_rgb

# Images whose file is missing: "error" stops before any work (a wrong --data-root is the usual
# cause, better found now than an hour into extraction); "skip" loads them as unreadable, so
# they are skipped, counted and listed like corrupt files.
MISSING = ("error", "skip")


def class_index(classes: Sequence[str], source: str) -> dict[str, int]:
    index = {name: i for i, name in enumerate(classes)}
    if len(index) != len(classes):
        dupes = sorted({c for c in classes if list(classes).count(c) > 1})
        raise LayoverError(f"{source}: duplicate class names {dupes}")
    return index


def unknown_label(label: str, classes: Sequence[str], where: str) -> LayoverError:
    shown = ", ".join(list(classes)[:10]) + (", ..." if len(classes) > 10 else "")
    return LayoverError(f"{where}: label {label!r} is not in the class list ({len(classes)} classes: {shown})")


class FileDataset:
    """Images on disk with an (n, K) int8 target matrix; items are ``(PIL image, float target)``."""

    def __init__(self, root: Path, files: Sequence[str], targets: np.ndarray, classes: Sequence[str],
                 split: str, source: str, options: dict[str, Any], missing: str = "error"):
        if missing not in MISSING:
            raise LayoverError(f"missing={missing!r}: choose one of {MISSING}")
        if len(files) == 0:
            raise LayoverError(f"{source}: split {split!r} is empty (no images listed)")
        self.root, self.files = Path(root), list(files)
        self.targets = np.ascontiguousarray(targets, dtype=np.int8)
        self.classes, self.split, self.source = list(classes), split, source
        self._options = options
        absent = [f for f in self.files if not (self.root / f).is_file()]
        if absent and (missing == "error" or len(absent) == len(self.files)):
            raise LayoverError(f"{source}: {len(absent)} of {len(self.files)} images of split {split!r} do not "
                               f"exist, e.g. {self.root / absent[0]}" + (" (check --data-root; --missing skip "
                               "lists them as unreadable instead)" if len(absent) < len(self.files) else
                               " (none exists: check --data-root)"))

    def __len__(self) -> int:
        return len(self.files)

    def path(self, i: int) -> str:
        """The image file of item i, for messages about unreadable images."""
        return os.fspath(self.root / self.files[i])

    def __getitem__(self, i: int) -> tuple[Image.Image, np.ndarray]:
        path = self.root / self.files[i]
        try:
            image = open_rgb(path)
        except FileNotFoundError:
            raise OSError(f"{path}: file not found") from None
        except (OSError, ValueError) as e:
            raise OSError(f"{path}: cannot read image ({e})") from None
        return image, self.targets[i].astype(np.float32)

    def fingerprint(self) -> str:
        """Content hash: relative paths, targets, classes, split, options and how images are decoded
        (not mtimes), so a cache survives moving the data and is refused when any annotation, or the
        decoding, changes."""
        h = hashlib.sha256()
        h.update(json.dumps({"type": type(self).__name__, "split": self.split, "classes": self.classes,
                             "options": self._options, "decode": DECODE}, sort_keys=True).encode())
        h.update("\0".join(self.files).encode())
        h.update(self.targets.tobytes())
        return h.hexdigest()[:16]
