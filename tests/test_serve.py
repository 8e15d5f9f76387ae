"""``layover-edge serve``: real Triton servers (PyTriton's bundled tritonserver) on 127.0.0.1 with
free ports, real tritonclient requests over HTTP and gRPC, answers compared with the local
backend, the bad requests the issue lists, and a clean SIGTERM / SIGINT shutdown.

Two servers start side by side, once for the module: the exported FP32 ONNX file (with a queue
delay, so concurrent requests share a batch) and the checkpoint directory itself.
"""
import importlib.util
import io
import json
import os
import re
import signal
import socket
import struct
import threading
import time
import urllib.request
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("pytriton", reason="the serve extra (nvidia-pytriton) is not installed")
import tritonclient.grpc as grpcclient  # noqa: E402
import tritonclient.http as httpclient  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from layover_edge.apps.serve_client import ServerProcess  # noqa: E402
from layover_edge.apps.sources import read_image  # noqa: E402
from layover_edge.apps.tag import Preprocessor, select_tags  # noqa: E402
from layover_edge.cli import main  # noqa: E402
from layover_edge.core.config import ModelConfig, ServeConfig  # noqa: E402
from layover_edge.models import build_model, save_checkpoint  # noqa: E402
from layover_edge.runtime.factory import open_model  # noqa: E402

LABELS = ["cat", "dog", "car", "tree", "sky"]
SIZE = 48
DELAY_US = 50_000  # long enough that requests sent together are batched together


def descendants(pid: int) -> set[int]:
    """Live descendants of ``pid``, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def triton_temp_files() -> set[str]:
    """What Triton's core, the python backend and PyTriton's shared memory create per run and
    remove on a clean stop (only a killed server leaves them)."""
    return ({p.name for p in Path("/tmp").iterdir() if p.name.startswith(("folder", "python_env_"))}
            | {p.name for p in Path("/dev/shm").iterdir() if p.name.startswith("pytrtion")})


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from layover_edge.export.onnx import export_onnx
    root = tmp_path_factory.mktemp("serve-model")
    cfg = ModelConfig(backbone="test_convnext", num_classes=len(LABELS), method="rm", weights="none",
                      image_size=SIZE, labels=LABELS, thresholds=[0.5, 0.4, 0.6, 0.5, 0.45])
    torch.manual_seed(0)
    checkpoint = save_checkpoint(build_model(cfg), cfg, root / "rm")
    return checkpoint, export_onnx(checkpoint, root / "model.onnx", verify=False)


@pytest.fixture(scope="module")
def servers(models, tmp_path_factory):
    home = tmp_path_factory.mktemp("pytriton-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTRITON_TRITON_CONFIG_")}  # no stray settings
    env["PYTRITON_HOME"] = str(home)  # each start copies tritonserver (29 MB) into a workspace here
    before = triton_temp_files()
    checkpoint, onnx_path = models
    free = ServeConfig(http_port=0, grpc_port=0, metrics_port=0)
    onnx = ServerProcess(onnx_path, replace(free, max_queue_delay_us=DELAY_US, log_file=str(home / "onnx.log")),
                         env=env)
    torch_server = ServerProcess(checkpoint, replace(free, log_file=str(home / "torch.log")), env=env)
    started = []
    try:
        for server in (onnx, torch_server):
            server.launch()
            started.append(server)
        for server in started:
            server.wait_ready()
        trees = {id(s): descendants(s.process.pid) for s in started}
        yield {"onnx": onnx, "torch": torch_server, "home": home, "before": before, "trees": trees}
    finally:  # the last test stops them and checks; this stops them cleanly when it did not run
        for server in started:
            server.stop()  # SIGTERM; a server still up after its timeout is killed


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A JPEG, a PNG and a BMP whose file ends in zero bytes (a black top row: BMP is stored bottom-up),
    so bytes would show if anything on the way stripped trailing NULs."""
    d = tmp_path_factory.mktemp("serve-images")
    rng = np.random.default_rng(0)
    paths = []
    for i, fmt in enumerate(("JPEG", "PNG", "BMP")):
        array = rng.integers(0, 255, (40 + 7 * i, 60, 3), dtype=np.uint8)
        array[0] = 0
        path = d / f"img{i}.{fmt.lower()}"
        Image.fromarray(array).save(path, fmt)
        paths.append(path)
    assert paths[2].read_bytes().endswith(b"\0\0\0\0")
    return paths


