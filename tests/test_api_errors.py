"""The Python API's bad input: a LayoverError in the API's own words (keywords, not CLI flags), with
the closest names for an unknown keyword, never a raw TypeError, ConnectionRefusedError or a value
the CLI would refuse; and predict on a list with one bad path keeps a way to the good results."""
import math
import socket

import numpy as np
import pytest
import torch
from PIL import Image

import layover_edge as le
import layover_edge.api as api
from layover_edge.core.config import ModelConfig
from layover_edge.models import build_model, save_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    cfg = ModelConfig(backbone="test_convnext", num_classes=5, method="rm", weights="none", image_size=32,
                      labels=[f"c{i}" for i in range(5)])
    torch.manual_seed(0)
    return save_checkpoint(build_model(cfg), cfg, tmp_path_factory.mktemp("api") / "ckpt")


@pytest.fixture(scope="module")
def model(ckpt):
    return le.load(ckpt, device="cpu")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    return folder


@pytest.mark.parametrize("images,words", [
    (None, "expected an image or a list of images"),
    (np.zeros((0, 0, 3), np.uint8), "is empty (0x0 pixels)"),
    (np.zeros((5, 0, 3), np.uint8), "is empty (0x5 pixels)"),
    ([np.zeros((8, 8), np.float32)], "expected a path, a PIL image or an RGB uint8"),
])
def test_predict_refuses_what_is_not_an_image(model, images, words):
    with pytest.raises(le.LayoverError, match="^predict: ") as e:
        model.predict(images)
    assert words in str(e.value)


@pytest.mark.parametrize("options,words", [
    ({"threshold": 2}, "threshold must be a finite number ≥ 0 and ≤ 1, got 2"),
    ({"threshold": math.nan}, "threshold must be a finite number"),
    ({"topk": -1}, "topk must be an integer ≥ 0, got -1"),
    ({"batch_size": 2**70}, "batch_size must be an integer ≥ 1 and ≤ 4096"),
    ({"errors": "ignore"}, "errors must be one of"),
])
def test_predict_checks_its_options_as_tag_does(model, photos, options, words):
    with pytest.raises(le.LayoverError) as e:
        model.predict(photos / "a.png", **options)
    assert words in str(e.value) and "--" not in str(e.value)


def test_one_bad_path_keeps_a_way_to_the_good_results(model, photos):
    good = model.predict([photos / "a.png", photos / "b.png"])
    paths = [photos / "a.png", photos / "missing.png", photos / "b.png"]
    with pytest.raises(le.LayoverError, match=r"1 of 3 images cannot be read .*missing\.png.*errors=\"skip\""):
        model.predict(paths)
    a, missing, b = model.predict(paths, errors="skip")
    assert missing.error and "missing.png" in missing.source and missing.tags == [] and missing.probabilities.size == 0
    assert a.error is None and b.error is None
    np.testing.assert_allclose(a.probabilities, good[0].probabilities, atol=1e-6)
    np.testing.assert_allclose(b.probabilities, good[1].probabilities, atol=1e-6)


@pytest.mark.parametrize("call,words", [
    (lambda c: le.evaluate(c, nonsense=1), "evaluate: unknown keyword 'nonsense'"),
    (lambda c: le.evaluate(c, val_sise=8), "'val_sise' (did you mean val_size?)"),
    (lambda c: le.tune_thresholds(c, objectiv="f1"), "tune_thresholds: unknown keyword"),
    # api.export: once the layover_edge.export package is imported, the name le.export is that package
    (lambda c: api.export(c, "out", in8=True), "'in8' (did you mean int8?)"),
    (lambda c: le.parity(c, "m.onnx", "synthetic:val", max_map_dorp=1), "did you mean max_map_drop"),
    (lambda c: le.train("test_convnext", "run", epoch=3), "'epoch' (did you mean epochs?)"),
    (lambda c: le.start_server(c, http_prot=0), "did you mean http_port"),
])
def test_unknown_keywords_name_the_close_ones(ckpt, call, words):
    with pytest.raises(le.LayoverError) as e:
        call(ckpt)
    assert words in str(e.value)


def test_an_unknown_int8_float_type_is_refused_before_any_export(ckpt, tmp_path):
    with pytest.raises(le.LayoverError, match=r"int8_float must be one of \('fp16', 'fp32'\), got 'bf16'"):
        api.export(ckpt, tmp_path / "out", int8=True, int8_float="bf16")
    assert not (tmp_path / "out").exists()


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_connect_to_a_closed_port(protocol):
    pytest.importorskip("tritonclient")
    with pytest.raises(le.LayoverError, match=f"no layover-edge server answers at 127.0.0.1:\\d+ \\({protocol.upper()}\\)"):
        le.connect(f"127.0.0.1:{free_port()}", protocol)


def test_connect_to_a_listener_that_never_answers():
    """It accepts the connection and says nothing: connect gives up after its probe's 10 s."""
    pytest.importorskip("tritonclient")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        with pytest.raises(le.LayoverError, match="no layover-edge server answers"):
            le.connect(f"127.0.0.1:{silent.getsockname()[1]}", "http")


def test_le_export_stays_the_api_function_once_the_export_package_is_imported():
    """Python sets a loaded subpackage on its parent: `import layover_edge.export.pipeline` (as parity
    does) used to turn `le.export(...)` into "'module' object is not callable"."""
    import importlib

    import layover_edge as le
    importlib.import_module("layover_edge.export.pipeline")
    from layover_edge import api
    assert le.export is api.export and callable(le.export)
