"""Your own photos: an image folder with a label file, CSV or JSON lines.

``ROOT`` holds the images (any sub-folders) and either one label file per split,
``ROOT/{split}.csv`` or ``ROOT/{split}.jsonl``, or one ``ROOT/labels.csv`` / ``labels.jsonl``
with a ``split`` column. Image paths are relative to ROOT (absolute paths work too).

    # CSV: labels separated by ';' (an image with no labels has an empty cell)
    path,labels
    photos/0001.jpg,dog;frisbee
    photos/0002.jpg,cat

    # JSON lines; "ignore" (optional, also a CSV column) lists labels to leave out of the metrics
    {"path": "photos/0001.jpg", "labels": ["dog", "frisbee"], "ignore": ["person"]}

Classes: ``ROOT/classes.txt`` (one name a line, in index order) if present, and then any other
label is an error; otherwise the sorted union of the labels in every label file of ROOT, so all
splits share one class list.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from layover_edge.core.errors import LayoverError, NotFound
from layover_edge.core.io import read_text

from .files import FileDataset, class_index, unknown_label

Row = tuple[str, list[str], list[str]]  # path, labels, ignored labels
FORMATS = (".csv", ".jsonl")


def _names(value, where: str) -> list[str]:
    if isinstance(value, str):
        return [s.strip() for s in value.split(";") if s.strip()]
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return [s.strip() for s in value]
    raise LayoverError(f"{where}: labels must be a list of names or a ';'-separated string, got {value!r}")


def read_rows(path: Path) -> list[tuple[Row, str | None]]:
    """(row, split or None) for every line of a label file."""
    out = []
    text = read_text(path)
    if path.suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if not reader.fieldnames or not {"path", "labels"} <= set(reader.fieldnames):
            raise LayoverError(f"{path}: the header must have 'path' and 'labels' columns, got {reader.fieldnames}")
        for n, rec in enumerate(reader, 2):
            where = f"{path}:{n}"
            if not rec["path"]:
                raise LayoverError(f"{where}: empty path")
            out.append(((rec["path"], _names(rec["labels"] or "", where), _names(rec.get("ignore") or "", where)),
                        rec.get("split") or None))
    else:
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise LayoverError(f"{where}: not valid JSON (truncated?): {e}") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("path"), str) or "labels" not in rec:
                raise LayoverError(f"{where}: expected an object with 'path' (string) and 'labels'")
            out.append(((rec["path"], _names(rec["labels"], where), _names(rec.get("ignore", []), where)),
                        rec.get("split")))
    return out


def label_files(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.suffix in FORMATS and p.is_file())


def split_file(root: Path, split: str) -> tuple[Path, bool]:
    """The file holding ``split`` and whether it needs a ``split`` column (labels.*)."""
    for name, shared in ((split, False), ("labels", True)):
        for ext in FORMATS:
            if (root / f"{name}{ext}").is_file():
                return root / f"{name}{ext}", shared
    raise LayoverError(f"no label file for split {split!r} in {root}: expected {split}.csv, {split}.jsonl, "
                       f"labels.csv or labels.jsonl")


def read_classes(root: Path) -> list[str]:
    listed = root / "classes.txt"
    if listed.is_file():
        names = [line.strip() for line in read_text(listed).splitlines() if line.strip()]
        if not names:
            raise LayoverError(f"{listed} lists no classes")
        return names
    names = {n for f in label_files(root) for (_, labels, ignore), _ in read_rows(f) for n in labels + ignore}
    if not names:
        raise LayoverError(f"no labels in any label file of {root}; add classes.txt or label some images")
    return sorted(names)


class ImageFolder(FileDataset):
    """Images under ROOT labelled by a CSV / JSON-lines file (see the module docstring)."""

    def __init__(self, root: str | Path, split: str = "train", missing: str = "error"):
        root = Path(root)
        if not root.is_dir():
            raise NotFound(f"data set folder not found: {root}")
        path, shared = split_file(root, split)
        rows = read_rows(path)
        if shared:
            if any(s is None for _, s in rows):
                raise LayoverError(f"{path} has no 'split' column/field: add one, or write {split}.csv and friends")
            rows = [r for r in rows if r[1] == split]
        classes = read_classes(root)
        index = class_index(classes, str(root / "classes.txt"))
        targets = np.zeros((len(rows), len(classes)), np.int8)
        for n, ((file, labels, ignore), _) in enumerate(rows):
            for value, names in ((-1, ignore), (1, labels)):  # a label both listed and ignored is positive
                for name in names:
                    if name not in index:
                        raise unknown_label(name, classes, f"{path} ({file})")
                    targets[n, index[name]] = value
        super().__init__(root, [r[0][0] for r in rows], targets, classes, split, str(path), {}, missing)
