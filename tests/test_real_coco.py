"""Real photos (coco2017-mini: 508 COCO 2017 photos with COCO's labels) under the ImageNet
EfficientNet-Lite0: the default heads against a converged scikit-learn logistic regression on the
same cached features, the independent reference. Skips where the photos or the weights are absent."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import COCO_LITE0_ARGS
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from layover_edge.cli import main
from layover_edge.training.features import FeatureCache
from layover_edge.training.metrics import multilabel_metrics

PROBE_C = (0.003, 0.01, 0.03)


@pytest.fixture(scope="module")
def probe(coco_lite0) -> float:
    """Validation mAP of per-class L2 logistic regression on the standardised cached z, its C chosen
    on the validation split (so the heads, also chosen there, meet it on equal terms)."""
    _, cache = coco_lite0
    (_, z, y), (_, vz, vy) = FeatureCache(cache / "train").tensors(None), FeatureCache(cache / "val").tensors(None)
    scale = StandardScaler().fit(z.numpy())
    a, b = scale.transform(z.numpy()), scale.transform(vz.numpy())
    maps = []
    for c in PROBE_C:
        scores = np.zeros(vy.shape)
        for k in np.flatnonzero(y.numpy().any(0)):  # a class without training positives scores 0
            scores[:, k] = LogisticRegression(C=c, max_iter=2000).fit(a, y[:, k].numpy()).decision_function(b)
        maps.append(multilabel_metrics(scores, vy.numpy())["mAP"])
    return max(maps)


def train(coco_lite0, tmp_path, capsys, *options) -> dict:
    """``layover-edge train`` with no option but the data set, the backbone and the method."""
    root, cache = coco_lite0
    code = main(["train", *COCO_LITE0_ARGS, "--data-root", str(root), "--cache", str(cache),
                 "--out", str(tmp_path / "run"), "--quiet", "--json", *options])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


def test_the_default_lp_reaches_the_probe(coco_lite0, probe, tmp_path, capsys):
    lp = train(coco_lite0, tmp_path, capsys, "--method", "lp")["best"]["mAP"]
    assert lp >= probe - 1.5, (lp, probe)


def test_the_default_rm_is_not_below_lp(coco_lite0, tmp_path, capsys):
    lp = train(coco_lite0, tmp_path / "lp", capsys, "--method", "lp")["best"]["mAP"]
    rm = train(coco_lite0, tmp_path / "rm", capsys, "--method", "rm")
    assert rm["best"]["mAP"] >= lp - 1.0, (rm["best"], lp)
    assert rm["sweep"]["heads"] == 12 and rm["best"]["alpha_mean"] > 0


def test_the_selected_head_reaches_the_probe_and_lp(coco_lite0, probe, tmp_path, capsys):
    chosen = train(coco_lite0, tmp_path, capsys, "--method", "auto")
    rows, winner = chosen["rows"], chosen["winner"]
    assert len(rows) == 13 and winner == max(rows, key=lambda n: rows[n]["mAP"])
    assert rows[winner]["mAP"] >= probe and rows[winner]["mAP"] >= rows["LP"]["mAP"]
    assert all(rows[n]["AP small"] is not None and rows[n]["mAP hard"] is not None for n in rows)
    assert (tmp_path / "run" / "best" / "config.json").is_file()
