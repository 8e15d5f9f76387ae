"""Images for calibration and parity, drawn from a real data set split through the project's data
API, never random tensors.

A data spec is ``NAME:SPLIT`` or ``NAME:SPLIT:key=value,key=value`` (options for the data set's
constructor), e.g. ``synthetic:train`` or ``synthetic:val:num_images=1000,seed=1``. For
``synthetic`` the class count and image size default to the model's and the image count to the
number asked for. Calibration also accepts a ``.npy`` file of preprocessed images (N, 3, S, S).

Images are preprocessed in numpy and Pillow (``data.pixels``, the device's transform), so parity
runs on a device without torch and measures the preprocessing that ships.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from layover_edge.artifacts.model_info import ModelInfo
from layover_edge.core.config import MIN_CALIB, RECOMMENDED_CALIB, Preprocess
from layover_edge.core.errors import LayoverError, NotFound
from layover_edge.data import build_dataset
from layover_edge.data.pixels import to_batch

log = logging.getLogger(__name__)


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_spec(spec: str) -> tuple[str, str, dict]:
    parts = spec.split(":", 2)
    if len(parts) < 2 or not all(parts[:2]):
        raise LayoverError(f"data spec {spec!r} must be NAME:SPLIT[:key=value,...], e.g. synthetic:val")
    options = {}
    for item in filter(None, (parts[2] if len(parts) == 3 else "").split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise LayoverError(f"data spec option {item!r} must be key=value")
        options[key.strip()] = _value(value.strip())
    return parts[0], parts[1], options


def open_split(spec: str, info: ModelInfo, size: int | None, root: str | None = None):
    """The data set a spec names; LayoverError unless its class count is the model's."""
    name, split, options = parse_spec(spec)
    if name == "synthetic":
        options = {"num_classes": len(info.labels), "image_size": info.preprocess.image_size,
                   "num_images": size or 500, **options}
    try:
        ds = build_dataset(name, split, root=root, **options)
    except (TypeError, ValueError) as e:
        raise LayoverError(f"cannot open data {spec!r}: {e}") from None
    if len(ds.classes) != len(info.labels):
        raise LayoverError(f"data {spec!r} has {len(ds.classes)} classes, the model {len(info.labels)}")
    return ds


def image_arrays(ds, pre: Preprocess, batch_size: int, limit: int | None = None, desc: str = "images",
                 progress: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(images float32 (B,3,S,S) preprocessed as the model expects, targets (B,K)); unreadable skipped."""
    total = min(len(ds), limit or len(ds))
    seen = 0
    with tqdm(total=total, desc=desc, disable=not progress, leave=False) as bar:
        for start in range(0, len(ds), batch_size):
            images, targets = [], []
            for i in range(start, min(start + batch_size, len(ds))):
                try:
                    image, target = ds[i]
                    images.append(image)
                    targets.append(np.asarray(target, np.float32))
                except (OSError, ValueError) as e:  # unreadable: skipped and named, as training does
                    log.warning("skipping image %d: %s", i, e)
                if seen + len(images) >= total:
                    break
            if images:
                seen += len(images)
                bar.update(len(images))
                yield to_batch(images, pre), np.stack(targets)
            if seen >= total:
                return


def calibration_images(spec: str, info: ModelInfo, size: int, root: str | None = None,
                       progress: bool = True) -> np.ndarray:
    """(N, 3, S, S) float32 calibration images; LayoverError if too few or the wrong shape."""
    s = info.preprocess.image_size
    if spec.endswith(".npy"):
        path = Path(spec)
        if not path.is_file():
            raise NotFound(f"calibration file not found: {path}")
        try:
            images = np.load(path, allow_pickle=False)[:size]
        except (ValueError, OSError, EOFError) as e:  # truncated, pickled objects, not a .npy at all
            raise LayoverError(f"calibration file {path} is not a readable .npy of images: {e}") from None
        if images.dtype.kind != "f":
            raise LayoverError(f"calibration file {path} holds {images.dtype} values, not preprocessed float images")
    else:
        ds = open_split(spec, info, size, root)
        images = np.concatenate([x for x, _ in image_arrays(ds, info.preprocess, 64, size, "calibration images", progress)] or
                                [np.empty((0, 3, s, s), np.float32)])
    if images.ndim != 4 or images.shape[1:] != (3, s, s):
        raise LayoverError(f"calibration data has shape {images.shape}, the model takes (N, 3, {s}, {s})")
    if not np.isfinite(images).all():
        raise LayoverError(f"calibration data {spec} holds NaN or infinite values")
    if len(images) < MIN_CALIB:
        raise LayoverError(f"only {len(images)} calibration images; INT8 needs at least {MIN_CALIB} "
                           f"(≥ {RECOMMENDED_CALIB} recommended)")
    if len(images) < RECOMMENDED_CALIB:
        log.warning("calibrating INT8 on only %d images: activation ranges may be unstable (use ≥ %d; TensorRT "
                    "recommends about 500)", len(images), RECOMMENDED_CALIB)
    return np.ascontiguousarray(images, np.float32)
