"""Object sizes (COCO's area ranges), small-/large-object AP and the hard-instance mAP, against a
plain-JSON recount of real COCO boxes and against scikit-learn's AP."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import average_precision_score

from layover_edge.core.errors import LayoverError
from layover_edge.data import build_dataset
from layover_edge.data.synthetic import SyntheticScenes
from layover_edge.training.evaluate import size_metrics
from layover_edge.training.metrics import size_ap

from real_data import coco_mini


def sklearn_ap(y: np.ndarray, scores: np.ndarray) -> list[float]:
    """Per-class AP in percent by scikit-learn, NaN for a class without positives."""
    return [100 * average_precision_score(y[:, c], scores[:, c]) if y[:, c].any() else math.nan
            for c in range(y.shape[1])]


# ------------------------------------------------------------------ the COCO loader's object sizes

@pytest.mark.parametrize("split", ["train", "val"])
def test_coco_sizes_match_a_plain_json_recount_of_the_real_boxes(split):
    root = coco_mini()
    if root is None:
        pytest.skip("needs the real COCO photos of ../shared/coco2017-mini beside the repository "
                    "(or LAYOVER_COCO_MINI=path); not shipped with the repository")
    doc = json.loads((root / "annotations" / f"instances_{split}2017.json").read_text())
    column = {c: k for k, c in enumerate(sorted(c["id"] for c in doc["categories"]))}
    boxes: dict[int, list[dict]] = {im["id"]: [] for im in doc["images"]}
    for a in doc["annotations"]:
        boxes[a["image_id"]].append(a)
    ids = [i for i in sorted(boxes) if boxes[i] or split == "val"]  # train drops unannotated images
    small, large = np.zeros((len(ids), 80), bool), np.zeros((len(ids), 80), bool)
    for row, i in enumerate(ids):
        for a in boxes[i]:
            if not a["iscrowd"]:
                small[row, column[a["category_id"]]] |= a["area"] < 32 * 32
                large[row, column[a["category_id"]]] |= a["area"] > 96 * 96

    ds = build_dataset("coco2017", split, str(root))
    assert ds.image_ids == ids
    got_small, got_large = ds.size_masks()
    assert (got_small == small).all() and (got_large == large).all()
    rows = [5, 0, len(ids) - 1]
    assert (ds.size_masks(rows)[0] == small[rows]).all() and (ds.size_masks(rows)[1] == large[rows]).all()
    # the cases the generalised size AP is for occur in these photos
    assert (small & large).any()  # one class at both sizes in one image
    assert ((ds.targets == 1) & ~small & ~large).any()  # a class present at medium size only
    assert (small.any(1) & large.any(1)).sum() > 20  # hard instances


def write_coco(root: Path, annotations: list[dict]) -> None:
    cats = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 18, "name": "dog"}]
    images = [{"id": i, "file_name": f"{i:012d}.jpg", "width": 640, "height": 480} for i in (1, 2, 3, 4)]
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "instances_val2017.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": cats}))
    for im in images:
        (root / "val2017").mkdir(exist_ok=True)
        Image.new("RGB", (8, 8)).save(root / "val2017" / im["file_name"])


def ann(n, image_id, cat, area, crowd=0):
    return {"id": n, "image_id": image_id, "category_id": cat, "area": area, "iscrowd": crowd, "bbox": [0, 0, 1, 1]}


def test_coco_sizes_by_hand_thresholds_crowds_and_files_without_areas(tmp_path):
    write_coco(tmp_path, [ann(1, 1, 1, 1023.9), ann(2, 1, 1, 9216.5),  # person small and large
                          ann(3, 1, 3, 1024), ann(4, 1, 18, 9216),       # the bounds are medium
                          ann(5, 2, 3, 50000, crowd=1), ann(6, 2, 18, 10),  # a crowd has no size
                          ann(7, 3, 1, 0)])                                # image 4: no objects
    ds = build_dataset("coco2017", "val", str(tmp_path))
    small, large = ds.size_masks()
    assert small.tolist() == [[1, 0, 0], [0, 0, 1], [1, 0, 0], [0, 0, 0]]
    assert large.tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]]
    assert ds.targets.tolist() == [[1, 1, 1], [0, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert [m.tolist() for m in ds.size_masks([3, 0])] == [[[0, 0, 0], [1, 0, 0]], [[0, 0, 0], [1, 0, 0]]]

    without = [ann(1, 1, 1, 10)]
    del without[0]["area"]
    write_coco(tmp_path, without)
    ds = build_dataset("coco2017", "val", str(tmp_path))
    assert ds.size_masks() is None
    assert size_metrics(ds, np.zeros((4, 3)), range(4), ds.targets) == {}

    for bad in ("12", -1, True, float("inf")):
        write_coco(tmp_path, [ann(1, 1, 1, bad)])
        with pytest.raises(LayoverError, match=r"annotations\[0\]\.area must be a number >= 0"):
            build_dataset("coco2017", "val", str(tmp_path))


# ------------------------------------------------------------------ size AP and hard mAP vs sklearn

def random_sizes(seed: int, n: int = 120, k: int = 6):
    """Scores with ties, targets with ignored entries, and each present class at 1-3 of the sizes
    small / medium / large (so medium-only, small-and-large and small-and-medium all occur)."""
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random((n, k)), 1)
    present = rng.random((n, k)) < 0.4
    sizes = rng.random((n, k, 3)) < 0.45
    sizes[present & ~sizes.any(-1), int(rng.integers(3))] = True
    small, large = present & sizes[..., 0], present & sizes[..., 2]
    targets = present.astype(np.int64)
    targets[~present & (rng.random((n, k)) < 0.05)] = -1  # VOC-style ignored entries stay ignored
    return scores, targets, small, large


@pytest.mark.parametrize("seed", range(12))
def test_size_ap_is_sklearn_ap_over_the_images_with_this_size_or_without_the_class(seed):
    scores, targets, small, large = random_sizes(seed)
    assert ((targets == 1) & ~small & ~large).any() and (small & large).any()
    got = size_ap(scores, targets, small, large)
    for name, this in (("small", small), ("large", large)):
        expected = []
        for c in range(scores.shape[1]):
            keep = this[:, c] | (targets[:, c] == 0)  # medium-only, other-size-only and ignored images drop out
            if not this[keep, c].any():
                assert math.isnan(got[f"AP_{name}_per_class"][c])
                continue
            expected.append(100 * average_precision_score(this[keep, c], scores[keep, c]))
            assert got[f"AP_{name}_per_class"][c] == pytest.approx(expected[-1], abs=1e-9)
        assert got[f"AP_{name}"] == pytest.approx(np.mean(expected), abs=1e-9)


def test_an_image_holding_the_class_at_medium_size_only_is_ignored_not_a_negative():
    scores = np.array([[0.9], [0.8], [0.2], [0.1]])
    targets = np.array([[1], [1], [1], [0]])          # image 0: the class at medium size only
    small = np.array([[0], [1], [1], [0]], bool)      # image 2: small and large
    large = np.array([[0], [0], [1], [0]], bool)
    got = size_ap(scores, targets, small, large)
    assert got["AP_small"] == pytest.approx(100.0)    # a negative at 0.9 would give 5/6
    assert got["AP_large"] == pytest.approx(100.0)    # image 1 (small only) is ignored too
    assert got["hard_images"] == 1 and got["mAP_hard"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="size mask marks an object"):
        size_ap(scores, np.zeros_like(targets), small, large)


@pytest.mark.parametrize("seed", range(8))
def test_hard_map_is_sklearn_map_over_the_images_with_a_small_and_a_large_object(seed):
    scores, targets, small, large = random_sizes(seed)
    hard = small.any(1) & large.any(1)
    assert 0 < hard.sum() < len(hard)
    got = size_ap(scores, targets, small, large)
    keep_all = targets[hard] != -1
    expected = [100 * average_precision_score(targets[hard][keep_all[:, c], c] == 1, scores[hard][keep_all[:, c], c])
                for c in range(scores.shape[1]) if (targets[hard][:, c] == 1).any()]
    assert got["hard_images"] == int(hard.sum())
    assert got["mAP_hard"] == pytest.approx(np.mean(expected), abs=1e-9)


def test_no_hard_instances_give_nan_not_an_error():
    scores, targets, small, large = random_sizes(0)
    got = size_ap(scores, targets, small, np.zeros_like(large))
    assert got["hard_images"] == 0 and math.isnan(got["mAP_hard"]) and math.isnan(got["AP_large"])


def test_synthetic_results_are_those_of_the_ignore_the_other_size_definition():
    """Every scene holds each class at one size: the generalised rule gives what the synthetic set
    always reported (sklearn over the images without the class at the other size), and every scene
    is a hard instance, so hard mAP is the mAP."""
    ds = SyntheticScenes("val", 150, 32, 8)
    rows = list(range(0, 150, 2))
    targets = np.stack([ds[i][1] for i in rows]).astype(np.int64)
    small, large = ds.size_masks(rows)
    rng = np.random.default_rng(1)
    scores = np.clip(0.5 * targets + rng.normal(0.3, 0.3, targets.shape), 0, 1).round(2)
    got = size_metrics(ds, scores, rows, targets)
    for name, this, other in (("small", small, large), ("large", large, small)):
        expected = [100 * average_precision_score(this[~other[:, c], c], scores[~other[:, c], c])
                    for c in range(8) if this[:, c].any()]
        assert got[f"AP_{name}"] == pytest.approx(np.mean(expected), abs=1e-9)
    assert got["hard_images"] == len(rows)
    assert got["mAP_hard"] == pytest.approx(np.nanmean(sklearn_ap(targets, scores)), abs=1e-9)
