"""The device benchmark on the user's own files, on this CPU: LP/RM/FT exported through the
project's own export path (test_convnext at 64 px, random weights), as ONNX files and checkpoints,
timed in one command that prints RM/LP. Timings are never asserted: what is checked is that every
file ran on the backends that can run it, under the method its metadata names, interleaved with
its peers, and that what cannot run here (a TensorRT engine) is reported with the reason."""
import importlib.util
import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
from onnx_fixtures import fake_engine, tiny_onnx  # noqa: E402

from layover_edge.apps.bench_files import FileBenchConfig, describe, run_file_bench  # noqa: E402
from layover_edge.cli import main  # noqa: E402
from layover_edge.core.errors import LayoverError  # noqa: E402

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """LP, RM, FT of one backbone: checkpoints and their ONNX exports, as `layover-edge export` writes them."""
    import torch

    from layover_edge.core.config import ModelConfig
    from layover_edge.export.onnx import export_onnx
    from layover_edge.models import build_model, resolve_config, save_checkpoint
    d = tmp_path_factory.mktemp("exports")
    out = {}
    for m in ("lp", "rm", "ft"):
        cfg = resolve_config(ModelConfig(backbone="test_convnext", num_classes=5, method=m, weights="none",
                                         image_size=64))
        torch.manual_seed(0)
        ckpt = save_checkpoint(build_model(cfg), cfg, d / f"{m}-checkpoint")
        out[m] = (ckpt, export_onnx(ckpt, d / f"{m}.onnx", verify=False))
    return out


