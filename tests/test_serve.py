"""``layover-edge serve``: real Triton servers (PyTriton's bundled tritonserver) on 127.0.0.1 with
free ports, real tritonclient requests over HTTP and gRPC, answers compared with the local
backend, the bad requests the issue lists, and a clean SIGTERM / SIGINT shutdown.

Two servers start side by side, once for the module: the exported FP32 ONNX file (with a queue
delay, so concurrent requests share a batch) and the checkpoint directory itself.
"""
import base64
import http.client
import importlib.util
import io
import json
import os
import re
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import threading
import time
import urllib.error
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

from layover_edge.apps.serve_client import STARTUP_TIMEOUT_S, ServerProcess  # noqa: E402
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


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 now (held together while the kernel picks them)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class ReadinessWatch(threading.Thread):
    """What a load balancer sees while a server starts: ``/v2/health/ready`` over HTTP and gRPC's
    ServerReady, polled from before the process exists; each answer that differs from the last is
    kept, with whether both models answered ready at the moment HTTP first said 200."""

    def __init__(self, http_port: int, grpc_port: int):
        super().__init__(daemon=True)
        self.http, self.grpc = f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}"
        self.seen = {"http": [], "grpc": []}
        self.models_at_first_200: list[int] = []
        self.at_ready_line = "not seen"
        self.done = threading.Event()

    def http_state(self, path: str = "/v2/health/ready") -> str:
        try:
            return str(urllib.request.urlopen(f"http://{self.http}{path}", timeout=30).status)
        except urllib.error.HTTPError as e:
            return str(e.code)
        except OSError:
            return "no answer"

    def grpc_state(self, client) -> str:
        try:
            return "ready" if client.is_server_ready(client_timeout=30) else "not ready"
        except InferenceServerException:
            return "no answer"

    def run(self) -> None:
        client = None
        while not self.done.wait(0.02):
            if client is None:  # a new channel each time: one refused backs off for seconds before it retries
                client = grpcclient.InferenceServerClient(self.grpc)
            for protocol, state in (("http", self.http_state()), ("grpc", self.grpc_state(client))):
                if not self.seen[protocol] or self.seen[protocol][-1] != state:
                    self.seen[protocol].append(state)
                    if protocol == "http" and state == "200" and not self.models_at_first_200:
                        self.models_at_first_200 = [
                            int(self.http_state(f"/v2/models/{m}/ready")) for m in ("tagger", "tagger_tensor")]
            if self.seen["grpc"][-1] == "no answer":
                client.close()
                client = None
        if client is not None:
            client.close()


def process_named(root: int, name: str) -> int:
    return next(p for p in descendants(root) if Path(f"/proc/{p}/comm").read_text().strip() == name)


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM) in MiB."""
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


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
    # the checkpoint's server: ports known before it starts (watched from then on), the default log file
    http, grpc, metrics = free_ports(3)
    torch_server = ServerProcess(checkpoint, ServeConfig(http_port=http, grpc_port=grpc, metrics_port=metrics), env=env)
    watch = ReadinessWatch(http, grpc)
    watch.start()
    started = []
    try:
        for server in (onnx, torch_server):
            server.launch()
            started.append(server)

        def at_ready_line() -> None:  # what a client told "ready" finds at once
            if torch_server.ready.wait(STARTUP_TIMEOUT_S):
                watch.at_ready_line = watch.http_state()
        threading.Thread(target=at_ready_line, daemon=True).start()
        for server in started:
            server.wait_ready()
        time.sleep(1)  # readiness must hold after the ready line too
        watch.done.set()
        watch.join(30)
        trees = {id(s): descendants(s.process.pid) for s in started}
        yield {"onnx": onnx, "torch": torch_server, "home": home, "before": before, "trees": trees, "watch": watch}
    finally:  # the last test stops them and checks; this stops them cleanly when it did not run
        watch.done.set()
        for server in started:
            server.stop()  # SIGTERM; a server still up after its timeout is killed
        if torch_server.info.get("log_file"):
            Path(torch_server.info["log_file"]).unlink(missing_ok=True)


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


def raw_http(server, method: str, path: str, body: bytes = b"", headers: dict | None = None,
             declared_length: int | None = None) -> tuple[int, str]:
    """One request as bytes on the wire (no client library in between): status and Triton's error text
    (or the whole body). ``declared_length``: a Content-Length that is not the body's."""
    conn = http.client.HTTPConnection("127.0.0.1", server.info["http"], timeout=60)
    conn.putrequest(method, path)
    for key, value in {"Content-Length": str(len(body) if declared_length is None else declared_length),
                       **(headers or {})}.items():
        conn.putheader(key, value)
    conn.endheaders(body)
    answer = conn.getresponse()
    data = answer.read().decode()
    conn.close()
    try:
        return answer.status, json.loads(data).get("error", data)
    except (ValueError, AttributeError):
        return answer.status, data


