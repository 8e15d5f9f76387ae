import json

import numpy as np
import pytest
import torch
from PIL import Image

from layover_edge.core.config import ModelConfig
from layover_edge.core.errors import LayoverError
from layover_edge.data.synthetic import SyntheticScenes
from layover_edge.kernels.reference import pool
from layover_edge.models import build_backbone, resolve_config
from layover_edge.training.features import FeatureCache, extract_features


class Scenes(SyntheticScenes):
    """Synthetic scenes where chosen items are read from disk (a corrupt file) or interrupt."""

    def __init__(self, *a, corrupt=(), interrupt_at=None, corrupt_file=None, **kw):
        super().__init__(*a, **kw)
        self.corrupt, self.interrupt_at, self.corrupt_file = set(corrupt), interrupt_at, corrupt_file

    def __getitem__(self, i):
        if i == self.interrupt_at:
            raise KeyboardInterrupt
        if i in self.corrupt:
            return Image.open(self.corrupt_file), torch.zeros(self.num_classes)
        return super().__getitem__(i)


def model_cfg(weights="none"):
    return ModelConfig(backbone="test_convnext", num_classes=5, weights=weights, method="lp", image_size=48)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Fixed random weights in a file, so every extraction sees the same backbone."""
    from safetensors.torch import save_file
    torch.manual_seed(0)
    bb = build_backbone(model_cfg(), None)
    path = tmp_path_factory.mktemp("w") / "bb.safetensors"
    save_file({k: v.contiguous() for k, v in bb.model.state_dict().items()}, str(path))
    return str(path)


def test_cache_matches_the_backbone(tmp_path, weights):
    ds = SyntheticScenes("train", 20, 48, 5, seed=1)
    cache = extract_features(model_cfg(weights), ds, "train", tmp_path / "c", batch_size=8, progress=False)
    bb = build_backbone(model_cfg(weights), None).eval()
    from layover_edge.data.loading import build_transform
    x = torch.stack([build_transform(resolve_config(cache_cfg(weights)).preprocess)(ds[i][0]) for i in range(20)])
    with torch.no_grad():
        taps, z = bb(x)
    for t, h in zip(cache.taps, taps):
        p, zc, y = cache.tensors(t)
        torch.testing.assert_close(p, pool(h, bb.layout(h)), rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(zc, z, rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(y, torch.stack([torch.as_tensor(ds[i][1]) for i in range(20)]))


def cache_cfg(weights):
    c = model_cfg(weights)
    build_backbone(c, None, load_weights=False)  # fills mean/std/interpolation like extraction does
    return c


def test_interrupted_extraction_resumes_to_the_same_cache(tmp_path, weights):
    extract_features(model_cfg(weights), Scenes("train", 40, 48, 5), "train", tmp_path / "full",
                            batch_size=8, progress=False)
    with pytest.raises(KeyboardInterrupt):
        extract_features(model_cfg(weights), Scenes("train", 40, 48, 5, interrupt_at=21), "train",
                         tmp_path / "part", batch_size=8, progress=False)
    assert json.loads((tmp_path / "part" / "progress.json").read_text())["done"] == 16
    with pytest.raises(LayoverError, match="incomplete"):
        FeatureCache(tmp_path / "part")
    resumed = extract_features(model_cfg(weights), Scenes("train", 40, 48, 5), "train", tmp_path / "part",
                               batch_size=8, progress=False)
    for name in ["z", "tap1", "tap4", "targets", "valid"]:
        np.testing.assert_array_equal(np.load(tmp_path / "part" / f"{name}.npy"),
                                      np.load(tmp_path / "full" / f"{name}.npy"))
    assert resumed.manifest["complete"]


def test_corrupt_images_are_skipped_and_counted(tmp_path, weights):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not a png")
    ds = Scenes("train", 12, 48, 5, corrupt=(3, 7), corrupt_file=bad)
    cache = extract_features(model_cfg(weights), ds, "train", tmp_path / "c", batch_size=4, progress=False)
    assert cache.manifest["skipped"] == 2
    assert [s["index"] for s in cache.skipped] == [3, 7]
    _, z, _ = cache.tensors(None)
    assert len(z) == 10


def test_mismatched_cache_is_refused(tmp_path, weights):
    extract_features(model_cfg(weights), SyntheticScenes("train", 8, 48, 5), "train", tmp_path / "c",
                     batch_size=8, progress=False)
    with pytest.raises(LayoverError, match="dataset"):
        extract_features(model_cfg(weights), SyntheticScenes("train", 8, 48, 5, seed=3), "train", tmp_path / "c",
                         batch_size=8, progress=False)
    other = model_cfg(weights)
    other.image_size = 64
    with pytest.raises(LayoverError, match="image_size"):
        extract_features(other, SyntheticScenes("train", 8, 48, 5), "train", tmp_path / "c", progress=False)
