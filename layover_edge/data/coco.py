"""MS-COCO 2014 / 2017 as a multi-label data set, read from the instances JSON through pycocotools.

Layout (the official download): ``ROOT/annotations/instances_{split}{year}.json`` and the images
in ``ROOT/{split}{year}/``; ``split`` is ``train`` or ``val``.

Conventions, and how they relate to prior work (ML-GCN, ASL and the official Layover code):
* Classes are the 80 categories in ascending category-id order (person, bicycle, car, ...), as
  ASL / ML-Decoder index them; ML-GCN and the official Layover code sort by *name* instead.
  The order does not change mAP or CP..OF1, only the index of a class.
* A class is positive when the image has at least one annotation of it, crowd annotations
  included (a crowd of people still shows people).
* Images without any annotation: ML-GCN and ASL drop them from both splits (82,081 of 82,783
  train2014 images, 40,137 of 40,504 val2014). Here ``drop_empty=None`` (the default) drops
  them from the ``train`` split only and keeps them as all-negative elsewhere, so evaluation
  sees every image: a model that tags an empty street scene with "car" loses precision, as it
  should. Pass ``drop_empty=True`` to evaluate exactly like ML-GCN / ASL.
* Object sizes (``size_masks``, for small-/large-object AP and the hard instances) follow COCO's
  own evaluation: an annotation's ``area`` field (the segmentation area in COCO's files; w·h for
  boxes converted from YOLO) against the thresholds 32² and 96² px: small < 32² <= medium <= 96² <
  large. Crowd annotations have no size: COCO's evaluation ignores them at every area range. A file
  whose annotations lack ``area`` has no object sizes.
"""
from __future__ import annotations

import contextlib
import io
import math
from collections import Counter
from pathlib import Path

import numpy as np

from layover_edge.core.errors import LayoverError
from layover_edge.core.io import read_json

from .files import FileDataset

YEARS = (2014, 2017)
SPLITS = ("train", "val")
# pycocotools 2.0.11 cocoeval.py, Params.setDetParams (line 509): areaRng = [[0, 1e5²], [0, 32²],
# [32², 96²], [96², 1e5²]] for 'all', 'small', 'medium', 'large'; evaluateImg (line 251) ignores a
# ground truth with area < aRng[0] or > aRng[1] (and a crowd at every range, line 109), so its ranges
# are closed and an area of exactly 32² (96²) counts as both small and medium (medium and large)
# there. Here each object has one size: small < 32², large > 96², as COCO's detection-evaluation
# page (cocodataset.org/#detection-eval) states them.
SMALL_BELOW, LARGE_ABOVE = 32 ** 2, 96 ** 2


