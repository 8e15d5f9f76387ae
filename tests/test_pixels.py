"""The device's numpy/Pillow preprocessing (data/pixels.py) against the training transform
(torchvision, data/loading.build_transform) on real photos and on noise, at the bounds the module
states: bilinear and bicubic within 2 uint8 levels (on at most 5 % of the values), nearest exact."""
import numpy as np
import pytest
from PIL import Image

from layover_edge.core.config import Preprocess
from layover_edge.data.pixels import to_array, to_batch

pytest.importorskip("torchvision")
from layover_edge.data.loading import build_transform  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def photos() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_sample_images
    out = {f"sklearn-{i}": a for i, a in enumerate(load_sample_images().images)}  # china, flower: 427x640
    try:
        import skimage.data
        out |= {n: getattr(skimage.data, n)() for n in ("astronaut", "coffee", "chelsea", "hubble_deep_field")}
    except ImportError:  # scikit-image is in the dev extra; without it the scikit-learn photos still run
        pass
    rng = np.random.default_rng(0)
    # noise: worst case for rounding; shapes that upsample, downsample, and do one of each per axis
    out |= {f"noise-{h}x{w}": rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            for h, w in ((37, 53), (96, 96), (600, 333), (17, 400))}
    return out


@pytest.mark.parametrize("interpolation,size", [("bilinear", 224), ("bicubic", 224), ("bilinear", 448),
                                                ("bicubic", 448), ("nearest", 224), ("bicubic", 64)])
def test_matches_the_training_transform(interpolation, size):
    pre = Preprocess(size, MEAN, STD, interpolation)
    torchvision = build_transform(pre)
    for name, rgb in photos().items():
        ref = torchvision(Image.fromarray(rgb)).numpy()
        got = to_array(rgb, pre)
        assert got.shape == ref.shape == (3, size, size) and got.dtype == np.float32
        levels = np.abs(got - ref) * np.asarray(STD, np.float32)[:, None, None] * 255  # back to uint8 steps
        if interpolation == "nearest":
            assert levels.max() < 1e-3, name
        else:
            assert levels.max() <= 2 + 1e-3 and (levels > 0.5).mean() <= 0.05, (name, levels.max())


def test_pil_images_arrays_and_other_modes_agree():
    pre = Preprocess(32, MEAN, STD, "bilinear")
    rgb = np.random.default_rng(1).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    batch = to_batch([rgb, Image.fromarray(rgb), Image.fromarray(rgb).convert("RGBA")], pre)
    assert batch.shape == (3, 3, 32, 32)
    np.testing.assert_array_equal(batch[0], batch[1])
    np.testing.assert_array_equal(batch[0], batch[2])