def test_one_command_times_lp_rm_ft_files_and_prints_rm_over_lp(exports, tmp_path, capsys):
    files = [str(exports[m][1]) for m in ("ft", "lp", "rm")] + [str(exports[m][0]) for m in ("lp", "rm", "ft")]
    rc = main(["bench", *files, "--batches", "1", "2", "--warmup", "1", "--iters", "4", "--rounds", "2",
               "--threads", "2", "--out", str(tmp_path), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0 and "| Backend and precision | Batch | LP ms | RM ms | FT ms | RM/LP | FT/LP |" in out
    result = json.loads((tmp_path / "bench.json").read_text())
    rows = result["rows"]
    assert all(r["status"] == "ok" for r in rows), [r.get("error") for r in rows]
    # every file ran once per batch on each backend that runs its kind, under its metadata's method
    got = sorted((r["model"], r["method"], r["backend_label"], r["batch"]) for r in rows)
    want = sorted([(f"{m}.onnx", m.upper(), "ONNX Runtime CPU", b) for m in ("lp", "rm", "ft") for b in (1, 2)]
                  + [(f"{m}-checkpoint", m.upper(), "PyTorch CPU eager", b) for m in ("lp", "rm", "ft") for b in (1, 2)])
    assert got == want
    for r in rows:
        lat = r["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] and r["iterations"] == 4 and r["precision"] == "fp32"
        assert r["compute_ms"] is None and r["energy_mj_per_image"] is None  # CPU: no device time, no rails
    ratios = {(q["variant"], q["batch"]): q for q in
              __import__("layover_edge.apps.bench", fromlist=["ratio_rows"]).ratio_rows(rows)}
    assert set(ratios) == {(v, b) for v in ("ONNX Runtime CPU fp32", "PyTorch CPU eager fp32") for b in (1, 2)}
    assert all(q["RM/LP"] > 0 and q["FT/LP"] > 0 for q in ratios.values())
    env = result["environment"]
    assert env["onnxruntime"] and env["torch_threads"] == 2 and "not found" in env["trtexec"] or env["trtexec"]
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"


def test_onnx_files_are_timed_without_torch(exports, tmp_path):
    """The Jetson's device install has no torch: with it unimportable, ONNX files are timed and a
    checkpoint gets a row saying why it cannot run (tests/test_device_install.py does it in a real venv)."""
    import subprocess
    import sys
    code = ("import sys, json; sys.modules['torch'] = sys.modules['timm'] = None\n"
            "from layover_edge.cli import main\n"
            f"rc = main(['bench', {str(exports['lp'][1])!r}, {str(exports['rm'][1])!r}, {str(exports['lp'][0])!r}, "
            f"'--batches', '1', '--warmup', '1', '--iters', '2', '--rounds', '1', '--out', {str(tmp_path)!r}, '--quiet'])\n"
            "print(json.dumps([rc, [m for m, v in sys.modules.items() if v is not None and m.split('.')[0] in "
            "('torch', 'timm')]]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    rc, loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert rc == 0 and loaded == [], done.stderr
    rows = {r["model"]: r for r in json.loads((tmp_path / "bench.json").read_text())["rows"]}
    assert rows["lp.onnx"]["status"] == rows["rm.onnx"]["status"] == "ok"
    assert rows["lp-checkpoint"]["status"] == "skipped" and "PyTorch is not installed" in rows["lp-checkpoint"]["error"]


def test_files_are_what_their_metadata_says(exports, tmp_path):
    """The exported files compute what their checkpoints do (ONNX Runtime vs PyTorch on one batch),
    so the table compares the user's models, and each is described from its own metadata."""
    from layover_edge.runtime.factory import open_model
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    for m, (ckpt, onnx_path) in exports.items():
        d = describe(onnx_path)
        assert (d.kind, d.method, d.backbone, d.precision, d.image_size) == ("onnxruntime", m, "test_convnext", "fp32", 64)
        assert describe(ckpt).method == m and describe(ckpt).precision is None
        np.testing.assert_allclose(open_model(onnx_path).predict(x), open_model(ckpt).predict(x), atol=1e-4)


def test_engine_without_tensorrt_is_skipped_with_the_reason(exports, tmp_path):
    """An engine beside ONNX files: here (no TensorRT, no GPU) its rows say why, the rest still runs;
    a second model size forms its own comparison."""
    (tmp_path / "e").mkdir()
    engine, _ = fake_engine(tmp_path / "e")
    tiny = tiny_onnx(tmp_path / "tiny.onnx")  # 8 px, method lp: compared with nothing at 64 px
    cfg = FileBenchConfig(models=(str(exports["lp"][1]), str(exports["rm"][1]), str(engine), str(tiny)),
                          batches=(1,), warmup=1, iters=2, rounds=1, threads=2, power=False)
    rows = run_file_bench(cfg, tmp_path / "out", progress=False)["rows"]
    by = {(r["model"], r["backend_label"]): r for r in rows}
    eng = by[("m.engine", "TensorRT CUDA graph")]
    assert eng["status"] == "skipped" and eng["method"] == "LP"
    assert ("TensorRT is not installed" in eng["error"]) or HAS_TRT
    assert {r["variant"] for r in rows if r["model"] in ("lp.onnx", "rm.onnx", "tiny.onnx")} == {"ONNX Runtime CPU fp32"}
    assert all(by[(m, "ONNX Runtime CPU")]["status"] == "ok" for m in ("lp.onnx", "rm.onnx", "tiny.onnx"))
    md = (tmp_path / "out" / "bench.md").read_text()
    assert "⏭ m.engine on TensorRT CUDA graph:" in md
    cpu_only = run_file_bench(FileBenchConfig(models=(str(engine),), batches=(1,), warmup=0, iters=1, rounds=1,
                                              device="cpu", power=False), tmp_path / "cpu", progress=False)
    assert [r["error"] for r in cpu_only["rows"]] == ["engines run on a GPU; --device cpu leaves them out"]


def test_bad_inputs_are_one_line(exports, tmp_path, capsys):
    foreign = tmp_path / "foreign.onnx"
    foreign.write_bytes(b"not a protobuf at all")
    for argv, message in [
        ([str(exports["lp"][1]), "--backbone", "resnet50"], "--backbone apply to the backbone-name mode"),
        ([str(tmp_path / "missing.onnx")], "missing.onnx"),
        ([str(tmp_path / "notes.txt")], "not a model layover-edge can run"),
        ([str(foreign)], "foreign.onnx"),
        ([str(exports["lp"][1]), "--precisions", "int8"], "applies to checkpoints"),
    ]:
        (tmp_path / "notes.txt").write_text("x")
        assert main(["bench", *argv, "--out", str(tmp_path / "o"), "--quiet"]) != 0
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "error:" in err and message in err, (argv, err)
    with pytest.raises(LayoverError, match="no model files"):
        FileBenchConfig(models=())


@pytest.mark.skipif(not HAS_TRT, reason="tensorrt is not importable (no TensorRT and GPU on this machine): the "
                                        "engine's device-resident timing and trtexec run only on a device")
def test_engine_timed_on_the_gpu_with_and_without_copies(tmp_path):
    import tensorrt as trt

    from layover_edge.core.cuda import CudaDevice
    from layover_edge.export.build import build_engine, prepare_build
    from layover_edge.export.targets import TARGETS
    from layover_edge.runtime.factory import open_backend
    cc = CudaDevice().compute_capability
    target = next(t for t in TARGETS.values() if t.compute_capability == cc)
    req = prepare_build(tiny_onnx(tmp_path / "m.onnx"), tmp_path / "m.engine", "fp32", target, trt.__version__,
                        batch=(1, 2, 4))
    build_engine(req)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    backend = open_backend(tmp_path / "m.engine", cuda_graph=True)
    timer = backend.device_timer(x)
    assert timer() > 0 and backend.device_timer(np.zeros((8, 3, 8, 8), np.float32)) is None  # beyond the profile
    np.testing.assert_allclose(backend.predict(x), 1 / (1 + np.exp(-x.mean((2, 3)).sum(1, keepdims=True))).repeat(2, 1),
                               atol=1e-5)  # graphs replayed by the timer leave predict right
    cfg = FileBenchConfig(models=(str(tmp_path / "m.engine"), str(tmp_path / "m.onnx")), batches=(1, 4, 8),
                          device="cuda", warmup=2, iters=10, rounds=2, power=False)
    rows = run_file_bench(cfg, tmp_path / "out", progress=False)["rows"]
    eng = {r["batch"]: r for r in rows if r["kind"] == "tensorrt"}
    assert eng[8]["status"] == "skipped" and "batches 1-4" in eng[8]["error"]
    for b in (1, 4):
        assert eng[b]["status"] == "ok" and 0 < eng[b]["compute_ms"]["p50"] <= eng[b]["latency_ms"]["p99"]
        nv = eng[b].get("trtexec")
        assert nv is None or "error" in nv or nv["gpu_compute_ms"]["median"] > 0
