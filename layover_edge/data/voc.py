"""Pascal VOC 2007 as a multi-label data set: 20 classes, "difficult" objects ignored.

Layout (the official tarballs): ``ROOT/VOC2007/{Annotations,ImageSets/Main,JPEGImages}`` (ROOT may
also be the ``VOC2007`` folder itself, or a ``VOCdevkit`` above it). The paper trains on
``trainval`` (5,011 images) and evaluates on ``test`` (4,952).

Targets come from the XML annotations (``source="xml"``) or, where those are absent, from the
per-class lists ``ImageSets/Main/<class>_<split>.txt`` (``source="imagesets"``; the official
code's route), which mark each image 1 / 0 (only difficult objects) / -1. Both give the same
target: 1 if the image has a non-difficult object of the class, -1 (ignored: counted in neither
AP nor the threshold metrics) if all its objects of the class are difficult, else 0.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from layover_edge.core.errors import LayoverError, NotFound
from layover_edge.core.io import read_text

from .files import FileDataset, class_index, unknown_label

CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
           "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
           "tvmonitor")
SOURCES = ("auto", "xml", "imagesets")


def find_voc2007(root: Path) -> Path:
    for candidate in (root, root / "VOC2007", root / "VOCdevkit" / "VOC2007"):
        if (candidate / "ImageSets" / "Main").is_dir():
            return candidate
    raise LayoverError(f"no VOC 2007 data under {root}: expected ImageSets/Main in it, in VOC2007/ "
                       f"or in VOCdevkit/VOC2007/")


def _lines(path: Path) -> list[list[str]]:
    if not path.is_file():
        raise NotFound(f"VOC image set file not found: {path}")
    return [line.split() for line in read_text(path).splitlines() if line.strip()]


def _from_xml(voc: Path, ids: list[str], index: dict[str, int]) -> np.ndarray:
    targets = np.zeros((len(ids), len(CLASSES)), np.int8)
    for row, image_id in enumerate(ids):
        path = voc / "Annotations" / f"{image_id}.xml"
        if not path.is_file():
            raise NotFound(f"VOC annotation not found: {path}")
        try:
            objects = ET.parse(path).getroot().findall("object")
        except ET.ParseError as e:
            raise LayoverError(f"VOC annotation {path} is not valid XML (truncated?): {e}") from None
        for obj in objects:
            name = (obj.findtext("name") or "").strip()
            if name not in index:
                raise unknown_label(name, CLASSES, str(path))
            difficult = (obj.findtext("difficult") or "0").strip() == "1"
            k = index[name]
            targets[row, k] = 1 if not difficult or targets[row, k] == 1 else -1
    return targets


def _from_imagesets(voc: Path, split: str, ids: list[str]) -> np.ndarray:
    row_of = {image_id: r for r, image_id in enumerate(ids)}
    targets = np.zeros((len(ids), len(CLASSES)), np.int8)
    for k, name in enumerate(CLASSES):
        path = voc / "ImageSets" / "Main" / f"{name}_{split}.txt"
        for n, fields in enumerate(_lines(path), 1):
            if len(fields) != 2 or fields[1] not in ("1", "0", "-1") or fields[0] not in row_of:
                raise LayoverError(f"{path}:{n}: expected '<image id in {split}.txt> <1|0|-1>', got {' '.join(fields)!r}")
            targets[row_of[fields[0]], k] = {"1": 1, "0": -1, "-1": 0}[fields[1]]
    return targets


class Voc2007(FileDataset):
    """VOC 2007 ``trainval`` / ``test`` / ``train`` / ``val`` as (image, 20-way target in {1, 0, -1})."""

    def __init__(self, root: str | Path, split: str = "trainval", source: str = "auto", missing: str = "error"):
        if source not in SOURCES:
            raise LayoverError(f"VOC source must be one of {SOURCES}, got {source!r}")
        voc = find_voc2007(Path(root))
        list_file = voc / "ImageSets" / "Main" / f"{split}.txt"
        ids = [fields[0] for fields in _lines(list_file)]
        if source == "auto":
            source = "xml" if (voc / "Annotations").is_dir() else "imagesets"
        targets = (_from_xml(voc, ids, class_index(CLASSES, "VOC")) if source == "xml"
                   else _from_imagesets(voc, split, ids))
        super().__init__(voc, [f"JPEGImages/{i}.jpg" for i in ids], targets, CLASSES, split, str(list_file),
                         {"year": 2007}, missing)
        self.image_ids = ids
