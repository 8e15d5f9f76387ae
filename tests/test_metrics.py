"""Metrics checked against independent references (sklearn, torchmetrics) and by hand."""

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, precision_score, recall_score
from torchmetrics.classification import MultilabelAveragePrecision

from layover_edge.core.tables import format_table
from layover_edge.training.metrics import average_precision, multilabel_metrics, size_ap


def _random_case(seed: int, n: int = 300, k: int = 7, ties: bool = False, ignored: float = 0.0):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 6, (n, k)) / 5 if ties else rng.random((n, k))
    targets = (rng.random((n, k)) < 0.3).astype(np.int64)
    targets[rng.random((n, k)) < ignored] = -1
    targets[0], targets[1] = 1, 0  # every class has a positive and a negative
    return scores, targets


@pytest.mark.parametrize("ties", [False, True])
def test_ap_matches_sklearn(ties):
    scores, targets = _random_case(0, ties=ties)
    if ties:
        assert len(np.unique(scores)) == 6  # heavy ties: only 6 distinct scores
    expected = [average_precision_score(targets[:, c], scores[:, c]) for c in range(targets.shape[1])]
    np.testing.assert_allclose(average_precision(scores, targets), expected, rtol=1e-12)
    assert multilabel_metrics(scores, targets)["mAP"] == pytest.approx(100 * np.mean(expected), rel=1e-12)