def infer_json(shape, data, name="image", datatype="FP32") -> bytes:
    return json.dumps({"inputs": [{"name": name, "datatype": datatype, "shape": shape, "data": data}]}).encode()


def binary_infer(shape) -> tuple[bytes, dict]:
    """Triton's binary tensor extension: a JSON header declaring ``shape``, then 4 bytes of data."""
    header = json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": shape,
                                     "parameters": {"binary_data_size": 4}}]}).encode()
    return header + bytes(4), {"Inference-Header-Content-Length": str(len(header))}


def gzip_bomb(mib: int, wbits: int) -> bytes:
    """``mib`` MiB of zeros compressed (gzip: wbits 31, deflate: 15), made a MiB at a time."""
    packer, chunk = zlib.compressobj(9, zlib.DEFLATED, wbits), bytes(1 << 20)
    return b"".join([packer.compress(chunk) for _ in range(mib)] + [packer.flush()])


def assert_still_serving(server, images, peak_before: float) -> None:
    """tritonserver is the same process, grew by less than 64 MiB at its peak, and answers."""
    triton = process_named(server.process.pid, "tritonserver")
    assert peak_rss_mb(triton) - peak_before < 64, (peak_before, peak_rss_mb(triton))
    with server.client("http") as client:
        assert client.tag_bytes([images[1].read_bytes()])[0].get("labels") is not None


HOSTILE = [  # (case, model, body and extra headers, HTTP status, what the error says)
    ("a million images declared in JSON", "tagger_tensor",
     (infer_json([1_000_000, 3, SIZE, SIZE], [0.0]), {}), 400, "batch-size must be <= 8"),
    ("one 100000x100000 image declared in JSON", "tagger_tensor",
     (infer_json([1, 3, 100_000, 100_000], [0.0]), {}), 400, "unexpected shape for input 'image'"),
    ("the huge shape behind a duplicate key", "tagger_tensor",
     (b'{"inputs":[{"name":"image","datatype":"FP32","shape":[1000000,3,48,48],"shape":[1,3,48,48],'
      b'"data":[0.0]}]}', {}), 400, "a key appears twice"),
    ("a huge shape for an input the model lacks", "tagger_tensor",
     (infer_json([1_000_000, 3, SIZE, SIZE], [0.0], name="other"), {}), 400, "unexpected inference input 'other'"),
    ("a million images declared in a binary request", "tagger_tensor",
     binary_infer([1_000_000, 3, SIZE, SIZE]), 400, "batch-size must be <= 8"),
    ("a million strings declared for the image model", "tagger",
     (infer_json([1_000_000, 1], ["x"], datatype="BYTES"), {}), 400, "batch-size must be <= 8"),
    ("a huge shape for a model that does not exist", "nothing",
     (infer_json([1_000_000, 3, SIZE, SIZE], [0.0]), {}), 400, "unknown model"),
]


