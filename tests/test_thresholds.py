"""Per-class threshold tuning against scikit-learn's precision-recall curve, and the
`thresholds` verb writing them into a checkpoint that eval and tag then use."""
import json

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_recall_curve, precision_score, recall_score

from layover_edge.artifacts.checkpoint import read_config
from layover_edge.cli import main
from layover_edge.training.thresholds import pr_curve, tune_class, tune_thresholds


def scored_class(rng, n=300, ties=False):
    y = (rng.random(n) < 0.3).astype(np.int64)
    s = np.clip(0.35 * y + rng.normal(0.3, 0.2, n), 0, 1).astype(np.float32)
    if ties:
        s = (np.round(s * 10) / 10).astype(np.float32)
    return s, y


@pytest.mark.parametrize("ties", [False, True])
def test_f1_threshold_reaches_the_best_f1_of_the_pr_curve(ties):
    rng = np.random.default_rng(0)
    for _ in range(20):
        s, y = scored_class(rng, ties=ties)
        t = tune_class(s, y, "f1")
        p, r, _ = precision_recall_curve(y, s)
        best = np.max(np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0))
        assert f1_score(y, s >= t.threshold) == pytest.approx(best, abs=1e-9)
        assert t.f1 == pytest.approx(best, abs=1e-9)
        assert precision_score(y, s >= t.threshold) == pytest.approx(t.precision)
        assert recall_score(y, s >= t.threshold) == pytest.approx(t.recall)


def test_pr_curve_matches_scikit_learn():
    rng = np.random.default_rng(3)
    s, y = scored_class(rng, ties=True)
    recall, precision = pr_curve(s, y)
    p, r, _ = precision_recall_curve(y, s)
    # scikit-learn lists low to high threshold and appends (recall 0, precision 1)
    np.testing.assert_allclose(recall, r[-2::-1])
    np.testing.assert_allclose(precision, p[-2::-1])


def test_threshold_lies_strictly_between_neighbouring_scores():
    s = np.array([0.9, 0.8, 0.7, 0.2, 0.1], np.float32)
    y = np.array([1, 1, 1, 0, 0])
    t = tune_class(s, y, "f1")
    assert 0.2 < t.threshold < 0.7 and t.f1 == 1.0
    assert np.float32(t.threshold) == t.threshold  # exact in float32, as the tagger compares


def test_precision_floor_keeps_the_most_recall():
    rng = np.random.default_rng(1)
    for floor in (0.6, 0.8, 0.95):
        s, y = scored_class(rng)
        t = tune_class(s, y, "precision", min_precision=floor)
        p, r, _ = precision_recall_curve(y, s)
        if not (p[:-1] >= floor).any():
            assert not t.reached and not (s >= t.threshold).any()
            continue
        assert precision_score(y, s >= t.threshold) >= floor
        assert recall_score(y, s >= t.threshold) == pytest.approx(r[:-1][p[:-1] >= floor].max())


def test_unreachable_floor_tags_nothing_and_ignored_entries_do_not_count():
    s = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    t = tune_class(s, np.array([0, 1, 0, 1]), "precision", min_precision=1.0)
    assert not t.reached and not (s >= t.threshold).any()
    # the highest-scoring image is ignored (-1): with it gone, 0.8 and 0.6 are the positives
    t = tune_class(s, np.array([-1, 1, 0, 1]), "f1")
    assert t.positives == 2 and t.f1 == pytest.approx(2 * 2 / (2 + 3))


def test_classes_without_positives_keep_the_default_and_shapes_are_checked():
    s = np.random.default_rng(2).random((10, 3)).astype(np.float32)
    t = np.zeros((10, 3), np.int64)
    t[:5, 0] = 1
    tuned = tune_thresholds(s, t)
    assert [c.threshold for c in tuned[1:]] == [0.5, 0.5] and tuned[0].positives == 5
    with pytest.raises(ValueError, match="must both be"):
        tune_thresholds(s, t[:, :2])
    with pytest.raises(ValueError, match="objective"):
        tune_thresholds(s, t, objective="recall")


def test_thresholds_verb_writes_the_checkpoint_that_eval_and_tag_use(tmp_path, capsys):
    common = ["--data-image-size", "48", "--train-size", "48", "--val-size", "40", "--num-classes", "5"]
    assert main(["train", "--backbone", "test_convnext", "--weights", "none", "--method", "lp", "--image-size", "48",
                 "--epochs", "1", "--batch-size", "16", "--out", str(tmp_path / "run"), "--quiet", *common]) == 0
    ckpt = str(tmp_path / "run" / "best")
    capsys.readouterr()
    assert main(["thresholds", ckpt, "--quiet", "--json", "--plot", str(tmp_path / "thr.png"), *common]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert not dry["written"] and read_config(ckpt)[0].thresholds is None
    assert (tmp_path / "thr.png").read_bytes()[:4] == b"\x89PNG"

    assert main(["thresholds", ckpt, "--write", "--quiet", "--json", *common]) == 0
    result = json.loads(capsys.readouterr().out)
    cfg, doc = read_config(ckpt)
    assert cfg.thresholds == [c["threshold"] for c in result["per_class"].values()]
    assert doc["thresholds"]["split"] == "val" and doc["thresholds"]["objective"] == "f1"

    assert main(["eval", ckpt, "--quiet", "--json", *common]) == 0
    metrics = json.loads(capsys.readouterr().out)
    for key in ("CP", "CR", "CF1", "OP", "OR", "OF1"):
        assert metrics[key] == pytest.approx(result["after"][key])

    from layover_edge.runtime.factory import open_backend
    assert open_backend(ckpt).info.threshold_array().tolist() == pytest.approx(cfg.thresholds)


def test_bad_precision_floor_and_wrong_threshold_count_are_refused(tmp_path, capsys):
    assert main(["thresholds", str(tmp_path), "--objective", "precision", "--min-precision", "1.5"]) == 2
    assert "--min-precision must be in (0, 1]" in capsys.readouterr().err
    from layover_edge.artifacts.checkpoint import set_thresholds
    from layover_edge.core.config import ModelConfig
    from layover_edge.core.errors import LayoverError
    from layover_edge.core.io import write_json
    ckpt = tmp_path / "ckpt"
    write_json(ckpt / "config.json", {"format": "layover-edge/checkpoint/1",
                                      "model": ModelConfig("test_convnext", 2).to_dict()})
    with pytest.raises(LayoverError, match="2 thresholds for 3|3 thresholds for 2"):
        set_thresholds(ckpt, [0.1, 0.2, 0.3], {})
