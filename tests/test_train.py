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


def test_resume_reproduces_an_uninterrupted_run_bit_for_bit(tmp_path):
    """Stopped after epoch 2 and resumed by fresh objects, as a new process would build them: the
    shuffling generator comes back from last.pt, so every epoch and the final weights are identical."""
    p, z, y = separable()

    def batches():
        return CachedBatches(p[:192], z[:192], y[:192], 32, True, seed=1), CachedBatches(p[192:], z[192:], y[192:], 64, False)

    def run(out, resume=False, on_epoch=None):
        torch.manual_seed(0)
        model, cfg = tiny_model("rm")
        train, val = batches()
        result = fit(model, cfg, TrainConfig(epochs=4, batch_size=32, device="cpu"), train, val, out,
                     resume=resume, progress=False, on_epoch=on_epoch)
        return result, model

    straight, straight_model = run(tmp_path / "a")

    class Stop(Exception):
        pass

    def stop_after_two(row):
        if row["epoch"] == 2:
            raise Stop
    with pytest.raises(Stop):
        run(tmp_path / "b", on_epoch=stop_after_two)
    torch.manual_seed(123)  # the resumed process starts from other global generator states
    resumed, resumed_model = run(tmp_path / "b", resume=True)
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in straight.history]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in resumed.history] == strip
    for (name, a), b in zip(straight_model.head.state_dict().items(), resumed_model.head.state_dict().values()):
        assert torch.equal(a, b), name
    assert (tmp_path / "a/best/head.safetensors").read_bytes() == (tmp_path / "b/best/head.safetensors").read_bytes()


def test_resume_with_other_options_is_refused_before_any_work(tmp_path):
    p, z, y = separable(64)
    model, cfg = tiny_model("rm")
    fit(model, cfg, TrainConfig(epochs=2, batch_size=16, device="cpu"), CachedBatches(p, z, y, 16, True),
        CachedBatches(p, z, y, 32, False), tmp_path, progress=False)
    before = (tmp_path / "last.pt").read_bytes()
    for change, message in (({"epochs": 3}, "train.epochs 2 -> 3"), ({"lr": 0.05}, "train.lr 0.1 -> 0.05"),
                            ({"batch_size": 8}, "train.batch_size 16 -> 8")):
        model, cfg = tiny_model("rm")
        tcfg = TrainConfig(**({"epochs": 2, "batch_size": 16, "device": "cpu"} | change))
        with pytest.raises(LayoverError, match=message):
            fit(model, cfg, tcfg, CachedBatches(p, z, y, tcfg.batch_size, True), CachedBatches(p, z, y, 32, False),
                tmp_path, resume=True, progress=False)
    model, cfg = tiny_model("lp")  # another method: another model config
    with pytest.raises(LayoverError, match="model.method rm -> lp"):
        fit(model, cfg, TrainConfig(epochs=2, batch_size=16, device="cpu"), CachedBatches(None, z, y, 16, True),
            CachedBatches(None, z, y, 32, False), tmp_path, resume=True, progress=False)
    assert (tmp_path / "last.pt").read_bytes() == before


@pytest.mark.parametrize("content", ["tensor", "truncated", "pickle"])
def test_a_foreign_resume_state_is_refused(tmp_path, content):
    marker = tmp_path / "pwned"
    state = tmp_path / "last.pt"
    if content == "tensor":
        torch.save(torch.zeros(3), state)
    elif content == "truncated":
        torch.save({"model": torch.zeros(1000)}, state)
        state.write_bytes(state.read_bytes()[:300])
    else:
        class Exploit:
            def __reduce__(self):
                return (exec, (f"open({str(marker)!r}, 'w').write('x')",))
        torch.save({"model": Exploit()}, state)
    model, cfg = tiny_model("lp")
    p, z, y = separable(32)
    with pytest.raises(LayoverError, match="resume state"):
        fit(model, cfg, TrainConfig(epochs=1, device="cpu"), CachedBatches(p, z, y, 8, True),
            CachedBatches(p, z, y, 8, False), tmp_path, resume=True, progress=False)
    assert not marker.exists()


