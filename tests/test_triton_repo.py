"""``export --triton-repo``: every generated config.pbtxt is parsed with Triton's own ModelConfig
protobuf (tritonclient's model_config_pb2) and checked against the ONNX graph and the engine
sidecar; PyTriton's bundled tritonserver reads the repository too.

The bundled server has only the python backend, so it cannot load these models: what it proves is
that Triton accepted the config text and mapped each platform to its backend. Serving the repository
end to end needs NVIDIA's Triton container (or its JetPack release), which cannot run here.
"""
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from layover_edge.artifacts.onnx_metadata import get_metadata
from layover_edge.artifacts.sidecar import FORMAT as SIDECAR_FORMAT
from layover_edge.artifacts.sidecar import sidecar_path
from layover_edge.cli import main
from layover_edge.core.config import ModelConfig, ServeConfig
from layover_edge.core.errors import LayoverError
from layover_edge.core.io import sha256, write_json
from layover_edge.export.triton_repo import ONNX_MODEL, TRT_MODEL, graph_io, write_repository
from layover_edge.models import build_model, save_checkpoint

from onnx_fixtures import tiny_onnx

mc = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient (the serve extra) is not installed")
from google.protobuf import text_format  # noqa: E402

FILES = {"onnxruntime_onnx": "model.onnx", "tensorrt_plan": "model.plan"}


def check_model(folder: Path, sidecar: dict | None = None) -> list[str]:
    """Problems Triton would find, or that would make the model answer wrongly: the config must parse
    as Triton's ModelConfig, name its folder, hold the model file and labels, and match the graph's
    (or the engine's) inputs and outputs in name, type and dims."""
    try:
        cfg = text_format.Parse((folder / "config.pbtxt").read_text(), mc.ModelConfig())
    except (OSError, text_format.ParseError) as e:
        return [str(e)]
    problems = []
    if cfg.name != folder.name:
        problems.append(f"name {cfg.name!r} is not the folder's")
    if cfg.platform not in FILES:
        return problems + [f"platform {cfg.platform!r}"]
    model_file = folder / "1" / FILES[cfg.platform]
    if not model_file.is_file():
        return problems + [f"no {model_file}"]
    batched = cfg.max_batch_size > 0
    if batched != cfg.HasField("dynamic_batching"):
        problems.append("dynamic batching without a batch axis, or a batch axis without it")
    if cfg.platform == "onnxruntime_onnx":
        inputs, outputs = graph_io(onnx.load(str(model_file), load_external_data=False))
    else:
        s, k, fixed = sidecar["image_size"], len(sidecar["labels"]), sidecar["batch"][0] == sidecar["batch"][2]
        batch = [sidecar["batch"][0]] if fixed else [-1]
        inputs = [(sidecar["input"], "TYPE_FP32", [*batch, 3, s, s])]
        outputs = [(o, "TYPE_FP32", [*batch, k]) for o in sidecar["outputs"]]
    for kind, declared, actual in (("input", cfg.input, inputs), ("output", cfg.output, outputs)):
        want = {n: (t, d[1:] if batched else d) for n, t, d in actual}
        got = {t.name: (mc.DataType.Name(t.data_type), list(t.dims)) for t in declared}
        if got != want:
            problems.append(f"{kind}s {got} but the model has {want}")
        if batched and any(d[0] != -1 for _, _, d in actual):
            problems.append(f"max_batch_size {cfg.max_batch_size} on a static batch axis")
    labels = [t for t in cfg.output if t.label_filename]
    if [t.name for t in labels] != ["probabilities"]:
        problems.append("the labels file belongs to the probabilities output")
    elif len((folder / labels[0].label_filename).read_text().splitlines()) != labels[0].dims[-1]:
        problems.append("one label per class")
    return problems


@pytest.fixture
def tiny(tmp_path):
    return tiny_onnx(tmp_path / "model.onnx")


def fake_engine(tmp_path, batch=(1, 4, 16), labels=("a", "b"), image_size=8, dla_core=None, plugins=()):
    """An engine file and the sidecar `build` writes beside it. TensorRT cannot build one here; the
    repository writer only copies the engine's bytes and reads its sidecar."""
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"stand-in engine bytes")
    write_json(sidecar_path(engine), {
        "format": SIDECAR_FORMAT, "tensorrt": "10.3.0", "gpu": "Orin", "compute_capability": "8.7",
        "precision": "int8", "input": "image", "outputs": ["logits", "probabilities"], "batch": list(batch),
        "onnx_sha256": "0" * 64, "engine_sha256": sha256(engine), "labels": list(labels), "thresholds": None,
        "image_size": image_size, "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bilinear",
        "plugins": list(plugins), "dla_core": dla_core})
    return engine