@pytest.mark.parametrize("name,model,request_,status,message", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_declared_shape_is_bounded_before_triton_allocates_it(servers, images, name, model, request_, status,
                                                                message):
    """tritonserver 2.51 allocates a JSON input's declared size before checking it (a million 48 px
    images: 27.6 GB, std::bad_alloc, the server gone); the answer is a 400 and the server stays."""
    server = servers["onnx"]
    peak = peak_rss_mb(process_named(server.process.pid, "tritonserver"))
    body, headers = request_
    got = raw_http(server, "POST", f"/v2/models/{model}/infer", body, headers)
    assert got[0] == status and message in got[1], got
    assert_still_serving(server, images, peak)


@pytest.mark.parametrize("encoding,wbits", [("gzip", 31), ("deflate", 15)])
def test_a_compressed_body_is_refused_before_it_is_inflated(servers, images, encoding, wbits):
    """128 MiB of zeros in a 130 KB body: refused unread; tritonserver 2.51 would inflate it all."""
    server = servers["onnx"]
    peak = peak_rss_mb(process_named(server.process.pid, "tritonserver"))
    got = raw_http(server, "POST", "/v2/models/tagger_tensor/infer", gzip_bomb(128, wbits),
                   {"Content-Encoding": encoding, "Content-Type": "application/json"})
    assert got[0] == 415 and f"Content-Encoding: {encoding}" in got[1], got
    assert_still_serving(server, images, peak)


def test_a_body_over_the_limit_or_chunked_is_refused_before_it_is_read(servers, images):
    server = servers["onnx"]
    peak = peak_rss_mb(process_named(server.process.pid, "tritonserver"))
    for expect in ({}, {"Expect": "100-continue"}):  # curl asks first for a body over 1 MB
        status, error = raw_http(server, "POST", "/v2/models/tagger/infer", b"{}", expect, declared_length=1 << 40)
        assert status == 413 and "1,099,511,627,776 bytes, over the server's limit of 67,108,864" in error
    status, error = raw_http(server, "POST", "/v2/models/tagger/infer", b"2\r\n{}\r\n0\r\n\r\n",
                             {"Transfer-Encoding": "chunked"})
    assert status == 411 and "chunked" in error
    assert_still_serving(server, images, peak)


def test_the_repository_api_loads_nothing_even_with_the_token(servers, tmp_path):
    """Any local user reads PyTriton's access token from tritonserver's command line; with model
    control off it cannot load a model (which would run its Python inside the server) nor unload one."""
    server = servers["onnx"]
    argv = Path(f"/proc/{process_named(server.process.pid, 'tritonserver')}/cmdline").read_bytes().split(b"\0")
    assert argv[argv.index(b"--model-control-mode") + 1] == b"none"
    key, token = argv[argv.index(b"--http-restricted-api") + 1].decode().split(":", 1)[1].split("=", 1)
    marker = tmp_path / "intruder-ran"
    model_py = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n" \
               "class TritonPythonModel:\n    def execute(self, requests):\n        return []\n"
    config = json.dumps({"backend": "python", "max_batch_size": 0,
                         "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [1]}],
                         "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [1]}]})
    body = json.dumps({"parameters": {"config": config,
                                      "file:1/model.py": base64.b64encode(model_py.encode()).decode()}}).encode()
    for path in ("/v2/repository/models/intruder/load", "/v2/repository/models/tagger/unload"):
        status, error = raw_http(server, "POST", path, body if path.endswith("load") else b"", {key: token})
        assert status != 200 and "explicit model load / unload is not allowed" in error, (path, status, error)
    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{server.info['grpc']}")
    grpc_token = {f"triton-grpc-protocol-{key}": token}  # how Triton's gRPC endpoint reads the same restriction
    with pytest.raises(InferenceServerException, match="explicit model load / unload is not allowed"):
        grpc.load_model("intruder", headers=grpc_token, config=config, files={"file:1/model.py": model_py.encode()})
    index = grpc.get_model_repository_index(headers=grpc_token, as_json=True)["models"]
    grpc.close()
    assert sorted((m["name"], m["state"]) for m in index) == [("tagger", "READY"), ("tagger_tensor", "READY")]
    assert not marker.exists()


def test_readiness_turns_200_once_every_model_is_ready_and_never_flaps(servers):
    """Polled every 20 ms from before the checkpoint's server existed until a second after its ready
    line: no answer, then ready, and nothing else; both models ready the moment HTTP says 200."""
    watch = servers["watch"]
    assert watch.seen["http"] == ["no answer", "200"], watch.seen
    assert watch.seen["grpc"] == ["no answer", "ready"], watch.seen
    assert watch.models_at_first_200 == [200, 200]
    assert watch.at_ready_line == "200"


def test_the_default_log_file_is_new_and_private(servers):
    """Not a name known in advance in the shared temporary folder (where another user could plant a
    symlink): created exclusively, mode 0600, and tritonserver writes its log there."""
    info = servers["torch"].info
    log = Path(info["log_file"])
    assert log.parent == Path(tempfile.gettempdir())
    assert re.fullmatch(rf"layover-edge-serve-{info['pid']}-\w+\.log", log.name), log.name
    mode = os.lstat(log).st_mode
    assert stat.S_ISREG(mode) and stat.S_IMODE(mode) == 0o600
    assert "successfully loaded 'tagger_tensor'" in log.read_text()


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
                [[str(models[1]), "--topk", "-1"], "argument --topk: must be an integer ≥ 0", 2],
                [[str(models[1]), "--http-port", "65536"],
                 "argument --http-port: must be an integer ≥ 0 and ≤ 65535, got 65536", 2],
                [[str(models[1]), "--http-port", str(port), "--grpc-port", str(port)],
                 f"--http-port and --grpc-port are both {port}", 2],
                [[str(models[1]), "--host", "::1"], "cannot listen for gRPC on an IPv6 address", 2]):
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


def test_a_server_whose_tritonserver_dies_exits_5_with_one_line(models, tmp_path_factory):
    """The exit-code table's 5: not bad input, a server a supervisor may restart. (Triton's python
    backend leaves its python_env_* folder in /tmp when tritonserver is killed; nothing removes it.)"""
    home = tmp_path_factory.mktemp("home")  # short: PyTriton's unix sockets live here (108 bytes at most)
    server = ServerProcess(models[1], ServeConfig(http_port=0, grpc_port=0, metrics_port=0,
                                                  log_file=str(home / "triton.log")),
                           env=os.environ | {"PYTRITON_HOME": str(home)}, stderr=subprocess.PIPE)
    try:
        server.start()
        os.kill(process_named(server.process.pid, "tritonserver"), signal.SIGKILL)
        code = server.process.wait(120)
        err = server.process.stderr.read()
    finally:
        server.stop()
    lines = [line for line in err.splitlines() if "error:" in line]
    assert code == 5 and len(lines) == 1 and "tritonserver or a model stopped unexpectedly" in lines[0], err
    assert str(home / "triton.log") in lines[0] and "Traceback" not in err, err
    assert "Triton Inference Server exited with failure" in (home / "triton.log").read_text()  # PyTriton's, kept
