"""The latency benchmark at a tiny size on CPU: PyTorch and ONNX Runtime FP32 (+ INT8 where ModelOpt
is installed) for LP, RM and FT in one process; table, JSON and plot written. Timings are never
asserted: only that every number is there, with its environment beside it."""
import importlib.util
import json

import pytest

from layover_edge.apps.bench import ONNX_LABELS, BenchConfig, plan_variants, ratio_rows, run_bench
from layover_edge.cli import main
from layover_edge.core.errors import LayoverError

HAS_ORT = importlib.util.find_spec("onnxruntime") is not None
HAS_MODELOPT = importlib.util.find_spec("modelopt") is not None


def tiny(**kw) -> BenchConfig:
    base = dict(backbone="test_convnext", image_size=48, num_classes=5, batches=(1, 2), warmup=1, iters=4, rounds=2,
                calib_images=32, threads=2)
    return BenchConfig(**(base | kw))


@pytest.mark.skipif(not HAS_ORT, reason="onnxruntime is not installed (pip install 'layover-edge[export]')")
def test_bench_cpu_torch_and_onnxruntime(tmp_path):
    precisions = ("fp32", "int8", "int8-ort") if HAS_MODELOPT else ("fp32", "int8-ort")
    result = run_bench(tiny(formats=("torch", "onnxruntime"), precisions=precisions), tmp_path, progress=False)
    rows = result["rows"]
    variants = {r["variant"] for r in rows}
    assert variants == {"PyTorch eager fp32", *(ONNX_LABELS[p] for p in precisions)}
    assert all(r["status"] == "ok" for r in rows), [r.get("error") for r in rows]
    assert len(rows) == len(variants) * 3 * 2
    for r in rows:
        lat = r["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] and r["throughput"] > 0 and r["iterations"] == 4
        assert r["compute_ms"] is None  # CPU: no host-device copies to leave out
        assert r["env"]["device_name"] and r["env"]["torch"] and r["precision"] and r["cuda_graph"] is False
    ratios = ratio_rows(rows)
    assert len(ratios) == len(variants) * 2 and all(q["RM/LP"] > 0 and q["FT/LP"] > 0 for q in ratios)
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert len(saved["rows"]) == len(rows)
    md = (tmp_path / "bench.md").read_text()
    assert "| Method | Format | Precision | CUDA graph | Status | Size (MB) |" in md and "RM/LP" in md
    assert "it shows INT8 accuracy, not INT8 speed" in md
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_cli_torch_only(tmp_path, capsys):
    rc = main(["bench", "--backbone", "test_convnext", "--image-size", "48", "--num-classes", "5", "--methods",
               "lp", "rm", "--batches", "1", "--formats", "torch", "--warmup", "1", "--iters", "2", "--rounds", "1",
               "--device", "cpu", "--out", str(tmp_path), "--quiet", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert [(r["method"], r["status"]) for r in out["rows"]] == [("LP", "ok"), ("RM", "ok")]


def test_failed_variant_is_reported_not_fatal(tmp_path):
    result = run_bench(tiny(formats=("torch",), modes=("eager", "graph"), methods=("lp",), batches=(1,)), tmp_path,
                       progress=False)
    status = {r["variant"]: r["status"] for r in result["rows"]}
    assert status == {"PyTorch eager fp32": "ok", "PyTorch CUDA graph fp32": "failed"}
    assert "CUDA graphs need a CUDA device" in (tmp_path / "bench.md").read_text()


def test_plan_and_config_errors():
    import torch
    assert [v.label for v in plan_variants(tiny(formats=("torch",)), torch.device("cpu"))] == ["PyTorch eager fp32"]
    with pytest.raises(LayoverError, match="no variant"):
        plan_variants(tiny(formats=("torch",), precisions=("int8",)), torch.device("cpu"))
    with pytest.raises(LayoverError, match="unknown methods"):
        tiny(methods=("xx",))


@pytest.mark.skipif(not HAS_ORT, reason="onnxruntime is not installed (pip install 'layover-edge[export]')")
def test_onnxruntime_int8_graph_is_quantized_close_and_not_for_tensorrt(tmp_path):
    import numpy as np
    import onnx

    from layover_edge.apps.bench import calibration
    from layover_edge.core.config import ModelConfig
    from layover_edge.export.build import prepare_build
    from layover_edge.export.onnx import export_onnx
    from layover_edge.export.quantize import quantize_int8_ort
    from layover_edge.export.targets import get_target
    from layover_edge.models import build_model, resolve_config, save_checkpoint
    from layover_edge.runtime.onnx_backend import OnnxBackend
    cfg = resolve_config(ModelConfig(backbone="test_convnext", num_classes=5, weights="none", image_size=48))
    fp32 = export_onnx(save_checkpoint(build_model(cfg), cfg, tmp_path / "ckpt"), tmp_path / "m.onnx")
    images = calibration(OnnxBackend(fp32).info, 32)
    q = quantize_int8_ort(fp32, tmp_path / "m.int8-ort.onnx", images)
    ops = {n.op_type for n in onnx.load(str(q)).graph.node}
    assert "QLinearConv" in ops and "Sigmoid" in ops  # quantized backbone, FP32 head
    ref, got = OnnxBackend(fp32).run(images)["probabilities"], OnnxBackend(q).run(images)["probabilities"]
    assert OnnxBackend(q).metadata()["precision"] == "int8" and np.abs(got - ref).max() < 0.1
    with pytest.raises(LayoverError, match="TensorRT does not build"):
        prepare_build(q, tmp_path / "e", "int8", get_target("h100"), "10.16.0")
