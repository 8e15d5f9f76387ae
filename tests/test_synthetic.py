"""Synthetic data: determinism, random access, label/layout consistency, geometry, balance, save()."""

import csv
import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from layover_edge.data.synthetic import (
    SOURCE_SHAPES,
    TARGET_SHAPES,
    SyntheticScenes,
    SyntheticSource,
)


def _bytes(ds, indices) -> bytes:
    return b"".join(ds[i][0].tobytes() for i in indices)


@pytest.mark.parametrize("cls", [SyntheticScenes, SyntheticSource])
def test_deterministic_per_seed_and_split(cls):
    a, b = cls(num_images=8, seed=3), cls(num_images=8, seed=3)
    assert _bytes(a, range(8)) == _bytes(b, range(8))
    assert all(torch.equal(torch.as_tensor(a[i][1]), torch.as_tensor(b[i][1])) for i in range(8))
    assert _bytes(a, range(8)) != _bytes(cls(num_images=8, seed=4), range(8))
    assert _bytes(a, range(8)) != _bytes(cls("val", num_images=8, seed=3), range(8))
    assert a.fingerprint() == b.fingerprint()
    variants = [cls(num_images=8, seed=4), cls("val", num_images=8, seed=3), cls(num_images=9, seed=3),
                cls(num_images=8, seed=3, image_size=64)]
    assert len({a.fingerprint(), *(v.fingerprint() for v in variants)}) == 5


def test_golden_output():
    """Catches generator changes without a GENERATOR_VERSION bump (and numpy/PIL stream changes)."""
    assert SyntheticScenes().fingerprint() == "4d956274452a00b3"
    assert SyntheticSource().fingerprint() == "10e1047d8e468c0e"
    assert hashlib.sha256(_bytes(SyntheticScenes(), range(3))).hexdigest()[:16] == "a29db09ce78f511d"
    assert hashlib.sha256(_bytes(SyntheticSource(), range(3))).hexdigest()[:16] == "6b2e860f3f1e1169"


@pytest.mark.parametrize("cls", [SyntheticScenes, SyntheticSource])
def test_random_access(cls):
    in_loop = [cls(num_images=30)[i] for i in range(30)]
    alone = cls(num_images=30)[17]
    assert alone[0].tobytes() == in_loop[17][0].tobytes()
    assert torch.equal(torch.as_tensor(alone[1]), torch.as_tensor(in_loop[17][1]))
    with pytest.raises(IndexError):
        cls(num_images=30)[30]


def test_targets_match_objects_and_geometry():
    ds = SyntheticScenes(num_images=200)
    s = ds.image_size
    for i in range(len(ds)):
        img, target = ds[i]
        objs = ds.objects(i)
        assert img.mode == "RGB" and img.size == (s, s)
        assert target.dtype == np.float32 and target.shape == (ds.num_classes,)
        classes = [o.class_index for o in objs]
        assert len(set(classes)) == len(classes)  # all objects of different classes
        assert torch.equal(torch.as_tensor(target), torch.zeros(ds.num_classes).index_fill_(0, torch.tensor(classes), 1))
        large = [o for o in objs if not o.is_small]
        small = [o for o in objs if o.is_small]
        assert len(large) == 1 and 1 <= len(small) <= 4
        # a shape covers at most its box, so box area bounds the pixel area fraction
        assert large[0].size ** 2 / s**2 >= 0.34**2
        assert all(o.size ** 2 / s**2 <= 0.125**2 for o in small)


def test_pixels_small_objects_small_and_visible():
    """Saturated colour appears only inside object boxes; each small object shows, covering <= 1.6 % of pixels."""
    ds = SyntheticScenes(num_images=50)
    s = ds.image_size
    for i in range(len(ds)):
        px = np.asarray(ds[i][0]).astype(int)
        saturated = px.max(-1) - px.min(-1) > 50  # palette colours >= ~80, background clutter <= ~25
        layout = ds._layout(ds._rng(i))  # private: the boxes, to locate each object's pixels
        boxes = [(slice(o.y, o.y + o.size), slice(o.x, o.x + o.size)) for o in layout]
        inside = np.zeros((s, s), bool)
        for box in boxes:
            inside[box] = True
        assert not saturated[~inside].any()
        assert saturated[boxes[0]].sum() / s**2 >= 0.05
        for box in boxes[1:]:
            assert 0 < saturated[box].sum() / s**2 <= 0.125**2


def test_class_balance():
    ds = SyntheticScenes(num_images=2000)
    counts = np.zeros(ds.num_classes)
    large = np.zeros(ds.num_classes)
    for i in range(len(ds)):
        objs = ds.objects(i)
        counts[[o.class_index for o in objs]] += 1
        large[objs[0].class_index] += 1
    assert np.abs(counts / counts.mean() - 1).max() < 0.15
    assert np.abs(large / large.mean() - 1).max() < 0.3


def test_source_task():
    ds = SyntheticSource(num_images=300, num_classes=21)
    labels = [ds[i][1] for i in range(len(ds))]
    assert all(isinstance(y, int) for y in labels) and set(labels) == set(range(21))
    assert not set(TARGET_SHAPES) & set(SOURCE_SHAPES)
    assert not set(ds.classes) & set(SyntheticScenes().classes)
    assert len(set(ds.classes)) == 21 and len(set(SyntheticScenes(num_classes=210).classes)) == 210


def test_transform_is_applied():
    ds = SyntheticScenes(num_images=2, transform=lambda im: torch.from_numpy(np.array(im)).permute(2, 0, 1))
    assert ds[0][0].shape == (3, 96, 96)


def test_save_round_trip(tmp_path):
    ds = SyntheticScenes("val", num_images=6, image_size=64)
    csv_path = ds.save(tmp_path)
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "labels"] and len(rows) == 6
    for i, row in enumerate(rows):
        img, target = ds[i]
        assert np.array_equal(np.asarray(Image.open(tmp_path / row["path"]).convert("RGB")), np.asarray(img))
        names = row["labels"].split(";")
        assert torch.equal(torch.tensor([float(c in names) for c in ds.classes]), torch.as_tensor(target))
