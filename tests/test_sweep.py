"""The sweep recipe (training/sweep.py, schedule.py, select.py) against independent references:
the heads of ``models.heads`` for the folded parametrisation, scikit-learn's logistic regression
for convergence, and the CLI's selection end to end on synthetic scenes."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score

from layover_edge.core.config import MIN_STEPS, TrainConfig
from layover_edge.core.errors import LayoverError
from layover_edge.training.schedule import auto_steps, ft_epochs
from layover_edge.training.sweep import Bank, HeadKind, bank_stats, sweep

KINDS = [HeadKind("lp"), HeadKind("concat", 1), HeadKind("rm", 1, "residual"), HeadKind("rm", 1, "paper")]


def features(n: int, seed: int, n_features: int = 24, channels: int = 6, classes: int = 5):
    """Separable-ish multi-label data at odd scales (the raw z spans three decades), as a backbone's
    ReLU features do; p carries part of the signal."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n_features + channels, classes, generator=torch.Generator().manual_seed(99))
    z = torch.rand(n, n_features, generator=g) * torch.logspace(-1.5, 1.5, n_features)
    p = torch.randn(n, channels, generator=g) * 3 + 1
    x = torch.cat([z / torch.logspace(-1.5, 1.5, n_features), p / 3], 1)
    y = ((x - x.mean(0)) @ w + 0.8 * torch.randn(n, classes, generator=g) > 0.5).float()
    return z, p, y


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_a_folded_head_computes_what_its_bank_trained(kind):
    """Bank.head(g) in the plain parametrisation of models.heads gives the bank's logits for head g."""
    z, p, y = features(40, 0)
    stats = bank_stats(z, None if kind.method == "lp" else p)
    bank = Bank(kind, 3, z.shape[1], p.shape[1], y.shape[1], stats)
    with torch.no_grad():
        for q in bank.parameters():
            q.normal_(0, 0.3)
        logits, alpha = bank(z, p)
    for g in range(3):
        head = bank.head(g).eval()
        with torch.no_grad():
            folded = head.forward_pooled(z, p) if kind.method != "lp" else head.forward_pooled(z)
        torch.testing.assert_close(folded, logits[:, g], atol=2e-4, rtol=2e-4)
        if alpha is not None:
            torch.testing.assert_close(head.alpha(z), alpha[:, g], atol=1e-5, rtol=1e-5)


def mean_ap(scores: np.ndarray, y: np.ndarray) -> float:
    return 100 * float(np.mean([average_precision_score(y[:, k], scores[:, k]) for k in range(y.shape[1])]))


def test_the_lp_sweep_reaches_a_converged_logistic_regression():
    """On badly scaled features the sweep's LP reaches scikit-learn's L2 logistic regression on the
    same standardised features (C chosen on the same validation split) within a point: SGD for a few
    hundred steps converges to what the exact solver finds."""
    (z, _, y), (vz, _, vy) = features(300, 1), features(300, 2)
    mu, sd = bank_stats(z, None).z
    probe = max(mean_ap(np.stack([LogisticRegression(C=c, max_iter=3000).fit(((z - mu) / sd).numpy(), y[:, k].numpy())
                                  .decision_function(((vz - mu) / sd).numpy()) for k in range(y.shape[1])], 1),
                        vy.numpy()) for c in (0.01, 0.1, 1.0))
    kind = HeadKind("lp")
    r = sweep(kind, (z, None, y), (vz, None, vy), bank_stats(z, None), (0.3, 1.0), (1e-4, 1e-3, 1e-2, 1e-1),
              400, 64, progress=False)
    assert r.val_mAP >= probe - 1.0, (r.val_mAP, probe)
    assert r.val_mAP == pytest.approx(mean_ap(r.scores, vy.numpy()), abs=1e-6)  # the kept scores are the best head's
    assert len(r.grid) == 8 and max(g["val_mAP"] for g in r.grid) == pytest.approx(r.val_mAP)


def test_the_residual_rm_does_not_fall_below_lp_where_the_tap_adds_signal():
    (z, p, y), (vz, vp, vy) = features(300, 3), features(300, 4)
    maps = {}
    for kind in (HeadKind("lp"), HeadKind("rm", 1, "residual")):
        q, vq = (None, None) if kind.method == "lp" else (p, vp)
        maps[kind.method] = sweep(kind, (z, q, y), (vz, vq, vy), bank_stats(z, q), (0.3, 1.0), (1e-3, 1e-2),
                                  300, 64, progress=False).val_mAP
    assert maps["rm"] >= maps["lp"] - 1.0, maps