def test_onnx_and_engine_models_parse_and_match_their_model(tiny, tmp_path):
    engine = fake_engine(tmp_path)
    rows = write_repository(tiny, tmp_path / "repo", engine)
    assert set(rows) == {f"triton {ONNX_MODEL}", f"triton {TRT_MODEL}"}
    side = json.loads(sidecar_path(engine).read_text())
    assert check_model(tmp_path / "repo" / ONNX_MODEL) == []
    assert check_model(tmp_path / "repo" / TRT_MODEL, side) == []
    onnx_cfg = text_format.Parse((tmp_path / "repo" / ONNX_MODEL / "config.pbtxt").read_text(), mc.ModelConfig())
    trt_cfg = text_format.Parse((tmp_path / "repo" / TRT_MODEL / "config.pbtxt").read_text(), mc.ModelConfig())
    assert onnx_cfg.max_batch_size == trt_cfg.max_batch_size == 16  # the engine profile's maximum
    assert trt_cfg.dynamic_batching.max_queue_delay_microseconds == ServeConfig.max_queue_delay_us
    description = json.loads(onnx_cfg.parameters["layover_edge"].string_value)
    assert description == {k: get_metadata(onnx.load(str(tiny)))[k] for k in description}
    assert (tmp_path / "repo" / TRT_MODEL / "1" / "model.plan").read_bytes() == engine.read_bytes()


def test_without_an_engine_the_onnx_model_batches_as_the_server_does(tiny, tmp_path):
    write_repository(tiny, tmp_path / "repo")
    cfg = text_format.Parse((tmp_path / "repo" / ONNX_MODEL / "config.pbtxt").read_text(), mc.ModelConfig())
    assert cfg.max_batch_size == ServeConfig.max_batch and check_model(tmp_path / "repo" / ONNX_MODEL) == []
    write_repository(tiny, tmp_path / "repo", max_batch=32)  # replaces the model folder whole
    cfg = text_format.Parse((tmp_path / "repo" / ONNX_MODEL / "config.pbtxt").read_text(), mc.ModelConfig())
    assert cfg.max_batch_size == 32 and sorted(p.name for p in (tmp_path / "repo").iterdir()) == [ONNX_MODEL]


def test_static_batch_graph_and_fixed_batch_engine_are_not_batched(tmp_path):
    static = tiny_onnx(tmp_path / "static.onnx", batch=4)
    engine = fake_engine(tmp_path, batch=(4, 4, 4))
    write_repository(static, tmp_path / "repo", engine)
    for name in (ONNX_MODEL, TRT_MODEL):
        cfg = text_format.Parse((tmp_path / "repo" / name / "config.pbtxt").read_text(), mc.ModelConfig())
        assert cfg.max_batch_size == 0 and list(cfg.input[0].dims) == [4, 3, 8, 8]
    assert check_model(tmp_path / "repo" / ONNX_MODEL) == []
    assert check_model(tmp_path / "repo" / TRT_MODEL, json.loads(sidecar_path(engine).read_text())) == []


def test_a_dla_engine_is_served_on_its_dla_core(tiny, tmp_path):
    """Triton sets the runtime's DLA core only from a KIND_NVDLA secondary device of the instance group
    (tensorrt_backend src/tensorrt_model_instance.cc, src/loader.cc); without one the engine built for
    core 1 would be deserialised with none set."""
    static = tiny_onnx(tmp_path / "static.onnx", batch=4)
    write_repository(static, tmp_path / "repo", fake_engine(tmp_path, batch=(4, 4, 4), dla_core=1))
    cfg = text_format.Parse((tmp_path / "repo" / TRT_MODEL / "config.pbtxt").read_text(), mc.ModelConfig())
    [group] = cfg.instance_group
    assert group.kind == mc.ModelInstanceGroup.KIND_GPU and group.count == 1
    assert [(d.kind, d.device_id) for d in group.secondary_devices] == [
        (mc.ModelInstanceGroup.SecondaryDevice.KIND_NVDLA, 1)]
    write_repository(static, tmp_path / "gpu", fake_engine(tmp_path, batch=(4, 4, 4)))
    gpu = text_format.Parse((tmp_path / "gpu" / TRT_MODEL / "config.pbtxt").read_text(), mc.ModelConfig())
    assert not gpu.instance_group  # a GPU engine: Triton's default instances


def test_an_engine_with_plugin_layers_points_triton_at_the_self_registering_library(tiny, tmp_path, caplog):
    """Triton's `plugins` option and LD_PRELOAD only dlopen a library; liblayover_plugins.so registers its
    creator only through getCreators (IPluginRegistry::loadLibrary), so Triton needs its twin."""
    built_with = tmp_path / "build" / "liblayover_plugins.so"
    with caplog.at_level("WARNING"):
        write_repository(tiny, tmp_path / "repo", fake_engine(tmp_path, plugins=[str(built_with)]))
    message = caplog.records[-1].getMessage()
    twin = str(tmp_path / "build" / "liblayover_plugins_static.so")
    assert f'--backend-config=tensorrt,plugins="{twin}"' in message and f"LD_PRELOAD={twin}" in message


