"""Decoding (core/images.py), which training, the feature cache, tag, serve, calibration and parity
share: 16-bit images scaled to 8 bits (not clipped to white), the EXIF orientation applied, and every
reader seeing the same pixels."""
import numpy as np
import pytest
from faults import png16
from PIL import Image

from layover_edge.apps.sources import decode_image
from layover_edge.core.images import open_rgb

ORIENTATION = 0x0112


def test_16bit_greyscale_png_is_its_8bit_twin(tmp_path):
    grey = np.random.default_rng(0).integers(0, 256, (30, 40), dtype=np.uint16)
    png16(grey * 257, tmp_path / "a16.png")
    assert Image.open(tmp_path / "a16.png").mode.startswith("I;16")  # the mode Pillow's convert clips
    Image.fromarray(grey.astype(np.uint8), "L").save(tmp_path / "b8.png")
    got, want = decode_image(tmp_path / "a16.png"), decode_image(tmp_path / "b8.png")
    assert got.dtype == np.uint8 and got.shape == (30, 40, 3)
    np.testing.assert_array_equal(got, want)
    assert (got == 255).mean() == (want == 255).mean() < 0.01  # clipping made 99 % of these pixels white


def test_16bit_colour_png_is_scaled_the_same_way(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 65536, (12, 16, 3), dtype=np.uint16)
    png16(rgb, tmp_path / "c16.png")
    np.testing.assert_array_equal(decode_image(tmp_path / "c16.png"), (rgb >> 8).astype(np.uint8))


def rotated_photo(path, orientation: int) -> np.ndarray:
    """A 20x40 photo stored landscape with an EXIF orientation; returns the pixels as viewers show them."""
    stored = np.random.default_rng(2).integers(0, 256, (20, 40, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    Image.fromarray(stored).save(path, exif=exif)
    return {6: np.rot90(stored, -1), 8: np.rot90(stored, 1), 3: np.rot90(stored, 2), 1: stored}[orientation]


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_exif_orientation_is_applied_by_every_reader(tmp_path, orientation):
    """The training data set, tag's decoder (serve's too: apps/serve.py decodes with it) and the
    Python API's predict on a PIL image see the photo upright."""
    import layover_edge.api as api
    from layover_edge.data.folder import ImageFolder
    upright = rotated_photo(tmp_path / "0.png", orientation)
    (tmp_path / "labels.csv").write_text("path,labels,split\n0.png,cat,train\n")
    image, _ = ImageFolder(tmp_path, "train")[0]
    np.testing.assert_array_equal(np.asarray(image), upright)
    np.testing.assert_array_equal(np.asarray(open_rgb(tmp_path / "0.png")), upright)
    np.testing.assert_array_equal(decode_image(tmp_path / "0.png"), upright)
    (_, frame), = api._frames([Image.open(tmp_path / "0.png")])
    np.testing.assert_array_equal(frame, upright)


def test_a_file_data_sets_fingerprint_names_the_decoding(tmp_path, monkeypatch):
    """A cache extracted under another decoding is refused, not mixed with this one."""
    import layover_edge.data.files as files
    from layover_edge.data.folder import ImageFolder
    rotated_photo(tmp_path / "0.png", 6)
    (tmp_path / "labels.csv").write_text("path,labels,split\n0.png,cat,train\n")
    before = ImageFolder(tmp_path, "train").fingerprint()
    monkeypatch.setattr(files, "DECODE", "another decoding")
    assert ImageFolder(tmp_path, "train").fingerprint() != before
