"""The TensorRT side: what runs without TensorRT is tested for real (target profiles, the
TensorRT 10/11 precision mode, trtexec command text, build validation, sidecar checks and the
engine refusals); the builder and runtime themselves skip when tensorrt is not importable."""
import importlib.util
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx_fixtures import fake_engine, tiny_onnx  # noqa: E402

from layover_edge.artifacts.sidecar import check_compatible, read_sidecar, sidecar_path  # noqa: E402
from layover_edge.core.errors import LayoverError  # noqa: E402
from layover_edge.export.build import prepare_build  # noqa: E402
from layover_edge.export.precision import precision_mode  # noqa: E402
from layover_edge.export.targets import TARGETS, get_target  # noqa: E402
from layover_edge.runtime.factory import open_backend  # noqa: E402

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
needs_trt = pytest.mark.skipif(not HAS_TRT, reason="tensorrt is not importable (no TensorRT on this machine)")


def test_targets():
    assert {"orin-nano", "orin-nx", "orin-agx", "h100", "h200"} <= set(TARGETS)
    orin = get_target("orin-agx")
    assert (orin.sm, orin.tensorrt, orin.dla_cores) == ("sm_87", "10.3", 2)
    assert get_target("h100").sm == get_target("h200").sm == "sm_90"
    with pytest.raises(LayoverError, match="unknown target"):
        get_target("xavier")


@pytest.mark.parametrize("graph,precision,version,dla,expect", [
    # (strongly typed, --fp16, --int8, head pinned, constraints)
    ("fp32", "fp32", "10.3.0", False, (False, False, False, False, None)),
    ("fp32", "fp32", "11.1.0", False, (True, False, False, False, None)),
    ("fp32", "fp16", "10.3.0", False, (False, True, False, True, "obey")),
    ("fp16", "fp16", "10.3.0", False, (True, False, False, False, None)),
    ("fp16", "fp16", "11.1.0", False, (True, False, False, False, None)),
    ("int8", "int8", "10.3.0", False, (True, False, False, False, None)),
    ("int8", "int8", "11.1.0", False, (True, False, False, False, None)),
    # DLA on TensorRT 10: weakly typed (trtexec's --useDLACore sets kFP16 unless --int8; a strongly typed
    # network refuses kFP16), head pinned with prefer (the DLA block sets kPREFER itself)
    ("int8", "int8", "10.3.0", True, (False, True, True, True, "prefer")),
    ("fp16", "fp16", "10.3.0", True, (False, True, False, True, "prefer")),
    ("fp32", "fp16", "10.3.0", True, (False, True, False, True, "prefer")),
    ("int8", "int8", "11.4.1", True, (True, False, False, False, None)),
])
def test_precision_mode(graph, precision, version, dla, expect):
    mode = precision_mode(graph, precision, version, dla)
    assert (mode.strongly_typed, mode.fp16_flag, mode.int8_flag, mode.pin_fp32, mode.constraints) == expect


@pytest.mark.parametrize("graph,precision,version,message", [
    ("fp32", "fp16", "11.1.0", "no FP16 builder flag"),
    ("fp32", "int8", "10.3.0", "Q/DQ graph"),
    ("int8", "fp16", "10.3.0", "--precision int8"),
    ("fp32", "fp32", "8.6.1", "too old"),
])
def test_build_plan_refusals(graph, precision, version, message):
    with pytest.raises(LayoverError, match=message):
        precision_mode(graph, precision, version)


