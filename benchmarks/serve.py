"""Bounded load test of ``layover-edge serve``: C concurrent clients x N requests (one image each)
per protocol and input form, every answer checked against the same model run in this process,
and the same requests answered in process: throughput and p50/p90/p99 latency of both, so the
difference is what the server costs.

    python benchmarks/serve.py --out runs/serve-bench          # a random-weight test_convnext RM, 64 px, ONNX
    python benchmarks/serve.py --model deploy/model.onnx --out runs/serve-bench --clients 8 --requests 200

The server runs on 127.0.0.1 with free ports and stops at the end; every run stops at --deadline.
Writes OUT/serve.json and OUT/serve.md, prints the table, and exits 1 if a request was lost,
failed or answered wrongly.
"""
from __future__ import annotations

import argparse
import io
import os
import platform
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from layover_edge.apps.serve import IMAGE_MODEL, TENSOR_MODEL
from layover_edge.apps.serve_client import Client, ServerProcess
from layover_edge.apps.sources import decode_image
from layover_edge.apps.tag import Preprocessor, select_tags
from layover_edge.core.config import ServeConfig
from layover_edge.core.io import write_json, write_text
from layover_edge.core.tables import format_table
from layover_edge.runtime.factory import open_model

TOLERANCE = 1e-5  # max |Δprobability| of a right answer (FP32: batching changes only the summation order)
COLUMNS = ("form", "clients", "answered", "wrong", "failed", "lost", "req/s", "p50 ms", "p90 ms", "p99 ms",
           "mean batch")


def build_model(out: Path, image_size: int) -> Path:
    """A random-weight test_convnext RM head over the synthetic classes, exported to FP32 ONNX."""
    import torch

    from layover_edge.core.config import ModelConfig
    from layover_edge.data.synthetic import SyntheticScenes
    from layover_edge.export.onnx import export_onnx
    from layover_edge.models import build_model as build, save_checkpoint
    labels = list(SyntheticScenes("val", num_images=1).classes)
    cfg = ModelConfig(backbone="test_convnext", num_classes=len(labels), method="rm", weights="none",
                      image_size=image_size, labels=labels)
    torch.manual_seed(0)
    return export_onnx(save_checkpoint(build(cfg), cfg, out / "rm"), out / "model.onnx")


def jpegs(count: int) -> list[bytes]:
    """Synthetic scenes (the demo's images), JPEG-encoded as a camera would send them."""
    from layover_edge.data.synthetic import SyntheticScenes
    scenes = SyntheticScenes("val", num_images=count, image_size=96)
    out = []
    for i in range(count):
        buffer = io.BytesIO()
        scenes[i][0].save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def percentiles(latencies: list[float]) -> dict:
    ms = np.asarray(latencies) * 1e3
    return {f"p{q} ms": round(float(np.percentile(ms, q)), 2) if len(ms) else None for q in (50, 90, 99)}


