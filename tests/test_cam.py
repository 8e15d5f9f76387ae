"""EigenCAM per stage (Figure 2) on NCHW (ConvNeXt) and token (ViT) backbones, and the cam verb."""
import json

import numpy as np
import pytest
import torch

from layover_edge import cli
from layover_edge.apps.cam import stage_maps, to_nchw
from layover_edge.core.config import ModelConfig
from layover_edge.data.synthetic import SyntheticScenes
from layover_edge.models import build_model, save_checkpoint


def test_layouts_become_nchw():
    nchw = build_model(ModelConfig(backbone="test_convnext", num_classes=3, weights="none")).backbone.model
    vit = build_model(ModelConfig(backbone="test_vit", num_classes=3, weights="none")).backbone.model
    x = torch.randn(2, 5, 4, 3)
    assert to_nchw(nchw)(x) is x
    tokens = torch.randn(2, 1 + 16, 8)  # class token + 4x4 patches
    out = to_nchw(vit)(tokens)
    assert out.shape == (2, 8, 4, 4)
    torch.testing.assert_close(out[:, :, 1, 2], tokens[:, 1 + 4 + 2])
    nhwc = type("Swinish", (), {"output_fmt": "NHWC"})()
    torch.testing.assert_close(to_nchw(nhwc)(x), x.permute(0, 3, 1, 2))


@pytest.mark.parametrize("backbone", ["test_convnext", "test_vit"])
def test_one_map_per_stage(backbone):
    torch.manual_seed(0)
    cfg = ModelConfig(backbone=backbone, num_classes=5, weights="none", image_size=64)
    model = build_model(cfg)
    maps, probs = stage_maps(model, cfg, SyntheticScenes("val", 1, 64, 5)[0][0])
    from layover_edge.models import stage_modules
    assert len(maps) == len(stage_modules(model.backbone.model))
    assert all(m.shape == (64, 64) and np.isfinite(m).all() and m.max() <= 1 + 1e-6 for m in maps)
    assert probs.shape == (5,)


def test_cam_verb_writes_a_png(tmp_path, capsys):
    cfg = ModelConfig(backbone="test_convnext", num_classes=5, weights="none", method="rm", image_size=48,
                      labels=SyntheticScenes("val", 1, 48, 5).classes)
    save_checkpoint(build_model(cfg), cfg, tmp_path / "ckpt")
    img = tmp_path / "a.png"
    SyntheticScenes("val", 1, 48, 5)[0][0].save(img)
    assert cli.main(["cam", str(tmp_path / "ckpt"), "--image", str(img), str(img), "--class", cfg.labels[2],
                     "--out", str(tmp_path / "grid.png"), "--device", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["png"] == str(tmp_path / "grid.png")
    assert (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG"
    assert cli.main(["cam", str(tmp_path / "ckpt"), "--image", str(img), "--class", "unicorn",
                     "--out", str(tmp_path / "x.png")]) == 2
    assert "class 'unicorn' is not among" in capsys.readouterr().err