def test_trtexec_commands(tmp_path):
    onnx_path = tiny_onnx(tmp_path / "m.onnx")
    req = prepare_build(onnx_path, tmp_path / "m.engine", "fp16", get_target("orin-nx"), "10.3.0",
                        timing_cache=str(tmp_path / "tc.cache"))
    cmd = req.trtexec()
    head = "b:fp32,node_linear_0:fp32,node_linear_0_bias:fp32,node_sigmoid:fp32,w:fp32"
    for part in ("--fp16", "--minShapes=image:1x3x8x8", "--optShapes=image:4x3x8x8", "--maxShapes=image:16x3x8x8",
                 "--memPoolSize=workspace:2048M", "--precisionConstraints=obey", f"--layerPrecisions={head}",
                 f"--layerOutputTypes={head}", "--timingCacheFile="):
        assert part in cmd
    q = prepare_build(tiny_onnx(tmp_path / "q.onnx", "int8"), tmp_path / "q.engine", "int8", get_target("h100"),
                      "10.16.0", batch=(1, 8, 64))
    assert "--stronglyTyped" in q.trtexec() and "--int8" not in q.trtexec() and "image:64x3x8x8" in q.trtexec()
    q11 = prepare_build(tmp_path / "q.onnx", tmp_path / "q.engine", "int8", get_target("h100"), "11.1.0")
    assert "--stronglyTyped" not in q11.trtexec() and "--fp16" not in q11.trtexec()


def test_static_batch_graph_gets_no_shape_flags(tmp_path):
    """trtexec refuses explicit shapes for a fully static graph ("Static model does not take explicit
    shapes", release/10.3 samples/common/sampleEngines.cpp:838-845): the DLA export's command."""
    path = tiny_onnx(tmp_path / "s.onnx", "int8", batch=4)
    for version, dla in (("10.3.0", 0), ("10.3.0", None), ("11.4.1", 0)):
        cmd = prepare_build(path, tmp_path / "e", "int8", get_target("orin-agx"), version, dla_core=dla).trtexec()
        assert "Shapes=" not in cmd
    dynamic = prepare_build(tiny_onnx(tmp_path / "d.onnx", "int8"), tmp_path / "e", "int8", get_target("orin-agx"),
                            "10.3.0", batch=(4, 4, 4), dla_core=0).trtexec()
    assert "--minShapes=image:4x3x8x8" in dynamic and "--maxShapes=image:4x3x8x8" in dynamic


def test_dla_build_on_tensorrt_10_is_weakly_typed(tmp_path):
    """--useDLACore sets kFP16 unless --int8 (sampleEngines.cpp:1143-1146 at 10.3) and --stronglyTyped
    clears --int8/--fp16 (sampleOptions.cpp:1231-1247): the strongly typed DLA command cannot build."""
    q = prepare_build(tiny_onnx(tmp_path / "q.onnx", "int8", batch=4), tmp_path / "e", "int8",
                      get_target("orin-agx"), "10.3.0", dla_core=1).trtexec().split()
    assert "--stronglyTyped" not in q and {"--int8", "--fp16", "--useDLACore=1", "--allowGPUFallback",
                                           "--precisionConstraints=prefer"} <= set(q)
    f = prepare_build(tiny_onnx(tmp_path / "f.onnx", "fp16", batch=4), tmp_path / "e", "fp16",
                      get_target("orin-agx"), "10.3.0", dla_core=0).trtexec().split()
    assert "--stronglyTyped" not in f and "--int8" not in f and {"--fp16", "--precisionConstraints=prefer"} <= set(f)


def test_dla_rules(tmp_path):
    path = tiny_onnx(tmp_path / "q.onnx", "int8")
    dla = prepare_build(path, tmp_path / "e", "int8", get_target("orin-agx"), "10.3.0", batch=(4, 4, 4), dla_core=1)
    assert "--useDLACore=1" in dla.trtexec() and "--allowGPUFallback" in dla.trtexec()
    assert "run on the GPU" in dla.dla_note()
    prepare_build(path, tmp_path / "e", "int8", get_target("orin-agx"), "11.4.1", batch=(4, 4, 4), dla_core=0)
    for target, batch, version, message in (("orin-nano", (4, 4, 4), "10.3.0", "has 0 DLA cores"),
                                            ("orin-agx", (1, 4, 8), "10.3.0", "static batch"),
                                            ("orin-agx", (4, 4, 4), "10.13.0", "10.7 was the last"),
                                            ("orin-agx", (4, 4, 4), "11.1.0", "returns in 11.4.1"),
                                            ("orin-agx", (4, 4, 4), "11.4.0", "returns in 11.4.1"),
                                            ("orin-nx", (4, 4, 4), "11.4.1", "AGX Orin only")):
        with pytest.raises(LayoverError, match=message):
            prepare_build(path, tmp_path / "e", "int8", get_target(target), version, batch=batch, dla_core=0)
    with pytest.raises(LayoverError, match="FP16 or INT8"):
        prepare_build(tiny_onnx(tmp_path / "f.onnx"), tmp_path / "e", "fp32", get_target("orin-agx"), "10.3.0",
                      batch=(1, 1, 1), dla_core=0)


