import json

import pytest
import torch
from torch import nn

from layover_edge.core.config import ModelConfig, TrainConfig
from layover_edge.core.errors import LayoverError
from layover_edge.data.synthetic import SyntheticScenes
from layover_edge.training.batches import CachedBatches
from layover_edge.training.loop import fit, soft_margin_loss
from layover_edge.training.run import train_run


def test_loss_equals_multilabel_soft_margin_without_ignored_entries():
    logits = torch.randn(6, 5)
    targets = (torch.rand(6, 5) > 0.5).float()
    torch.testing.assert_close(soft_margin_loss(logits, targets), nn.MultiLabelSoftMarginLoss()(logits, targets))


def test_ignored_entries_do_not_change_the_loss_or_its_gradient():
    logits = torch.randn(4, 3, requires_grad=True)
    targets = torch.tensor([[1, 0, -1], [0, -1, 1], [1, 1, 0], [-1, 0, 0]], dtype=torch.float)
    loss = soft_margin_loss(logits, targets)
    loss.backward()
    assert torch.all(logits.grad[targets == -1] == 0)
    moved = logits.detach().clone()
    moved[targets == -1] += 10
    torch.testing.assert_close(soft_margin_loss(moved, targets), loss.detach())


def separable(n=256, k=4, d=16, seed=0):
    """Cached features whose labels are a linear function of z: LP must learn them."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g)
    w = torch.randn(d, k, generator=g)
    y = (z @ w > 0).float()
    return torch.randn(n, 8, generator=g), z, y


def head_cfg(method="rm"):
    return ModelConfig(backbone="test_convnext", num_classes=4, weights="none", method=method)


def tiny_model(method):
    from layover_edge.models import LayoverHead, LayoverModel, LinearProbe, build_backbone
    cfg = head_cfg(method)
    bb = build_backbone(cfg, [1], load_weights=False)
    head = LinearProbe(16, 4) if method == "lp" else LayoverHead(8, 16, 4)
    return LayoverModel(bb, head, frozen=True), cfg


@pytest.mark.parametrize("method", ["lp", "rm"])
def test_fit_from_cached_features_learns_and_keeps_the_best_epoch(tmp_path, method):
    torch.manual_seed(0)
    model, cfg = tiny_model(method)
    p, z, y = separable()
    tcfg = TrainConfig(epochs=10, batch_size=32, device="cpu")
    result = fit(model, cfg, tcfg, CachedBatches(p[:192], z[:192], y[:192], 32, True),
                 CachedBatches(p[192:], z[192:], y[192:], 64, False), tmp_path, progress=False)
    maps = [h["mAP"] for h in result.history]
    assert result.best["mAP"] > 85 and result.best["mAP"] == max(maps)
    log = json.loads((tmp_path / "metrics.json").read_text())
    assert [h["epoch"] for h in log["history"]] == list(range(1, 11))
    assert (tmp_path / "best" / "head.safetensors").is_file()
    assert all(("alpha_mean" in h) == (method == "rm") for h in result.history)
    # the best epoch's predictions come back with the result: those of the saved best head
    from safetensors.torch import load_file

    from layover_edge.training.loop import predict
    model.head.load_state_dict(load_file(str(tmp_path / "best" / "head.safetensors")))
    again = predict(model, CachedBatches(p[192:], z[192:], y[192:], 64, False), torch.device("cpu"))
    torch.testing.assert_close(result.predictions["scores"], again["scores"], atol=1e-6, rtol=1e-5)


def test_resume_reproduces_an_uninterrupted_run(tmp_path):
    p, z, y = separable()

    def run(out, epochs, resume=False):
        torch.manual_seed(0)
        model, cfg = tiny_model("rm")
        train = CachedBatches(p[:192], z[:192], y[:192], 32, True, seed=1)
        val = CachedBatches(p[192:], z[192:], y[192:], 64, False)
        if resume:  # the shuffling generator continues as if the run had never stopped
            for _ in range(epochs):
                list(train)
        return fit(model, cfg, TrainConfig(epochs=4, batch_size=32, device="cpu"), train, val, out,
                   resume=resume, progress=False)

    straight = run(tmp_path / "a", 4)

    class Stop(Exception):
        pass
    torch.manual_seed(0)
    model, cfg = tiny_model("rm")
    train = CachedBatches(p[:192], z[:192], y[:192], 32, True, seed=1)
    val = CachedBatches(p[192:], z[192:], y[192:], 64, False)

    def stop_after_two(row):
        if row["epoch"] == 2:
            raise Stop
    with pytest.raises(Stop):
        fit(model, cfg, TrainConfig(epochs=4, batch_size=32, device="cpu"), train, val, tmp_path / "b",
            progress=False, on_epoch=stop_after_two)
    resumed = run(tmp_path / "b", 2, resume=True)
    assert [h["mAP"] for h in resumed.history] == pytest.approx([h["mAP"] for h in straight.history], abs=1e-4)
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in straight.history], rel=1e-5)


def test_resume_without_state_is_an_error(tmp_path):
    model, cfg = tiny_model("lp")
    p, z, y = separable(32)
    with pytest.raises(LayoverError, match="resume"):
        fit(model, cfg, TrainConfig(epochs=1, device="cpu"), CachedBatches(p, z, y, 8, True),
            CachedBatches(p, z, y, 8, False), tmp_path, resume=True, progress=False)


def test_ft_trains_from_images_end_to_end(tmp_path):
    cfg = ModelConfig(backbone="test_convnext", num_classes=5, weights="none", method="ft", image_size=48)
    ds = SyntheticScenes("train", 16, 48, 5)
    result, best = train_run(cfg, TrainConfig(epochs=1, batch_size=8, device="cpu"), ds,
                             SyntheticScenes("val", 8, 48, 5), tmp_path, None, progress=False)
    assert (tmp_path / "best" / "backbone.safetensors").is_file()
    assert result.history[0]["epoch"] == 1 and best.head.rs is not None


def test_on_epoch_can_end_training_early(tmp_path):
    torch.manual_seed(0)
    model, cfg = tiny_model("rm")
    p, z, y = separable()
    result = fit(model, cfg, TrainConfig(epochs=6, batch_size=32, device="cpu"), CachedBatches(p, z, y, 32, True),
                 CachedBatches(p, z, y, 64, False), tmp_path, progress=False, on_epoch=lambda row: row["epoch"] == 2)
    assert [h["epoch"] for h in result.history] == [1, 2] and result.best_epoch in (1, 2)
    assert (tmp_path / "best" / "config.json").is_file()
