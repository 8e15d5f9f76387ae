"""OnnxBackend on small hand-made graphs: metadata, outputs, devices and refusals."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx_fixtures import tiny_onnx  # noqa: E402

from layover_edge.core.errors import LayoverError  # noqa: E402
from layover_edge.runtime.factory import open_backend  # noqa: E402
from layover_edge.runtime.onnx_backend import OnnxBackend  # noqa: E402


def test_predict_and_metadata(tmp_path):
    backend = open_backend(tiny_onnx(tmp_path / "m.onnx"))
    assert isinstance(backend, OnnxBackend)
    x = np.ones((5, 3, 8, 8), np.float32)
    out = backend.run(x)
    np.testing.assert_allclose(out["logits"], 3.0)
    np.testing.assert_allclose(backend.predict(x), 1 / (1 + np.exp(-3.0)), rtol=1e-6)
    assert backend.info.labels == ["a", "b"] and backend.info.preprocess.image_size == 8
    assert backend.metadata()["precision"] == "fp32" and backend.metadata()["device"] == "cpu"


def test_refusals(tmp_path):
    with pytest.raises(LayoverError, match="not found"):
        OnnxBackend(tmp_path / "none.onnx")
    path = tiny_onnx(tmp_path / "m.onnx")
    with pytest.raises(LayoverError, match="cpu or cuda"):
        OnnxBackend(path, device="tpu")
    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.save(model, str(path))
    with pytest.raises(LayoverError, match="no layover-edge metadata"):
        OnnxBackend(path)


def test_int8_graph_with_fp16_scales_matches_numpy(tmp_path):
    """ONNX Runtime's WeightBiasQuantization pass quantizes this Conv's bias with a scale that underflows
    in FP16 (onnx_backend.FP16_QDQ_DISABLED says how); the backend turns it off for such graphs, so
    the graph computes what its ops say."""
    from onnx_fixtures import fp16_qdq_conv_onnx
    path, reference = fp16_qdq_conv_onnx(tmp_path / "m.int8.onnx")
    x = np.random.default_rng(0).uniform(-1, 1, (4, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(OnnxBackend(path).run(x)["logits"], reference(x), rtol=2e-2, atol=2e-2)