def test_static_batch_graph_fixes_the_profile(tmp_path):
    path = tiny_onnx(tmp_path / "s.onnx", "int8", batch=4)
    req = prepare_build(path, tmp_path / "e", "int8", get_target("orin-agx"), "10.3.0", dla_core=0)
    assert req.batch == (4, 4, 4) and not req.dynamic
    with pytest.raises(LayoverError, match="fixed batch of 4"):
        prepare_build(path, tmp_path / "e", "int8", get_target("orin-agx"), "10.3.0", batch=(1, 4, 8))


def test_plugin_library_checks(tmp_path):
    path = tiny_onnx(tmp_path / "p.onnx", plugin=True)
    from layover_edge.kernels.identity import PLUGIN_NAME, PLUGIN_NAMESPACE, PLUGIN_VERSION
    with pytest.raises(LayoverError, match=f"{PLUGIN_NAME}/{PLUGIN_VERSION}/{PLUGIN_NAMESPACE}: pass --plugins"):
        prepare_build(path, tmp_path / "e", "fp32", get_target("h100"), "10.16.0")
    with pytest.raises(LayoverError, match="plugin library not found"):
        prepare_build(path, tmp_path / "e", "fp32", get_target("h100"), "10.16.0", plugins=[str(tmp_path / "x.so")])
    lib = tmp_path / "liblayover_plugins.so"
    lib.write_bytes(b"\x7fELF")
    req = prepare_build(path, tmp_path / "e", "fp32", get_target("h100"), "10.16.0", plugins=[str(lib)])
    assert req.plugin_nodes == [(PLUGIN_NAME, PLUGIN_VERSION, PLUGIN_NAMESPACE)]
    assert f"--dynamicPlugins={lib}" in req.trtexec()