def local(model_path, paths):
    """What `tag` computes for these files: read, preprocess, predict, select the tags."""
    backend = open_model(model_path, "cpu")
    x = Preprocessor(backend.info.preprocess)([read_image(str(p)).image for p in paths])
    probs = backend.predict(x)
    return x, probs, select_tags(probs, LABELS, backend.info.threshold_array())


def bytes_input(module, blobs):
    request = module.InferInput("image", [len(blobs), 1], "BYTES")
    request.set_data_from_numpy(np.array(blobs, dtype=object).reshape(len(blobs), 1))
    return request


def tensor_input(module, x, datatype="FP32"):
    request = module.InferInput("image", list(x.shape), datatype)
    request.set_data_from_numpy(x)
    return request


def clients(server):
    info = server.info
    return [(httpclient, httpclient.InferenceServerClient(f"127.0.0.1:{info['http']}")),
            (grpcclient, grpcclient.InferenceServerClient(f"127.0.0.1:{info['grpc']}"))]


def tags_of(result, i):
    return [(n.decode(), float(s)) for n, s in zip(result.as_numpy("labels")[i], result.as_numpy("scores")[i]) if n]


def assert_same_tags(got, want):
    assert [n for n, _ in got] == [n for n, _ in want]
    assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-5)


def test_the_server_listens_on_loopback_only(servers):
    for server in (servers["onnx"], servers["torch"]):
        assert server.info["host"] == "127.0.0.1"
        ports = {server.info[k] for k in ("http", "grpc", "metrics")}
        listening = [line for table in ("tcp", "tcp6")
                     for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]]
        ours = [line.split() for line in listening if int(line.split()[1].split(":")[1], 16) in ports
                and line.split()[3] == "0A"]  # 0A: LISTEN
        assert len(ours) == 3
        for fields in ours:  # 0100007F: 127.0.0.1; the IPv6 socket is ::ffff:127.0.0.1
            assert fields[1].split(":")[0] in ("0100007F", "0000000000000000FFFF00000100007F"), fields[1]


def test_images_over_http_and_grpc_match_the_local_backend(servers, models, images):
    _, probs, tags = local(models[1], images)
    for module, client in clients(servers["onnx"]):
        result = client.infer("tagger", [bytes_input(module, [p.read_bytes() for p in images])])
        assert np.abs(result.as_numpy("probabilities") - probs).max() <= 1e-5
        assert list(result.as_numpy("error")[:, 0]) == [b""] * len(images)
        for i, want in enumerate(tags):
            assert_same_tags(tags_of(result, i), want)
        client.close()


def test_preprocessed_tensors_match_the_local_backend(servers, models, images):
    x, probs, tags = local(models[1], images)
    for module, client in clients(servers["onnx"]):
        result = client.infer("tagger_tensor", [tensor_input(module, x)])
        assert np.abs(result.as_numpy("probabilities") - probs).max() <= 1e-5
        for i, want in enumerate(tags):
            assert_same_tags(tags_of(result, i), want)
        client.close()


def test_the_checkpoint_is_served_like_the_torch_backend(servers, models, images):
    x, probs, tags = local(models[0], images)
    with servers["torch"].client("http") as client:
        records = client.tag_bytes([p.read_bytes() for p in images])
        got = client.probabilities(x)
    assert np.abs(got - probs).max() <= 1e-5
    for record, want in zip(records, tags):
        assert_same_tags([(t["label"], t["score"]) for t in record["labels"]], [(n, round(s, 4)) for n, s in want])