@pytest.mark.parametrize("edit", [
    lambda t: t.replace("max_batch_size", "max_batch"),                        # unknown field
    lambda t: t.replace("TYPE_FP32", "FP32", 1),                               # bad enum
    lambda t: t.replace('name: "image"', 'name: "images"'),                    # not the graph's input
    lambda t: t.replace("dims: [ 3, 8, 8 ]", "dims: [ 3, 8 ]"),                # wrong dims
    lambda t: t.replace('name: "tagger_onnx"', 'name: "tagger"'),              # not the folder
    lambda t: t.replace("dynamic_batching { max_queue_delay_microseconds: 0 }", ""),
])
def test_the_checker_catches_a_broken_config(tiny, tmp_path, edit):
    write_repository(tiny, tmp_path / "repo")
    config = tmp_path / "repo" / ONNX_MODEL / "config.pbtxt"
    broken = edit(config.read_text())
    assert broken != config.read_text()
    config.write_text(broken)
    assert check_model(tmp_path / "repo" / ONNX_MODEL)


def test_repository_writer_refuses_what_triton_cannot_serve(tmp_path):
    plugin = tiny_onnx(tmp_path / "plugin.onnx", plugin=True)
    with pytest.raises(LayoverError, match="plugin node"):
        write_repository(plugin, tmp_path / "repo")
    portable = tiny_onnx(tmp_path / "model.onnx")
    for sidecar, message in (({"batch": (2, 4, 8)}, "--min-batch 1"), ({"labels": ("x", "y")}, "another model"),
                             ({"image_size": 16}, "another model")):
        with pytest.raises(LayoverError, match=message):
            write_repository(portable, tmp_path / "repo", fake_engine(tmp_path, **sidecar))
    engine = fake_engine(tmp_path)
    engine.write_bytes(b"another engine")
    with pytest.raises(LayoverError, match="sha256"):
        write_repository(portable, tmp_path / "repo", engine)
    assert not (tmp_path / "repo").exists()  # nothing half-written


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    cfg = ModelConfig(backbone="test_convnext", num_classes=3, method="rm", weights="none", image_size=32,
                      labels=["cat", "dog", "car"])
    torch.manual_seed(0)
    return save_checkpoint(build_model(cfg), cfg, tmp_path_factory.mktemp("ckpt") / "rm")


def test_export_cli_writes_the_repository(checkpoint, tmp_path, capsys):
    repo = tmp_path / "repo"
    assert main(["export", str(checkpoint), "--out", str(tmp_path / "deploy"), "--form", "portable",
                 "--triton-repo", str(repo), "--quiet", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["files"]
    assert rows[f"triton {ONNX_MODEL}"]["file"] == str(repo / ONNX_MODEL)
    assert check_model(repo / ONNX_MODEL) == []
    assert (repo / ONNX_MODEL / "labels.txt").read_text().splitlines() == ["cat", "dog", "car"]
    assert (repo / ONNX_MODEL / "1" / "model.onnx").read_bytes() == (tmp_path / "deploy" / "model.onnx").read_bytes()
    # the graph Triton gets computes what the exported file computes
    import onnxruntime as ort
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32), dtype=np.float32)
    run = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(["probabilities"], {"image": x})[0]
           for p in (repo / ONNX_MODEL / "1" / "model.onnx", tmp_path / "deploy" / "model.onnx")]
    assert np.array_equal(*run)


@pytest.mark.parametrize("args,message", [
    (["--triton-engine", "x.engine"], "give --triton-repo DIR too"),
    (["--triton-repo", "{tmp}/repo", "--form", "plugin"], "keep 'portable' in --form"),
])
def test_export_cli_refuses_a_repository_it_cannot_write(checkpoint, tmp_path, capsys, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(["export", str(checkpoint), "--out", str(tmp_path / "deploy"), *args, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_the_bundled_tritonserver_accepts_the_configs(tiny, tmp_path):
    """tritonserver reads each config.pbtxt and resolves its platform before it looks for the backend
    library; a config it cannot read fails earlier, with "failed to read text proto"."""
    pytriton = pytest.importorskip("pytriton", reason="the serve extra (nvidia-pytriton) is not installed")
    from pytriton.utils.distribution import get_libs_path
    server = Path(pytriton.__file__).parent / "tritonserver"
    repo = tmp_path / "repo"
    write_repository(tiny, repo, fake_engine(tmp_path))
    broken = tmp_path / "broken"
    shutil.copytree(repo, broken)
    config = broken / ONNX_MODEL / "config.pbtxt"
    config.write_text(config.read_text().replace("max_batch_size", "max_batch"))

    def load(repository: Path) -> str:
        result = subprocess.run(
            [str(server / "bin" / "tritonserver"), "--model-repository", str(repository),
             "--backend-directory", str(server / "backends"), "--allow-http=false", "--allow-grpc=false",
             "--allow-metrics=false"], capture_output=True, text=True, timeout=60,
            env={**os.environ, "LD_LIBRARY_PATH": str(get_libs_path())})
        assert result.returncode != 0  # no ONNX Runtime or TensorRT backend in the bundle
        return result.stdout + result.stderr
    log = load(repo)
    for name, backend in ((ONNX_MODEL, "onnxruntime"), (TRT_MODEL, "tensorrt")):
        assert f"failed to load '{name}' version 1: Invalid argument: unable to find backend library for backend " \
               f"'{backend}'" in log
    assert "failed to read text proto" not in log
    assert f"failed to read text proto from {config}" in load(broken)
