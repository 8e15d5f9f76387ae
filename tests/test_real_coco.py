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


def test_int8_export_fp16_outside_qdq_keeps_the_map(coco_lite0, tmp_path, capsys):
    """The default INT8 graph (FP16 outside its Q/DQ pairs, the head FP32), calibrated on train2017
    photos, against the PyTorch checkpoint on all val2017 photos through ONNX Runtime."""
    import onnx
    from onnx import TensorProto

    from layover_edge.artifacts.onnx_metadata import get_metadata
    root, _ = coco_lite0
    ckpt = tmp_path / "run" / "best"
    train(coco_lite0, tmp_path, capsys, "--method", "rm")
    assert main(["export", str(ckpt), "--out", str(tmp_path / "x"), "--form", "portable", "--int8", "--calib-data",
                 "coco2017:train", "--calib-size", "64", "--data-root", str(root), "--quiet", "--json"]) == 0
    graph = tmp_path / "x" / "model.int8.onnx"
    proto = onnx.load(str(graph))
    types = {t.name: t.data_type for t in proto.graph.initializer}
    head = set(get_metadata(proto)["high_precision_nodes"])
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    assert convs and all(types.get(n.input[2]) == TensorProto.FLOAT16 for n in convs if len(n.input) > 2)
    floats = {i: t for i, t in types.items() if t in (TensorProto.FLOAT, TensorProto.FLOAT16)}
    head_weights = [i for n in proto.graph.node if n.name in head for i in n.input if i in floats]
    assert head_weights and all(floats[i] == TensorProto.FLOAT for i in head_weights)
    capsys.readouterr()
    code = main(["parity", str(ckpt), "--against", str(graph), "--data", "coco2017:val", "--data-root", str(root),
                 "--out", str(tmp_path / "parity"), "--quiet", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["passed"], result["checks"]
    assert result["task"]["delta"]["mAP"] >= -1.0 and result["num_images"] == 250