def test_a_diverging_learning_rate_stops_its_heads_and_the_others_go_on():
    (z, _, y), (vz, _, vy) = features(120, 5), features(80, 6)
    kind = HeadKind("lp")
    r = sweep(kind, (z, None, y), (vz, None, vy), bank_stats(z, None), (0.5, 3e38), (0.0,), 60, 32,
              progress=False)
    assert [g["diverged"] for g in r.grid] == [False, True] and r.lr == 0.5 and np.isfinite(r.scores).all()
    with pytest.raises(LayoverError, match="every head"):
        sweep(kind, (z, None, y), (vz, None, vy), bank_stats(z, None), (3e38,), (0.0,), 60, 32, progress=False)


def test_the_schedule_scales_with_the_data_set():
    assert auto_steps(255, 64) == MIN_STEPS                     # 4 steps an epoch: the floor
    assert auto_steps(2000, 64) == 30 * 32                      # the demo: the paper's 30 epochs
    assert auto_steps(82_081, 64) == 30 * 1283
    assert ft_epochs(TrainConfig(epochs=10), 82_081) == 10 and ft_epochs(TrainConfig(), 255) == 30  # at most --epochs
    assert ft_epochs(TrainConfig(recipe="paper", epochs=7), 255) == 7


@pytest.mark.parametrize("field, value", [("recipe", "fast"), ("steps", 0), ("sweep_lrs", ()), ("sweep_lrs", (0.0,)),
                                          ("sweep_weight_decays", (-1.0,)), ("budget_s", 0)])
def test_impossible_sweep_settings_are_refused(field, value):
    with pytest.raises(LayoverError):
        TrainConfig(**{field: value})


def test_train_method_auto_selects_the_best_head_and_keeps_every_candidate(tmp_path, capsys):
    """One command: every candidate swept from one cache, the table, best/ = the winner's checkpoint."""
    from layover_edge.cli import main
    out = tmp_path / "auto"
    code = main(["train", "--backbone", "test_convnext", "--weights", "none", "--image-size", "48", "--method",
                     "auto", "--train-size", "96", "--val-size", "64", "--data-image-size", "48", "--steps", "40",
                     "--lr-grid", "0.3", "--wd-grid", "0.001", "0.01", "--taps", "1", "2", "--out", str(out), "--json",
                     "--quiet"])
    text = capsys.readouterr().out
    assert code == 0, text
    result = json.loads(text)
    names = set(result["rows"])
    assert names == {"LP", "RM@1 residual", "RM@1 paper", "concat@1", "RM@2 residual", "RM@2 paper", "concat@2"}
    assert result["winner"] == max(result["rows"], key=lambda n: result["rows"][n]["mAP"])
    assert (out / "selection.md").read_text().count("|") > 10
    from safetensors.torch import load_file
    winner = result["rows"][result["winner"]]["checkpoint"]
    best, chosen = load_file(str(out / "best" / "head.safetensors")), load_file(f"{winner}/head.safetensors")
    assert best.keys() == chosen.keys() and all(torch.equal(best[k], chosen[k]) for k in best)
    rm = result["rows"]["RM@1 residual"]
    assert rm["extra params"] > 0 and rm["extra MACs"] > rm["extra params"]
    assert result["rows"]["LP"]["extra params"] == 0


def test_a_sweep_run_writes_its_grid_and_a_finished_one_is_not_resumed(tmp_path, capsys):
    from layover_edge.cli import main
    args = ["train", "--backbone", "test_convnext", "--weights", "none", "--image-size", "48", "--method", "concat",
            "--tap", "2", "--train-size", "64", "--val-size", "48", "--data-image-size", "48", "--steps", "30",
            "--out", str(tmp_path / "run"), "--quiet", "--json"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["recipe"] == "sweep" and len(metrics["grid"]) == 12 and summary["sweep"]["heads"] == 12
    assert metrics["best"]["mAP"] == pytest.approx(max(g["val_mAP"] for g in metrics["grid"]))
    assert main(args + ["--resume"]) == 2 and "finished sweep" in capsys.readouterr().err
