"""Which data set to use and its options, as the CLI's data flags and the Python API's ``data=``
describe it; ``open(split)`` builds the data set. The defaults here are the CLI's defaults."""
from __future__ import annotations

from dataclasses import dataclass

from layover_edge.core.errors import LayoverError

# name -> (default training split, default evaluation split)
DATASETS = {
    "synthetic": ("train", "val"),
    "coco2014": ("train", "val"),
    "coco2017": ("train", "val"),
    "voc2007": ("trainval", "test"),
    "folder": ("train", "val"),
}
EMPTY_IMAGES = {"auto": None, "drop": True, "keep": False}  # COCO images without annotations


def default_splits(name: str) -> tuple[str, str]:
    if name not in DATASETS:
        raise LayoverError(f"unknown data set {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name]


def guess_dataset(root: str) -> str | None:
    """The data set a folder looks like it holds, from the files each reader needs; None if unclear."""
    from pathlib import Path
    folder = Path(root)
    for year in ("2014", "2017"):
        if (folder / "annotations" / f"instances_train{year}.json").is_file() or \
                (folder / "annotations" / f"instances_val{year}.json").is_file():
            return f"coco{year}"
    if any((folder / d).is_dir() for d in ("VOC2007", "ImageSets", "VOCdevkit")):
        return "voc2007"
    if any((folder / f).is_file() for f in ("labels.csv", "train.csv", "val.csv", "train.jsonl", "val.jsonl")):
        return "folder"
    return None


def build_dataset(name: str, split: str, root: str | None = None, **options):
    """A data set by name. ``options`` go to its constructor (sizes and seed for synthetic;
    ``drop_empty`` for COCO; ``source`` for VOC; ``missing`` for the file-based sets)."""
    default_splits(name)
    if name == "synthetic" and root is not None:
        raise LayoverError(f"a data root ({root}) was given, but the data set is synthetic (the default: generated "
                           f"scenes, no files are read): name the data set the root holds with --data (data= in "
                           f"the Python API): {guess_dataset(root) or 'folder, coco2014, coco2017 or voc2007'}")
    if name == "synthetic":
        from .synthetic import SyntheticScenes
        try:
            return SyntheticScenes(split=split, **options)
        except ValueError as e:  # the generator's own range checks (split, class count, image size)
            raise LayoverError(f"synthetic data: {e}") from None
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


@dataclass
class DataSpec:
    """Field names are the CLI's flag names (--data is ``name``, --data-root ``root``)."""

    name: str = "synthetic"
    root: str | None = None
    # synthetic scenes
    train_size: int = 2000
    val_size: int = 1000
    num_classes: int = 10
    data_image_size: int = 96
    data_seed: int = 0
    # data sets read from disk
    empty_images: str = "auto"   # COCO: auto drops empty images from train only (ML-GCN / ASL drop everywhere)
    voc_source: str = "auto"     # VOC labels from XML where present, else ImageSets
    missing: str = "error"       # listed images whose file is missing: error, or skip and list them

    def split(self, role: str, given: str | None = None) -> str:
        """``given``, else the data set's default split for ``role`` ("train" or "val")."""
        return given or default_splits(self.name)[0 if role == "train" else 1]

    def open(self, split: str):
        if self.name == "synthetic":
            size = self.train_size if split == "train" else self.val_size
            return build_dataset("synthetic", split, self.root, num_images=size, image_size=self.data_image_size,
                                 num_classes=self.num_classes, seed=self.data_seed)
        options: dict = {"missing": self.missing}
        if self.name.startswith("coco"):
            options["drop_empty"] = EMPTY_IMAGES[self.empty_images]
        if self.name == "voc2007":
            options["source"] = self.voc_source
        return build_dataset(self.name, split, root=self.root, **options)
