"""Decoding an image file with a bound on what it may cost: a 97 KB PNG can declare 10000 x 10000
pixels and take a gigabyte once decoded. The size in the header is checked before any pixel is
decoded; the limit is ``config.MAX_PIXELS`` unless the environment sets ``LAYOVER_MAX_PIXELS``
(Pillow's own hard limit, twice ``PIL.Image.MAX_IMAGE_PIXELS``, still applies above it).

Every reader decodes here (training, the feature cache, ``tag``, ``serve``, calibration, parity),
so they see the same pixels: the EXIF orientation applied, 16-bit images scaled to 8 bits
(``DECODE`` names this, and the feature cache records it)."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

from . import checks
from .config import MAX_PIXELS
from .errors import LayoverError


DECODE = "pillow: EXIF orientation applied, 16-bit scaled to 8"


class ImageTooLarge(ValueError):
    """An image declaring more pixels than the limit (a ValueError: loaders skip it as unreadable)."""


def pixel_limit() -> int:
    """The limit: LAYOVER_MAX_PIXELS if set, else config.MAX_PIXELS."""
    text = os.environ.get("LAYOVER_MAX_PIXELS")
    if text is None:
        return MAX_PIXELS
    try:
        return checks.positive_int(int(text), "LAYOVER_MAX_PIXELS")
    except ValueError:
        raise LayoverError(f"LAYOVER_MAX_PIXELS must be a whole number of pixels, got {text!r}") from None


def open_rgb(file, max_pixels: int | None = None):
    """The image in ``file`` (a path or a binary file object) decoded to an RGB PIL image;
    ImageTooLarge above ``max_pixels`` (default: ``pixel_limit()``), OSError/ValueError for data PIL
    cannot read."""
    from PIL import Image
    from_env = max_pixels is None
    limit = pixel_limit() if from_env else max_pixels
    with warnings.catch_warnings():  # Pillow warns from 89 Mpx on; the check below is the one that counts
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(Path(file) if isinstance(file, (str, os.PathLike)) else file)
        except Image.DecompressionBombError as e:
            raise ImageTooLarge(f"declares more pixels than Pillow decodes ({e})") from None
    with im:
        w, h = im.size
        if w * h > limit:
            raise ImageTooLarge(f"image is {w}x{h} = {w * h:,} pixels, over the limit of {limit:,}"
                                + (" (LAYOVER_MAX_PIXELS raises it)" if from_env else ""))
        im.load()  # decode now: a truncated file fails here, where callers catch it
        return to_rgb(upright(im))


def upright(im):
    """The image as viewers show it: its EXIF orientation (a phone photo held sideways) applied."""
    from PIL import ImageOps
    return ImageOps.exif_transpose(im)


def to_rgb(im):
    """8-bit RGB. 16-bit greyscale (Pillow's I;16 modes) is scaled to 8 bits as Pillow scales 16-bit
    colour (the high byte); its own convert would clip every value above 255 to white."""
    if im.mode.startswith("I;16"):
        import numpy as np
        from PIL import Image
        im = Image.fromarray((np.asarray(im).astype(np.uint16) >> 8).astype(np.uint8), "L")
    return im.convert("RGB")
