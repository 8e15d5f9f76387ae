"""TorchBackend: the old constructor still works, the new modes are checked for what a CPU can run,
and CUDA graphs / fp16 run where a GPU is present (benchmarks/gpu_check.sh)."""
import numpy as np
import pytest
import torch

from layover_edge.core.config import ModelConfig
from layover_edge.core.errors import LayoverError
from layover_edge.models import build_model, save_checkpoint
from layover_edge.runtime.torch_backend import TorchBackend

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run benchmarks/gpu_check.sh)")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    cfg = ModelConfig(backbone="test_convnext", num_classes=4, method="rm", weights="none", image_size=48)
    torch.manual_seed(0)
    return save_checkpoint(build_model(cfg), cfg, tmp_path_factory.mktemp("ckpt") / "rm")


@pytest.fixture
def batch():
    return np.random.default_rng(0).standard_normal((3, 3, 48, 48), np.float32)


def test_backward_compatible_constructor(checkpoint, batch):
    a = TorchBackend(checkpoint)
    b = TorchBackend(checkpoint, "cpu", torch.float32)
    np.testing.assert_array_equal(a.predict(batch), b.predict(batch))
    meta = a.metadata()
    assert meta["precision"] == "fp32" and meta["mode"] == "eager" and meta["cuda_graph"] is False


def test_from_model_and_device_runner(checkpoint, batch):
    ref = TorchBackend(checkpoint)
    other = TorchBackend.from_model(ref.model, ref.cfg)
    probs = other.predict(batch)
    assert probs.shape == (3, 4) and probs.dtype == np.float32 and ((probs >= 0) & (probs <= 1)).all()
    np.testing.assert_allclose(other.device_runner(batch)().numpy(), ref.predict(batch), rtol=1e-6)


def test_compile_mode_traces(checkpoint, batch, monkeypatch):
    """torch.compile's wiring, traced by dynamo without inductor (a CPU inductor build takes a minute)."""
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real(fn, backend="eager", dynamic=kw.get("dynamic")))
    compiled = TorchBackend(checkpoint, mode="compile")
    np.testing.assert_allclose(compiled.predict(batch), TorchBackend(checkpoint).predict(batch), atol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "graph"}, "CUDA graphs need a CUDA device"),
    ({"dtype": "fp16"}, "needs a CUDA device"),
    ({"dtype": "int4"}, "unknown precision"),
    ({"mode": "jit"}, "unknown torch mode"),
])
def test_cpu_refuses_what_it_cannot_run(checkpoint, kwargs, message):
    with pytest.raises(LayoverError, match=message):
        TorchBackend(checkpoint, **kwargs)


@cuda
@pytest.mark.parametrize("mode", ["eager", "graph", "compile"])
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_cuda_modes_match_fp32(checkpoint, batch, mode, dtype):
    ref = TorchBackend(checkpoint).predict(batch)
    backend = TorchBackend(checkpoint, "cuda", dtype, mode=mode)
    for b in (batch, batch[:1], batch):  # a second shape gets its own graph; replays stay correct
        got = backend.predict(b)
        np.testing.assert_allclose(got, ref[: len(b)], atol=2e-2)
    assert backend.metadata()["cuda_graph"] is (mode == "graph")
    assert backend.metadata()["rm_branch"].endswith("fused_mix")
