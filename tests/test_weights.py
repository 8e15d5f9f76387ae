"""--weights PATH: safetensors and timm/torch checkpoints the test writes itself (no network here);
--weights pretrained without a cached copy fails with a message, not a traceback."""
import pytest
import torch
from safetensors.torch import save_file

from layover_edge.core.config import ModelConfig
from layover_edge.core.errors import LayoverError
from layover_edge.models import build_backbone, create_timm


def cfg(weights):
    return ModelConfig(backbone="test_convnext", num_classes=3, weights=weights, method="lp", image_size=32)


@pytest.fixture(scope="module")
def source():
    """A backbone with weights unlike any fresh init, including its (ignored) classifier."""
    torch.manual_seed(1)
    model = create_timm("test_convnext")
    model.reset_classifier(7)
    return {k: v + 0.5 for k, v in model.state_dict().items()}


def assert_loaded(backbone, source):
    own = backbone.model.state_dict()
    assert set(own) < set(source)  # the classifier (head.fc.*) was dropped
    for k, v in own.items():
        torch.testing.assert_close(v, source[k], rtol=0, atol=0)


def test_safetensors_file(tmp_path, source):
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in source.items()}, str(path))
    assert_loaded(build_backbone(cfg(str(path)), None), source)


@pytest.mark.parametrize("wrap", ["state_dict", "model", "state_dict_ema", None])
def test_timm_and_torch_checkpoints(tmp_path, source, wrap):
    state = {f"module.{k}": v for k, v in source.items()}  # saved from DataParallel/DDP
    doc = {wrap: state, "epoch": 3, "arch": "test_convnext"} if wrap else state
    path = tmp_path / "checkpoint.pth.tar"
    torch.save(doc, path)
    assert_loaded(build_backbone(cfg(str(path)), None), source)


def test_bad_weight_files(tmp_path, source):
    with pytest.raises(LayoverError, match="weights file not found"):
        build_backbone(cfg(str(tmp_path / "nope.safetensors")), None)
    good = tmp_path / "good.safetensors"
    save_file({k: v.contiguous() for k, v in source.items()}, str(good))
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(LayoverError, match="cannot read weights .*cut.safetensors"):
        build_backbone(cfg(str(cut)), None)
    other = tmp_path / "other.safetensors"
    save_file({"fc.weight": torch.zeros(2, 2)}, str(other))
    with pytest.raises(LayoverError, match="do not fit ConvNeXt: .* missing keys"):
        build_backbone(cfg(str(other)), None)
    pickled = tmp_path / "whole.pt"
    torch.save({"stem.0.weight": "not a tensor"}, pickled)
    with pytest.raises(LayoverError, match="no state dict of tensors"):
        build_backbone(cfg(str(pickled)), None)


def test_pretrained_offline_without_cache_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(LayoverError, match="cannot get the pretrained weights of 'test_convnext'.*--weights PATH"):
        build_backbone(cfg("pretrained"), None)