def test_a_one_step_warm_up_trains(tmp_path):
    """5 optimizer steps in all at the 20 % warm-up: OneCycleLR divided by zero before."""
    model, cfg = tiny_model("lp")
    p, z, y = separable(300)
    result = fit(model, cfg, TrainConfig(epochs=1, batch_size=64, device="cpu"), CachedBatches(p, z, y, 64, True),
                 CachedBatches(p, z, y, 64, False), tmp_path, progress=False)
    assert len(result.history) == 1 and result.history[0]["loss"] > 0


def test_nan_features_stop_the_run_with_epoch_and_cause(tmp_path):
    model, cfg = tiny_model("lp")
    p, z, y = separable(64)
    z[40, 3] = float("nan")
    with pytest.raises(LayoverError, match=r"epoch 1/2, step \d+: the training loss is nan: the input batch holds NaN"):
        fit(model, cfg, TrainConfig(epochs=2, batch_size=16, device="cpu"), CachedBatches(p, z, y, 16, True),
            CachedBatches(p, z, y, 16, False), tmp_path, progress=False)
    assert not (tmp_path / "best").exists()


def test_divergence_stops_the_run_naming_the_learning_rate(tmp_path):
    model, cfg = tiny_model("lp")
    p, z, y = separable(64)
    with pytest.raises(LayoverError, match=r"diverged at learning rate 1e\+38"):
        fit(model, cfg, TrainConfig(epochs=3, batch_size=16, device="cpu", lr=1e38, grad_clip=0),
            CachedBatches(p, z, y, 16, True), CachedBatches(p, z, y, 16, False), tmp_path, progress=False)


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


def test_a_budget_shorter_than_one_ft_epoch_trains_one_and_says_so(tmp_path, caplog):
    import logging
    cfg = ModelConfig(backbone="test_convnext", num_classes=5, weights="none", method="ft", image_size=48)
    with caplog.at_level(logging.WARNING):
        result, _ = train_run(cfg, TrainConfig(batch_size=8, device="cpu", budget_s=1e-3),
                              SyntheticScenes("train", 16, 48, 5), SyntheticScenes("val", 8, 48, 5), tmp_path, None,
                              progress=False)
    assert [h["epoch"] for h in result.history] == [1]
    assert "--budget 0 s is shorter than one epoch" in caplog.text and "training one epoch anyway" in caplog.text


def test_on_epoch_can_end_training_early(tmp_path):
    torch.manual_seed(0)
    model, cfg = tiny_model("rm")
    p, z, y = separable()
    result = fit(model, cfg, TrainConfig(epochs=6, batch_size=32, device="cpu"), CachedBatches(p, z, y, 32, True),
                 CachedBatches(p, z, y, 64, False), tmp_path, progress=False, on_epoch=lambda row: row["epoch"] == 2)
    assert [h["epoch"] for h in result.history] == [1, 2] and result.best_epoch in (1, 2)
    assert (tmp_path / "best" / "config.json").is_file()


def test_a_run_folder_is_replaced_only_with_overwrite(tmp_path):
    from layover_edge.artifacts.checkpoint import set_thresholds
    from layover_edge.training.run import train
    cfg = ModelConfig(backbone="test_convnext", num_classes=5, weights="none", method="lp", image_size=48)
    tcfg = TrainConfig(epochs=1, batch_size=8, device="cpu")
    data = SyntheticScenes("train", 16, 48, 5), SyntheticScenes("val", 8, 48, 5)
    train(cfg, tcfg, *data, tmp_path, progress=False)
    set_thresholds(tmp_path / "best", [0.3] * 5, {"data": "tuned"})
    tuned = (tmp_path / "best" / "config.json").read_bytes()
    with pytest.raises(LayoverError, match="already holds a run .*--overwrite"):
        train(cfg, tcfg, *data, tmp_path, progress=False)
    assert (tmp_path / "best" / "config.json").read_bytes() == tuned
    train(cfg, tcfg, *data, tmp_path, progress=False, overwrite=True)
    assert json.loads((tmp_path / "best" / "config.json").read_text())["model"]["thresholds"] is None


@pytest.mark.parametrize("field, value", [("epochs", 0), ("batch_size", -1), ("lr", float("nan")), ("lr", 0.0),
                                          ("weight_decay", -1e-4), ("num_workers", -1), ("device", "cuda:x")])
def test_an_impossible_recipe_is_refused(field, value):
    with pytest.raises(LayoverError, match=field):
        TrainConfig(**{field: value})