def _check_schema(doc, path: Path) -> None:
    """The keys pycocotools and this loader use; anything else is the wrong file."""
    if not isinstance(doc, dict):
        raise LayoverError(f"{path} is not a COCO instances file: top level is {type(doc).__name__}, not an object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key), list):
            hint = " (a captions or panoptic file?)" if key == "categories" else ""
            raise LayoverError(f"{path} is not a COCO instances file: no {key!r} list{hint}")
    for key, fields in (("images", ("id", "file_name")), ("annotations", ("image_id", "category_id")),
                        ("categories", ("id", "name"))):
        for n, entry in enumerate(doc[key]):
            if not isinstance(entry, dict) or any(f not in entry for f in fields):
                raise LayoverError(f"{path}: {key}[{n}] lacks one of the fields {list(fields)}")
            for f in fields:  # ids are integers and names strings (pycocotools indexes by them)
                want = str if f in ("file_name", "name") else int
                if not isinstance(entry[f], want) or isinstance(entry[f], bool) or entry[f] == "":
                    wanted = "a non-empty string" if want is str else "an integer"
                    raise LayoverError(f"{path}: {key}[{n}].{f} must be {wanted}, got {str(entry[f])[:40]!r}")
    for n, a in enumerate(doc["annotations"]):
        area = a.get("area", 0)
        if not isinstance(area, (int, float)) or isinstance(area, bool) or not math.isfinite(area) or area < 0:
            raise LayoverError(f"{path}: annotations[{n}].area must be a number >= 0 (pixels), got {str(area)[:40]!r}")
    if not doc["categories"]:
        raise LayoverError(f"{path}: no categories")
    for key, field in (("images", "id"), ("categories", "id"), ("categories", "name")):
        twice = sorted((v for v, n in Counter(entry[field] for entry in doc[key]).items() if n > 1), key=str)
        if twice:
            raise LayoverError(f"{path}: duplicate {key} {field}s {twice[:5]}")
    image_ids = {im["id"] for im in doc["images"]}
    for n, a in enumerate(doc["annotations"]):
        if a["image_id"] not in image_ids:
            raise LayoverError(f"{path}: annotations[{n}] (id {a.get('id')}) refers to image_id {a['image_id']}, "
                               f"which is not among the file's images")


def _index(doc):
    """A pycocotools COCO index over an already-parsed document (no second read, no prints)."""
    from pycocotools.coco import COCO
    coco = COCO()
    coco.dataset = doc
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


class CocoDataset(FileDataset):
    """COCO instances as (image, 80-way multi-hot target)."""

    def __init__(self, root: str | Path, split: str = "train", year: int = 2014, drop_empty: bool | None = None,
                 missing: str = "error"):
        if year not in YEARS:
            raise LayoverError(f"COCO year must be one of {YEARS}, got {year}")
        if split not in SPLITS:
            raise LayoverError(f"COCO split must be one of {SPLITS}, got {split!r}")
        root = Path(root)
        ann = root / "annotations" / f"instances_{split}{year}.json"
        doc = read_json(ann, what="COCO annotation file")
        _check_schema(doc, ann)
        coco = _index(doc)
        cat_ids = sorted(coco.getCatIds())
        column = {c: k for k, c in enumerate(cat_ids)}
        img_ids = sorted(coco.getImgIds())
        targets = np.zeros((len(img_ids), len(cat_ids)), np.int8)
        small, large = np.zeros(targets.shape, bool), np.zeros(targets.shape, bool)
        for row, img_id in enumerate(img_ids):
            for a in coco.loadAnns(coco.getAnnIds(imgIds=img_id, iscrowd=None)):
                if a["category_id"] not in column:
                    raise LayoverError(f"{ann}: annotation {a.get('id')} has category_id {a['category_id']}, "
                                       f"which is not among the file's categories")
                targets[row, column[a["category_id"]]] = 1
                if not a.get("iscrowd") and "area" in a:
                    small[row, column[a["category_id"]]] |= a["area"] < SMALL_BELOW
                    large[row, column[a["category_id"]]] |= a["area"] > LARGE_ABOVE
        drop = split == "train" if drop_empty is None else drop_empty
        keep = targets.any(axis=1) if drop else np.ones(len(img_ids), bool)
        images = coco.loadImgs(img_ids)
        files = [f"{split}{year}/{im['file_name']}" for im, k in zip(images, keep) if k]
        super().__init__(root, files, targets[keep], [c["name"] for c in coco.loadCats(cat_ids)], split,
                         str(ann), {"year": year, "drop_empty": bool(drop)}, missing)
        self.image_ids = [i for i, k in zip(img_ids, keep) if k]
        sized = all("area" in a for a in doc["annotations"])
        self._sizes = (small[keep], large[keep]) if sized else None

    def size_masks(self, indices=None) -> tuple[np.ndarray, np.ndarray] | None:
        """(small, large): (len(indices), K) bool, whether each image holds a small / large object of
        each class (``training.metrics.size_ap``); None where the file gives no areas."""
        if self._sizes is None:
            return None
        rows = np.arange(len(self)) if indices is None else np.asarray(indices, int)
        return self._sizes[0][rows], self._sizes[1][rows]
