"""Every runtime backend through the same checks (the Backend contract): the model description it
reads from its file, ``run``/``predict`` on awkward batch sizes, and outputs that match PyTorch FP32.

One checkpoint is exported once into every form; each backend opens its form. A static-batch graph
and an engine whose profile starts above 1 must pad partial batches and drop the padding."""
import importlib.util

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxruntime_extensions")
pytest.importorskip("onnx_graphsurgeon")

from layover_edge.core.config import ModelConfig  # noqa: E402
from layover_edge.export.onnx import export_onnx  # noqa: E402
from layover_edge.models import build_model, save_checkpoint  # noqa: E402
from layover_edge.runtime.factory import open_backend  # noqa: E402

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
SIZE, CLASSES = 48, 4


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("backends")
    cfg = ModelConfig(backbone="test_convnext", num_classes=CLASSES, method="rm", weights="none", image_size=SIZE,
                      labels=["a", "b", "c", "d"], thresholds=[0.5, 0.4, 0.6, 0.5])
    torch.manual_seed(0)
    ckpt = save_checkpoint(build_model(cfg), cfg, root / "ckpt")
    out = {"torch": ckpt,
           "onnx": export_onnx(ckpt, root / "model.onnx"),
           "onnx-plugin": export_onnx(ckpt, root / "model.plugin.onnx", form="plugin"),
           "onnx-static-batch": export_onnx(ckpt, root / "model.b4.onnx", batch=4)}
    if HAS_TRT:
        import tensorrt as trt

        from layover_edge.core.cuda import CudaDevice
        from layover_edge.export.build import build_engine, prepare_build
        from layover_edge.export.targets import TARGETS
        cc = CudaDevice().compute_capability
        target = next(t for t in TARGETS.values() if t.compute_capability == cc)
        req = prepare_build(out["onnx"], root / "model.engine", "fp32", target, trt.__version__, batch=(2, 4, 4))
        build_engine(req)
        out["tensorrt"] = root / "model.engine"
    return out


FORMS = ["torch", "onnx", "onnx-plugin", "onnx-static-batch",
         pytest.param("tensorrt", marks=pytest.mark.skipif(not HAS_TRT, reason="TensorRT is not installed here"))]


@pytest.fixture(scope="module")
def reference(files):
    return open_backend(files["torch"])


def batch(n: int) -> np.ndarray:
    return np.random.default_rng(n).standard_normal((n, 3, SIZE, SIZE), np.float32)


@pytest.mark.parametrize("form", FORMS)
def test_model_description_matches_the_checkpoint(files, reference, form):
    backend = open_backend(files[form])
    assert backend.info.labels == ["a", "b", "c", "d"]
    np.testing.assert_allclose(backend.info.threshold_array(), [0.5, 0.4, 0.6, 0.5])
    assert backend.info.preprocess == reference.info.preprocess
    meta = backend.metadata()
    assert meta["backend"] == backend.name and meta["precision"] == "fp32"
    assert backend.model_bytes() > 0


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("n", [1, 3, 5, 9])
def test_run_matches_pytorch_on_any_batch_size(files, reference, form, n):
    backend = open_backend(files[form])
    x = batch(n)
    out = backend.run(x)
    assert set(out) == {"logits", "probabilities"}
    for value in out.values():
        assert value.shape == (n, CLASSES) and value.dtype == np.float32
    np.testing.assert_allclose(out["probabilities"], 1 / (1 + np.exp(-out["logits"].astype(np.float64))), atol=1e-6)
    np.testing.assert_allclose(out["logits"], reference.run(x)["logits"], atol=1e-4)
    np.testing.assert_array_equal(backend.predict(x), out["probabilities"])


@pytest.mark.parametrize("form", FORMS)
def test_warmup_and_device_runner(files, form):
    backend = open_backend(files[form])
    backend.warmup(batch_size=2, iterations=1)
    runner = backend.device_runner(batch(2))
    assert runner is None or callable(runner)