def test_ap_independent_of_row_order_under_ties():
    scores, targets = _random_case(1, ties=True)
    perm = np.random.default_rng(2).permutation(len(scores))
    shuffled = average_precision(scores[perm], targets[perm])
    np.testing.assert_allclose(shuffled, average_precision(scores, targets), rtol=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_map_matches_torchmetrics_with_ignored(ties):
    scores, targets = _random_case(3, ties=ties, ignored=0.15)
    k = targets.shape[1]
    ref = MultilabelAveragePrecision(num_labels=k, average="macro", ignore_index=-1)
    expected = 100 * ref(torch.tensor(scores, dtype=torch.float64), torch.tensor(targets)).item()
    assert multilabel_metrics(scores, targets)["mAP"] == pytest.approx(expected, rel=1e-6)


def test_threshold_metrics_match_sklearn():
    scores, targets = _random_case(4)
    pred = scores >= 0.5
    assert pred.any(0).all() and (targets == 1).any(0).all()  # macro averages well defined
    m = multilabel_metrics(scores, targets)
    ref = {
        "CP": precision_score(targets, pred, average="macro"),
        "CR": recall_score(targets, pred, average="macro"),
        "OP": precision_score(targets, pred, average="micro"),
        "OR": recall_score(targets, pred, average="micro"),
    }
    for key, value in ref.items():
        assert m[key] == pytest.approx(100 * value, rel=1e-12), key
    assert m["CF1"] == pytest.approx(200 * ref["CP"] * ref["CR"] / (ref["CP"] + ref["CR"]), rel=1e-12)
    assert m["OF1"] == pytest.approx(200 * ref["OP"] * ref["OR"] / (ref["OP"] + ref["OR"]), rel=1e-12)


def test_hand_computed_tiny_case():
    scores = np.array([[0.9, 0.2], [0.6, 0.7], [0.4, 0.8], [0.1, 0.55]])
    targets = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    m = multilabel_metrics(scores, targets)
    # AP class 0: ranking 0.9(+) 0.6(-) 0.4(+) 0.1(-) -> (1/1 + 2/3) / 2 = 5/6
    # AP class 1: ranking 0.8(+) 0.7(+) 0.55(-) 0.2(-) -> (1/1 + 2/2) / 2 = 1
    assert m["AP"] == pytest.approx([100 * 5 / 6, 100.0])
    assert m["mAP"] == pytest.approx(100 * 11 / 12)
    # At 0.5: class 0 predicts rows 0,1 -> Nc=1 Np=2 Ng=2; class 1 predicts rows 1,2,3 -> Nc=2 Np=3 Ng=2
    # CP = (1/2 + 2/3)/2 = 7/12, CR = (1/2 + 2/2)/2 = 3/4, CF1 = 2(7/12)(3/4)/(7/12+3/4) = 21/32
    # OP = 3/5, OR = 3/4, OF1 = 2/3
    expected = {"CP": 7 / 12, "CR": 3 / 4, "CF1": 21 / 32, "OP": 3 / 5, "OR": 3 / 4, "OF1": 2 / 3}
    for key, value in expected.items():
        assert m[key] == pytest.approx(100 * value), key
    # ASL's CF1 (mean of per-class F1) would be (1/2 + 4/5)/2 = 0.65, not 21/32
    assert m["CF1"] != pytest.approx(65.0)
    assert m["num_images"] == 4 and m["num_classes_evaluated"] == 2 and m["excluded_classes"] == []


def test_score_equal_to_threshold_is_positive():
    m = multilabel_metrics(np.array([[0.5], [0.2]]), np.array([[1], [0]]))
    assert m["CP"] == m["CR"] == m["OP"] == m["OR"] == 100.0


def test_ignored_entries_change_nothing():
    scores, targets = _random_case(5, ignored=0.2)
    base = multilabel_metrics(scores, targets)
    moved = scores.copy()
    moved[targets == -1] = 1 - moved[targets == -1]  # flip every ignored score across 0.5
    assert multilabel_metrics(moved, targets) == base
    # and equal to evaluating each class on its non-ignored rows only
    keep = targets[:, 0] != -1
    assert base["AP"][0] == pytest.approx(100 * average_precision_score(targets[keep, 0], scores[keep, 0]), rel=1e-12)


def test_class_without_positives_is_excluded():
    scores, targets = _random_case(6)
    targets[:, 2] = np.where(targets[:, 2] == 1, 0, targets[:, 2])
    targets[5, 2] = -1  # an ignored entry is not a positive either
    m = multilabel_metrics(scores, targets)
    assert m["excluded_classes"] == [2] and m["num_classes_evaluated"] == 6
    assert math.isnan(m["AP"][2])
    others = [c for c in range(7) if c != 2]
    assert m["mAP"] == pytest.approx(np.mean([m["AP"][c] for c in others]))
    pred = scores >= 0.5
    assert m["CR"] == pytest.approx(100 * recall_score(targets[:, others], pred[:, others], average="macro"))
    # the excluded class's false positives still count in OP
    fp2 = int((pred[:, 2] & (targets[:, 2] == 0)).sum())
    assert fp2 > 0
    nc = int((pred & (targets == 1)).sum())
    assert m["OP"] == pytest.approx(100 * nc / int((pred & (targets != -1)).sum()))


def test_per_class_thresholds():
    scores, targets = _random_case(7)
    thr = np.linspace(0.2, 0.8, 7)
    m = multilabel_metrics(scores, targets, threshold=thr)
    pred = scores >= thr
    assert m["CP"] == pytest.approx(100 * precision_score(targets, pred, average="macro"), rel=1e-12)
    assert m["OR"] == pytest.approx(100 * recall_score(targets, pred, average="micro"), rel=1e-12)
    assert multilabel_metrics(scores, targets, threshold=np.full(7, 0.5)) == multilabel_metrics(scores, targets)
    with pytest.raises(ValueError):
        multilabel_metrics(scores, targets, threshold=np.full(3, 0.5))


def test_torch_input_and_validation():
    scores, targets = _random_case(8, ignored=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from_torch = multilabel_metrics(torch.tensor(scores, dtype=torch.float32), torch.tensor(targets))
    from_numpy = multilabel_metrics(scores.astype(np.float32), targets)
    assert from_torch == from_numpy
    with pytest.raises(ValueError):
        multilabel_metrics(scores, np.full_like(targets, 2))


def test_format_table():
    rows = {"LP": {"mAP": 80.04, "CP": 75.24, "params": 12288}, "RM@1": {"mAP": 85.96, "CP": float("nan")}}
    text = format_table(rows, columns=("mAP", "CP", "params"))
    assert text.splitlines() == [
        "| Method | mAP | CP | params |",
        "|---|---:|---:|---:|",
        "| LP | 80.0 | 75.2 | 12288 |",
        "| RM@1 | 86.0 | - | - |",
    ]
    keyed = format_table({"resnet | @1": {"mAP": 1.0}}, columns=("mAP",), first="backbone | tap")
    assert keyed.splitlines()[1] == "|---|---|---:|"  # one rule cell per key column


@pytest.mark.parametrize("seed", range(20))
def test_size_ap_is_sklearn_ap_on_the_images_without_the_other_size(seed):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(10, 80)), int(rng.integers(1, 6))
    scores = np.round(rng.random((n, k)), int(rng.integers(1, 4)))  # coarse rounding: ties
    present, is_small = rng.random((n, k)) < 0.4, rng.random((n, k)) < 0.5
    small, large = present & is_small, present & ~is_small
    got = size_ap(scores, present.astype(int), small, large)
    for name, this, other in (("small", small, large), ("large", large, small)):
        expected = []
        for c in range(k):
            keep = ~other[:, c]
            if not this[keep, c].any():
                assert math.isnan(got[f"AP_{name}_per_class"][c])
                continue
            expected.append(100 * average_precision_score(this[keep, c], scores[keep, c]))
            assert got[f"AP_{name}_per_class"][c] == pytest.approx(expected[-1], abs=1e-9)
        assert got[f"AP_{name}"] == pytest.approx(np.mean(expected), abs=1e-9) if expected else math.isnan(got[f"AP_{name}"])


def test_size_masks_of_the_synthetic_scenes_follow_their_objects():
    from layover_edge.data.synthetic import SyntheticScenes
    ds = SyntheticScenes("val", 12, 64, 10)
    small, large = ds.size_masks([3, 5])
    for row, i in enumerate((3, 5)):
        objects = ds.objects(i)
        assert set(np.flatnonzero(large[row])) == {o.class_index for o in objects if not o.is_small}
        assert set(np.flatnonzero(small[row])) == {o.class_index for o in objects if o.is_small}
        assert large[row].sum() == 1 and 1 <= small[row].sum() <= 4