def test_onnx_without_our_metadata_is_refused(tmp_path):
    path = tiny_onnx(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.save(model, str(path))
    with pytest.raises(LayoverError, match="no layover-edge metadata"):
        prepare_build(path, tmp_path / "e", "fp32", get_target("h100"), "10.16.0")


def test_sidecar_contents_and_compatibility(tmp_path):
    engine, sidecar = fake_engine(tmp_path)
    doc = read_sidecar(engine)
    assert doc["labels"] == ["a", "b"] and doc["batch"] == [1, 8, 32] and doc["precision"] == "fp32"
    assert len(doc["onnx_sha256"]) == 64 and doc["trtexec"].startswith("trtexec ")
    check_compatible(doc, "10.3.0", "8.7", "Orin")
    with pytest.raises(LayoverError, match="TensorRT 10.3.0, this is TensorRT 11.1.0"):
        check_compatible(doc, "11.1.0", "8.7", "Orin")
    with pytest.raises(LayoverError, match=r"compute capability 8.7\), this GPU is NVIDIA H100 \(9.0\)"):
        check_compatible(doc, "10.3.0", "9.0", "NVIDIA H100")


def test_another_build_of_the_same_tensorrt_version_is_refused_by_us(tmp_path):
    """JetPack's bindings say "10.3.0" whatever the build, and TensorRT refuses a plan of another build
    with only a None from deserialize_cuda_engine: the library's own identity is compared first."""
    built = {"version": "10.13.0.35", "bytes": 1000}
    engine, _ = fake_engine(tmp_path, tensorrt="10.13.0.35", tensorrt_library=built)
    doc = read_sidecar(engine)
    check_compatible(doc, "10.13.0.35", "8.7", "Orin", dict(built))
    check_compatible(doc, "10.13.0.35", "8.7", "Orin", None)  # no libnvinfer identity here: nothing more to compare
    with pytest.raises(LayoverError, match="libnvinfer 10.13.0.35, this is 10.13.0.36"):
        check_compatible(doc, "10.13.0.35", "8.7", "Orin", {"version": "10.13.0.36", "bytes": 1000})
    jetpack, _ = fake_engine(tmp_path, tensorrt_library={"version": "10.3.0", "bytes": 1000})
    with pytest.raises(LayoverError, match="another build of TensorRT 10.3.0: libnvinfer of 1000 bytes, this one has"):
        check_compatible(read_sidecar(jetpack), "10.3.0", "8.7", "Orin", {"version": "10.3.0", "bytes": 999})
    old, _ = fake_engine(tmp_path)  # a sidecar from before the library was recorded
    check_compatible(read_sidecar(old), "10.3.0", "8.7", "Orin", {"version": "10.3.0", "bytes": 999})


LIBNVINFER = {  # what the real libraries export, per their headers (core/tensorrt.library_identity cites them)
    "10.3": "int getInferLibVersion(void) { return 100300; }",
    "10.13": "int getInferLibVersion(void) { return 101300; } int getInferLibMajorVersion(void) { return 10; }"
             " int getInferLibMinorVersion(void) { return 13; } int getInferLibPatchVersion(void) { return 0; }"
             " int getInferLibBuildVersion(void) { return 35; }",
}


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build the stand-in libnvinfer")
@pytest.mark.parametrize("release, version", [("10.3", "10.3.0"), ("10.13", "10.13.0.35")])
def test_library_identity_reads_the_loaded_libnvinfer(tmp_path, release, version):
    """A stand-in libnvinfer.so.10 exporting the version functions of that release (TensorRT's libraries
    cannot be installed here), loaded as the bindings load it; library_identity finds it in the process."""
    src, lib = tmp_path / "v.c", tmp_path / "libnvinfer.so.10"
    src.write_text(LIBNVINFER[release])
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    code = ("import ctypes, json, sys; ctypes.CDLL(sys.argv[1]); "
            "from layover_edge.core.tensorrt import library_identity; print(json.dumps(library_identity()))")
    run = subprocess.run([sys.executable, "-c", code, str(lib)], capture_output=True, text=True, check=True)
    assert json.loads(run.stdout) == {"version": version, "bytes": lib.stat().st_size}
    none = subprocess.run([sys.executable, "-c", code.replace("ctypes.CDLL(sys.argv[1]); ", ""), "x"],
                          capture_output=True, text=True, check=True)
    assert json.loads(none.stdout) is None


def test_engine_refusals_before_tensorrt(tmp_path):
    engine, _ = fake_engine(tmp_path)
    engine.write_bytes(b"another engine")
    with pytest.raises(LayoverError, match="sha256 differs"):
        open_backend(engine)
    sidecar_path(engine).unlink()
    with pytest.raises(LayoverError, match="has no sidecar"):
        open_backend(engine)


@pytest.mark.skipif(HAS_TRT, reason="checks the message shown where TensorRT is missing")
def test_engine_needs_tensorrt(tmp_path):
    engine, _ = fake_engine(tmp_path)
    with pytest.raises(LayoverError, match="TensorRT is not installed"):
        open_backend(engine)


def test_build_cli_without_tensorrt_prints_trtexec(tmp_path, capsys):
    from layover_edge.cli import main
    path = tiny_onnx(tmp_path / "m.onnx")
    assert main(["build", str(path), "--precision", "fp16", "--target", "orin-nano", "--trtexec-only"]) == 0
    assert capsys.readouterr().out.startswith("trtexec --onnx=")
    if not HAS_TRT:
        assert main(["build", str(path), "--precision", "fp32", "--target", "h100"]) == 2
        assert "TensorRT is not installed here; build on the device with: trtexec" in capsys.readouterr().err


@needs_trt
def test_build_and_run_engine(tmp_path):
    import tensorrt as trt

    from layover_edge.core.cuda import CudaDevice
    from layover_edge.export.build import build_engine
    cc = CudaDevice().compute_capability
    target = next(t for t in TARGETS.values() if t.compute_capability == cc)
    req = prepare_build(tiny_onnx(tmp_path / "m.onnx"), tmp_path / "m.engine", "fp32", target, trt.__version__,
                        batch=(1, 2, 4), timing_cache=str(tmp_path / "tc"))
    build_engine(req)
    backend = open_backend(tmp_path / "m.engine")
    x = np.random.default_rng(0).standard_normal((6, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(backend.predict(x), 1 / (1 + np.exp(-x.mean((2, 3)).sum(1, keepdims=True)))
                               .repeat(2, 1), atol=1e-5)
    assert (tmp_path / "tc").is_file()


@needs_trt
def test_cuda_graphs_alternating_batch_sizes_each_have_their_context(tmp_path):
    """Batches 4 and 2 alternate (a tail batch): each replays its own graph on its own execution context,
    and the answers stay right, also with the FP32 build's TF32 off (|Δ| ≤ 1e-5)."""
    import tensorrt as trt

    from layover_edge.core.cuda import CudaDevice
    from layover_edge.export.build import build_engine
    cc = CudaDevice().compute_capability
    target = next(t for t in TARGETS.values() if t.compute_capability == cc)
    req = prepare_build(tiny_onnx(tmp_path / "g.onnx"), tmp_path / "g.engine", "fp32", target, trt.__version__,
                        batch=(1, 4, 4))
    assert build_engine(req)["tf32"] is False
    backend = open_backend(tmp_path / "g.engine", cuda_graph=True)
    x = np.random.default_rng(2).standard_normal((4, 3, 8, 8)).astype(np.float32)
    want = 1 / (1 + np.exp(-x.mean((2, 3)).sum(1, keepdims=True))).repeat(2, 1)
    for batch in (x, x[:2], x, x[:2]):
        np.testing.assert_allclose(backend.predict(batch), want[:len(batch)], atol=1e-5)
    contexts = [context for context, _ in backend.graphs.values()]
    assert sorted(backend.graphs) == [2, 4] and len({id(c) for c in contexts}) == 2


@needs_trt
def test_static_batch_engine_tags_one_frame_at_a_time(tmp_path):
    """A fixed-batch-4 engine (the DLA export) takes one camera frame: run pads it to 4 and drops the padding."""
    import tensorrt as trt

    from layover_edge.core.cuda import CudaDevice
    from layover_edge.export.build import build_engine
    cc = CudaDevice().compute_capability
    target = next(t for t in TARGETS.values() if t.compute_capability == cc)
    req = prepare_build(tiny_onnx(tmp_path / "s.onnx", batch=4), tmp_path / "s.engine", "fp32", target,
                        trt.__version__)
    build_engine(req)
    backend = open_backend(tmp_path / "s.engine")
    assert backend.batch_range == (4, 4)
    x = np.random.default_rng(1).standard_normal((5, 3, 8, 8)).astype(np.float32)
    want = 1 / (1 + np.exp(-x.mean((2, 3)).sum(1, keepdims=True))).repeat(2, 1)
    np.testing.assert_allclose(backend.predict(x[:1]), want[:1], atol=1e-5)
    np.testing.assert_allclose(backend.predict(x), want, atol=1e-5)


def test_build_dla_says_what_runs_on_the_gpu(tmp_path, capsys):
    from layover_edge.cli import main
    path = tiny_onnx(tmp_path / "q.onnx", "int8", batch=4)
    assert main(["build", str(path), "--precision", "int8", "--target", "orin-agx", "--dla-core", "0",
                 "--trtexec-only"]) == 0
    out, err = capsys.readouterr()
    assert "--useDLACore=0" in out and "FP32 head (3 ONNX nodes)" in err and "run on the GPU" in err