def oversize_png(width: int, height: int) -> bytes:
    """A small PNG whose header claims ``width`` x ``height``: what a decompression bomb looks like."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@pytest.mark.parametrize("name,blob,message", [
    ("garbage bytes", b"\x00\x01 this is not an image", "not a decodable image"),
    ("truncated JPEG", None, "image file is truncated"),
    ("oversize image", oversize_png(9000, 9000), "9000x9000 = 81,000,000 pixels, over the limit of 64,000,000"),
    ("empty image", b"", "empty image data"),
])
def test_a_bad_image_gets_its_own_error_and_its_neighbours_their_answer(servers, models, images, name, blob, message):
    whole = images[0].read_bytes()
    blob = whole[:len(whole) // 2] if blob is None else blob  # the header survives, the scan data is cut
    _, probs, _ = local(models[1], images[:1])
    for module, client in clients(servers["onnx"]):
        result = client.infer("tagger", [bytes_input(module, [images[0].read_bytes(), blob])])
        errors = result.as_numpy("error")[:, 0]
        assert errors[0] == b"" and message in errors[1].decode(), (name, errors)
        assert np.abs(result.as_numpy("probabilities")[0] - probs[0]).max() <= 1e-5
        assert np.isnan(result.as_numpy("probabilities")[1]).all() and not tags_of(result, 1)
        client.close()


@pytest.mark.parametrize("name,model,make,message", [
    ("wrong shape", "tagger_tensor", lambda m: tensor_input(m, np.zeros((1, 3, SIZE - 8, SIZE), np.float32)),
     "unexpected shape for input 'image'"),
    ("wrong dtype", "tagger_tensor", lambda m: tensor_input(m, np.zeros((1, 3, SIZE, SIZE)), "FP64"),
     "data-type is 'FP64', but model 'tagger_tensor' expects 'FP32'"),
    ("bytes to the tensor model", "tagger_tensor", lambda m: bytes_input(m, [b"x"]), "data-type is 'BYTES'"),
    ("empty batch", "tagger", lambda m: bytes_input(m, []), "expected 1 string elements"),
    ("batch over the maximum", "tagger", lambda m: bytes_input(m, [b"x"] * 9), "batch-size must be <= 8"),
])
def test_a_malformed_request_is_refused_by_triton_and_the_server_keeps_serving(servers, images, name, model, make,
                                                                               message):
    for module, client in clients(servers["onnx"]):
        with pytest.raises(InferenceServerException, match=message):
            client.infer(model, [make(module)])
        result = client.infer("tagger", [bytes_input(module, [images[1].read_bytes()])])
        assert result.as_numpy("error")[0, 0] == b""
        client.close()


def test_a_nan_tensor_is_named(servers, models, images):
    x, probs, _ = local(models[1], images[:2])
    x[1, 0, 0, 0] = np.nan
    with servers["onnx"].client("grpc") as client:
        records = client.tag_tensor(x)
    assert "labels" in records[0] and records[1]["error"] == "the tensor holds NaN or infinity"


def metric(server, name: str, model: str) -> float:
    text = urllib.request.urlopen(server.info["metrics_url"], timeout=10).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(name + "{") and f'model="{model}"' in line)


def test_concurrent_requests_share_a_batch_and_a_bad_one_fails_alone(servers, models, images):
    """Eight clients at once, one sending garbage: Triton batches them (fewer executions than
    requests), the seven good ones get the local answer, the bad one its error."""
    server = servers["onnx"]
    _, probs, _ = local(models[1], images[:1])
    executions = metric(server, "nv_inference_exec_count", "tagger")
    requests = metric(server, "nv_inference_request_success", "tagger")
    results, barrier = [None] * 8, threading.Barrier(8)
    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{server.info['grpc']}")  # gRPC clients are thread-safe

    def send(i):
        blob = b"junk" if i == 3 else images[0].read_bytes()
        barrier.wait()
        results[i] = grpc.infer("tagger", [bytes_input(grpcclient, [blob])], client_timeout=60)
    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    grpc.close()
    assert all(r is not None for r in results)
    for i, r in enumerate(results):
        if i == 3:
            assert b"not a decodable image" in r.as_numpy("error")[0, 0]
        else:
            assert r.as_numpy("error")[0, 0] == b"" and np.abs(r.as_numpy("probabilities") - probs).max() <= 1e-5
    for _ in range(100):  # Triton refreshes its metrics every 2 s
        if metric(server, "nv_inference_request_success", "tagger") - requests == 8:
            break
        time.sleep(0.2)
    assert metric(server, "nv_inference_request_success", "tagger") - requests == 8
    assert metric(server, "nv_inference_exec_count", "tagger") - executions < 8


def test_health_readiness_metadata_and_metrics_are_tritons(servers):
    info = servers["onnx"].info
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/tagger/ready", "/v2/models/tagger_tensor/ready"):
        assert urllib.request.urlopen(f"http://127.0.0.1:{info['http']}{path}", timeout=10).status == 200
    config = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{info['http']}/v2/models/tagger/config",
                                               timeout=10).read())
    assert config["max_batch_size"] == 8 and config["dynamic_batching"]["max_queue_delay_microseconds"] == DELAY_US
    assert [o["name"] for o in config["output"]] == ["probabilities", "labels", "scores", "error"]
    assert "nv_inference_count" in urllib.request.urlopen(info["metrics_url"], timeout=10).read().decode()


def test_the_client_tags_a_folder_like_tag_does(servers, models, images, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in images:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "broken.png").write_bytes(b"not a png")
    assert main(["tag", str(folder), "--model", str(models[1]), "--jsonl", str(tmp_path / "local.jsonl"),
                 "--quiet"]) == 0
    with servers["onnx"].client("http") as client:
        summary = client.tag([str(folder)], tmp_path / "served.jsonl")
    capsys.readouterr()
    local_lines = [json.loads(line) for line in (tmp_path / "local.jsonl").read_text().splitlines()]
    served = [json.loads(line) for line in (tmp_path / "served.jsonl").read_text().splitlines()]
    assert [r["source"] for r in served] == [r["source"] for r in local_lines]
    for a, b in zip(served, local_lines):
        assert ("error" in a) == ("error" in b)
        if "labels" in a:
            assert [t["label"] for t in a["labels"]] == [t["label"] for t in b["labels"]]
            assert np.allclose([t["score"] for t in a["labels"]], [t["score"] for t in b["labels"]], atol=2e-4)
    assert summary["frames"] == 3 and [u["source"] for u in summary["unreadable"]] == [str(folder / "broken.png")]


def test_client_errors_are_one_layover_error(servers):
    from layover_edge.core.errors import LayoverError
    with servers["onnx"].client("grpc") as client, pytest.raises(LayoverError, match="unexpected shape"):
        client.probabilities(np.zeros((1, 3, 8, 8), np.float32))


def test_serve_refuses_bad_input_with_one_line(models, tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for args, message, exit_code in (
                [[str(tmp_path / "nothing.onnx")], "ONNX file not found", 3],  # not found: the README's exit 3
                [[str(models[1]), "--http-port", str(port)], f"cannot listen on 127.0.0.1:{port}", 2],
                [[str(models[1]), "--topk", "-1"], "argument --topk: must be an integer ≥ 0", 2]):
            try:
                code = main(["serve", *args])
            except SystemExit as e:  # argparse refuses an impossible value as it is parsed
                code = e.code
            assert code == exit_code
            err = capsys.readouterr().err
            lines = [line for line in err.splitlines() if "error:" in line]
            assert len(lines) == 1 and message in lines[0] and "Traceback" not in err


def test_the_readme_client_examples_run(servers, images, tmp_path, monkeypatch, capsys):
    section = (Path(__file__).parents[1] / "README.md").read_text().split("## Serve with Triton", 1)[1].split("\n## ")[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(images[0].read_bytes())
    monkeypatch.chdir(tmp_path)
    info = servers["onnx"].info
    for block in blocks:
        code = block.replace("127.0.0.1:8001", f"127.0.0.1:{info['grpc']}").replace("127.0.0.1:8000",
                                                                                f"127.0.0.1:{info['http']}")
        exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "1 []" and "(1, 5)" in out[1]
    assert json.loads((tmp_path / "tags.jsonl").read_text())["source"] == "photos/cat.jpg"


def test_the_load_benchmark_counts_right_answers(servers, models, images):
    """benchmarks/serve.py's load loop, small, on this module's server: every answer checked."""
    spec = importlib.util.spec_from_file_location("serve_bench", Path(__file__).parents[1] / "benchmarks" / "serve.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    _, probs, _ = local(models[1], images)

    def make():
        client = servers["onnx"].client("grpc")

        def call(n):
            got = client.infer("tagger", np.array([[images[n % 3].read_bytes()]], dtype=object))
            right = bool(np.abs(got["probabilities"][0] - probs[n % 3]).max() <= bench.TOLERANCE)
            return right and n != 4  # one answer called wrong on purpose: the loop must count it
        return call, client.close
    row = bench.load(make, clients=2, requests=5, deadline_s=60)
    assert (row["answered"], row["wrong"], row["failed"], row["lost"]) == (10, 1, 0, 0)
    assert row["p50 ms"] <= row["p90 ms"] <= row["p99 ms"]


def test_sigterm_and_sigint_stop_cleanly_and_leave_nothing(servers):
    """Runs last: stops both servers, one per signal, and checks every process and file is gone."""
    codes = {}
    sigint = threading.Thread(target=lambda: codes.update(torch=servers["torch"].stop(sig=signal.SIGINT)))
    sigint.start()  # both shut down side by side
    codes["onnx"] = servers["onnx"].stop(sig=signal.SIGTERM)
    sigint.join(90)
    assert codes == {"onnx": 0, "torch": 0}
    for server in (servers["onnx"], servers["torch"]):
        tree = servers["trees"][id(server)]
        assert len(tree) >= 3  # tritonserver, and a python-backend stub per model
        assert not [pid for pid in tree if Path(f"/proc/{pid}").exists()
                    and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]
    assert not list(servers["home"].glob("workspace_*"))
    assert not triton_temp_files() - servers["before"]