def load(make_call, clients: int, requests: int, deadline_s: float) -> dict:
    """``clients`` threads, each making its own call with ``make_call()`` (an HTTP client must live
    in its thread) and sending ``requests`` requests, stopping at the deadline. A call returns
    whether the answer was right; an exception counts as failed; a request never sent as lost."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    wrong, failed = [0] * clients, [0] * clients
    barrier, stop_at = threading.Barrier(clients), time.monotonic() + deadline_s

    def worker(i: int) -> None:
        call, close = make_call()
        try:
            barrier.wait()
            for j in range(requests):
                if time.monotonic() > stop_at:
                    return
                t0 = time.perf_counter()
                try:
                    right = call(i * requests + j)
                except Exception:
                    failed[i] += 1
                    continue
                latencies[i].append(time.perf_counter() - t0)
                wrong[i] += not right
        finally:
            close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(deadline_s + 30)
    seconds = time.perf_counter() - t0
    answered = sum(map(len, latencies))
    return {"clients": clients, "answered": answered, "wrong": sum(wrong), "failed": sum(failed),
            "lost": clients * requests - answered - sum(failed), "seconds": round(seconds, 2),
            "req/s": round(answered / seconds, 1), **percentiles([x for lat in latencies for x in lat])}


def counters(metrics_url: str, model: str) -> tuple[float, float]:
    """(inferences, executions) of ``model`` from Triton's Prometheus metrics."""
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    total = {"nv_inference_count": 0.0, "nv_inference_exec_count": 0.0}
    for line in text.splitlines():
        name = line.split("{")[0]
        if name in total and f'model="{model}"' in line:
            total[name] += float(line.split()[-1])
    return total["nv_inference_count"], total["nv_inference_exec_count"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="checkpoint, .onnx or engine (default: build a random-weight one)")
    p.add_argument("--out", required=True, help="output folder: serve.json, serve.md (and model/ when built)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default: %(default)s)")
    p.add_argument("--requests", type=int, default=200, help="requests per client and run (default: %(default)s)")
    p.add_argument("--protocols", nargs="+", choices=("grpc", "http", "triton-http"), default=["grpc", "http"],
                   help="client protocols; triton-http: tritonserver's own HTTP endpoint behind serve's HTTP front, "
                        "which shows what the front costs (default: grpc http)")
    p.add_argument("--forms", nargs="+", choices=("image", "tensor"), default=["image", "tensor"],
                   help="image: JPEG bytes to 'tagger'; tensor: preprocessed FP32 to 'tagger_tensor' (default: both)")
    p.add_argument("--images", type=int, default=64,
                   help="distinct images the requests cycle through (default: %(default)s)")
    p.add_argument("--image-size", type=int, default=64, help="input size of the built model (default: %(default)s)")
    p.add_argument("--max-batch", type=int, default=ServeConfig.max_batch,
                   help="server max batch (default: %(default)s)")
    p.add_argument("--max-queue-delay-us", type=int, default=ServeConfig.max_queue_delay_us,
                   help="server dynamic-batching delay (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="device of the server and the in-process model (default: cpu)")
    p.add_argument("--deadline", type=float, default=120.0,
                   help="seconds after which a run stops (default: %(default)s)")
    a = p.parse_args()
    out = Path(a.out)
    model = Path(a.model) if a.model else build_model(out / "model", a.image_size)
    backend = open_model(model, a.device)
    info = backend.info
    thresholds = info.threshold_array()
    blobs = jpegs(a.images)
    x = Preprocessor(info.preprocess)([decode_image(io.BytesIO(b)) for b in blobs])
    expected = backend.predict(x)

    def right(probs: np.ndarray, labels: np.ndarray, k: int) -> bool:
        """The probabilities are the in-process ones and the labels are those probabilities' tags."""
        want = [name for name, _ in select_tags(probs[None], info.labels, thresholds)[0]]
        return bool(np.abs(probs - expected[k]).max() <= TOLERANCE) and [n.decode() for n in labels if n] == want

    rows, lock = {}, threading.Lock()  # the server serialises predict too
    preprocess = Preprocessor(info.preprocess)

    def in_process(form: str):
        def make():
            def call(n: int) -> bool:
                k = n % a.images
                image = preprocess([decode_image(io.BytesIO(blobs[k]))]) if form == "image" else x[k:k + 1]
                with lock:
                    probs = backend.predict(image)[0]
                return bool(np.abs(probs - expected[k]).max() <= TOLERANCE)
            return call, lambda: None
        return make

    for form in a.forms:
        rows[f"in process, {form}"] = {"form": form, **load(in_process(form), a.clients, a.requests, a.deadline)}

    cfg = ServeConfig(http_port=0, grpc_port=0, metrics_port=0, max_batch=a.max_batch,
                      max_queue_delay_us=a.max_queue_delay_us, log_file=str(out / "tritonserver.log"))
    started = time.perf_counter()
    with ServerProcess(model, cfg, a.device) as server:
        startup_s = round(time.perf_counter() - started, 1)
        for protocol in a.protocols:
            for form in a.forms:
                def make(protocol=protocol, form=form):
                    client = Client(f"127.0.0.1:{server.info['triton_http']}", "http") \
                        if protocol == "triton-http" else server.client(protocol)

                    def call(n: int) -> bool:
                        k = n % a.images
                        if form == "image":
                            got = client.infer(IMAGE_MODEL, np.array([[blobs[k]]], dtype=object))
                        else:
                            got = client.infer(TENSOR_MODEL, x[k:k + 1])
                        return got["error"][0, 0] == b"" and right(got["probabilities"][0], got["labels"][0], k)
                    return call, client.close
                model_name = IMAGE_MODEL if form == "image" else TENSOR_MODEL
                before = counters(server.info["metrics_url"], model_name)
                row = load(make, a.clients, a.requests, a.deadline)
                time.sleep(2.5)  # Triton refreshes its metrics every 2 s
                after = counters(server.info["metrics_url"], model_name)
                row["mean batch"] = round((after[0] - before[0]) / max(after[1] - before[1], 1), 2)
                rows[f"server {protocol}, {form}"] = {"form": form, **row}
        with Client(f"127.0.0.1:{server.info['http']}", "http") as client:
            triton_version = client.client.get_server_metadata()["version"]
    result = {"model": str(model), "backend": backend.metadata(), "labels": len(info.labels),
              "image_size": info.preprocess.image_size, "requests_per_client": a.requests, "images": a.images,
              "server": {"tritonserver": triton_version, "startup_s": startup_s, "max_batch": a.max_batch,
                         "max_queue_delay_us": a.max_queue_delay_us},
              "machine": {"cpus": os.cpu_count(), "load_average_at_end": [round(x, 1) for x in os.getloadavg()],
                          "python": platform.python_version(), "numpy": np.__version__},
              "rows": rows}
    result["markdown"] = markdown(result)
    write_json(out / "serve.json", result)
    write_text(out / "serve.md", result["markdown"])
    print(result["markdown"])
    bad = sum(r["wrong"] + r["failed"] + r["lost"] for r in rows.values())
    return 1 if bad else 0


def markdown(result: dict) -> str:
    rows, s = result["rows"], result["server"]
    lines = [f"### Serving load test: {result['backend'].get('backend')} on {result['backend'].get('device', 'cpu')}, "
             f"{result['image_size']} px, {result['labels']} classes",
             "",
             f"tritonserver {s['tritonserver']} (PyTriton), max batch {s['max_batch']}, queue delay "
             f"{s['max_queue_delay_us']} µs, ready in {s['startup_s']} s; {result['images']} distinct JPEGs, "
             f"one image per request; {result['machine']['cpus']} CPUs, load average at the end "
             f"{result['machine']['load_average_at_end']}.",
             "An answer is right when every probability is within 1e-5 of the in-process one and the labels are "
             "its tags; lost = never answered.",
             "", format_table({name: {k: f"{v:.2f}" if k.endswith("ms") and v is not None else v for k, v in r.items()}
                              for name, r in rows.items()}, COLUMNS, first="path"), ""]
    for form in ("image", "tensor"):
        local = rows.get(f"in process, {form}")
        for name, row in rows.items():
            if local and name.startswith("server") and row["form"] == form and row["p50 ms"] and local["p50 ms"]:
                lines.append(f"- {name}: p50 {row['p50 ms'] - local['p50 ms']:+.2f} ms and "
                             f"{row['req/s'] / local['req/s']:.2f}x the throughput of the same requests in process")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
