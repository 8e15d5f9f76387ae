"""The training transform (``loading.build_transform``: square resize with antialiasing, to [0, 1],
normalise) in numpy and Pillow, for the device: the tagger and parity run it where torch and
torchvision are not installed (a Jetson keeps NVIDIA's torch, or none).

Pillow's resize filters the source with the kernel widened by the scale factor, which is what
torchvision's ``antialias=True`` reproduces on uint8 images, one axis at a time, rounding to uint8 in
between. torchvision resizes the width first; Pillow picks the order by cost, and the order matters
where a bicubic overshoot is clipped in between (up to 19 levels on noise at 600x333 -> 448), so the
two passes are made explicit here. ``nearest`` is torch's: source index floor(i * in / out).
Measured against torchvision 0.29 (tests/test_pixels.py states the bounds it checks): on the
scikit-learn and scikit-image photos and on noise images, bilinear and bicubic differ by at most
2 uint8 levels (2/255 before normalisation), nearest not at all.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from layover_edge.core.config import Preprocess
from layover_edge.core.errors import LayoverError

RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
            "nearest": Image.Resampling.NEAREST}


def to_array(image: Image.Image | np.ndarray, pre: Preprocess) -> np.ndarray:
    """One RGB image (PIL, or an (H, W, 3) uint8 array) as the model's float32 (3, S, S) input."""
    if pre.interpolation not in RESAMPLE:
        raise LayoverError(f"unknown interpolation {pre.interpolation!r}; choose one of {sorted(RESAMPLE)}")
    im = (image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, np.uint8))).convert("RGB")
    size = pre.image_size
    if pre.interpolation == "nearest":
        rows, cols = (np.minimum(np.floor(np.arange(size, dtype=np.float32) * np.float32(n / size)), n - 1)
                      .astype(np.intp) for n in (im.height, im.width))
        pixels = np.asarray(im)[rows[:, None], cols[None, :]]
    else:
        mode = RESAMPLE[pre.interpolation]
        pixels = np.asarray(im.resize((size, im.height), mode).resize((size, size), mode))
    x = pixels.astype(np.float32) / np.float32(255)
    x = (x - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def to_batch(images: Sequence[Image.Image | np.ndarray], pre: Preprocess) -> np.ndarray:
    """(B, 3, S, S) float32 from RGB images."""
    return np.stack([to_array(im, pre) for im in images]) if len(images) else \
        np.empty((0, 3, pre.image_size, pre.image_size), np.float32)
