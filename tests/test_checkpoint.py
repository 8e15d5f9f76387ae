import errno
import json
import os
import stat
from pathlib import Path

import pytest
import torch
from faults import fill

from layover_edge.artifacts.checkpoint import read_config
from layover_edge.core.config import ModelConfig
from layover_edge.core.errors import LayoverError
from layover_edge.models import build_model, load_checkpoint, resolve_config, save_checkpoint


def cfg(**kw):
    return ModelConfig(**({"backbone": "test_convnext", "num_classes": 3, "weights": "none", "image_size": 48,
                           "labels": ["a", "b", "c"]} | kw))


@pytest.mark.parametrize("method", ["lp", "rm", "ft"])
def test_round_trip_gives_identical_outputs(tmp_path, method):
    torch.manual_seed(0)
    c = resolve_config(cfg(method=method))  # what the checkpoint records: the preprocessing spelled out
    model = build_model(c).eval()
    save_checkpoint(model, c, tmp_path / "ckpt")
    loaded, c2 = load_checkpoint(tmp_path / "ckpt")
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert c2 == c
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["backbone.safetensors", "config.json",
                                                                     "head.safetensors"]


def test_pretrained_lp_rm_checkpoints_store_only_the_head(tmp_path):
    c = cfg(weights="pretrained", method="rm")
    model = build_model(c, load_weights=False)
    save_checkpoint(model, c, tmp_path / "ckpt")
    assert not (tmp_path / "ckpt" / "backbone.safetensors").exists()


def test_truncated_and_foreign_checkpoints_are_refused(tmp_path):
    c = cfg(method="rm")
    save_checkpoint(build_model(c), c, tmp_path / "ckpt")
    head = tmp_path / "ckpt" / "head.safetensors"
    head.write_bytes(head.read_bytes()[:100])
    with pytest.raises(LayoverError, match="cannot read"):
        load_checkpoint(tmp_path / "ckpt")
    with pytest.raises(LayoverError, match="not a layover-edge checkpoint"):
        load_checkpoint(tmp_path)


def test_checkpoint_from_another_backbone_is_refused(tmp_path):
    c = cfg(method="rm")
    save_checkpoint(build_model(c), c, tmp_path / "ckpt")
    doc = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    doc["model"]["backbone"] = "test_resnet"
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(doc))
    with pytest.raises(LayoverError, match="does not match"):
        load_checkpoint(tmp_path / "ckpt")


def test_a_full_disk_leaves_the_old_checkpoint_intact(small_fs):
    c = cfg(method="lp")
    model = build_model(c)
    disk = small_fs("2m")
    save_checkpoint(model, c, disk / "ckpt")
    before = (disk / "ckpt" / "head.safetensors").read_bytes()
    filler = fill(disk)
    with pytest.raises(OSError) as raised:  # safetensors' own writer said SafetensorError before
        save_checkpoint(model, c, disk / "ckpt")
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(disk / "ckpt")
    assert (disk / "ckpt" / "head.safetensors").read_bytes() == before
    assert sorted(p.name for p in disk.iterdir()) == sorted(["ckpt", Path(filler).name])


def test_checkpoint_files_follow_the_umask(tmp_path):
    c = cfg(method="lp")
    old = os.umask(0o022)
    try:
        save_checkpoint(build_model(c), c, tmp_path / "ckpt")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "ckpt").stat().st_mode) == 0o755
    assert {stat.S_IMODE(f.stat().st_mode) for f in (tmp_path / "ckpt").iterdir()} == {0o644}


def test_read_config_names_bad_json(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(LayoverError, match="not valid JSON"):
        read_config(tmp_path)


def test_checkpoint_written_before_the_mix_existed_loads_as_the_paper_form(tmp_path):
    torch.manual_seed(0)
    c = resolve_config(cfg(method="rm", mix="paper"))
    model = build_model(c).eval()
    save_checkpoint(model, c, tmp_path / "ckpt")
    doc = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    del doc["model"]["mix"]  # what every checkpoint of the earlier versions looks like
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(doc))
    loaded, c2 = load_checkpoint(tmp_path / "ckpt")
    assert c2.mix == "paper"
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


@pytest.mark.parametrize("method", ["rm", "ft", "concat"])
def test_standardisation_travels_with_the_checkpoint(tmp_path, method):
    torch.manual_seed(0)
    c = resolve_config(cfg(method=method))
    model = build_model(c).eval()
    channels = model.backbone.tap_channels[0]
    model.head.standardise.set_(torch.randn(channels), torch.rand(channels) + 0.1)
    save_checkpoint(model, c, tmp_path / "ckpt")
    loaded, _ = load_checkpoint(tmp_path / "ckpt")
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-4, atol=1e-4)


def test_a_head_of_the_other_mix_is_refused(tmp_path):
    c = cfg(method="rm", mix="paper")
    save_checkpoint(build_model(c), c, tmp_path / "ckpt")
    doc = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    doc["model"]["mix"] = "residual"
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(doc))
    with pytest.raises(LayoverError, match="does not match .*mix"):
        load_checkpoint(tmp_path / "ckpt")
