"""The tagger behind NVIDIA Triton Inference Server, through PyTriton (which bundles a real
``tritonserver``): KServe v2 HTTP and gRPC, dynamic batching, Triton's health, readiness and
Prometheus metrics endpoints.

Two models over one backend (any model form the runtime opens):

    tagger         image  BYTES (1,)       encoded JPEG/PNG/..., decoded and preprocessed as ``tag`` does
    tagger_tensor  image  FP32 (3, S, S)   already preprocessed (``info.preprocess``)

Both answer ``probabilities`` FP32 (K,), ``labels`` BYTES (-1,) and ``scores`` FP32 (-1,) (the
tags above threshold, highest first, padded with b"" / 0 to the longest in the request) and
``error`` BYTES (1,), empty unless that image was bad. Why an output and not a Triton error:
PyTriton fails every request of a dynamic batch when its callable raises, so one bad image would
fail its neighbours' requests too. Requests Triton itself can reject (wrong name, shape, dtype,
batch size) get Triton's own error.
"""
from __future__ import annotations

import io
import os
import signal
import socket
import sysconfig
import tempfile
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np

from layover_edge.core.config import ServeConfig
from layover_edge.core.errors import LayoverError
from layover_edge.runtime.base import Backend

from .sources import decode_image
from .tag import Preprocessor, select_tags

IMAGE_MODEL, TENSOR_MODEL = "tagger", "tagger_tensor"
INPUT = "image"
OUTPUTS = ("probabilities", "labels", "scores", "error")
POLL_S = 0.5  # how often the serving loop checks for a signal and for a dead tritonserver


class TaggerService:
    """The two models' infer callables: each Triton execution hands over a list of requests; every
    image is decoded or checked on its own, then all good ones go through one ``predict``."""

    def __init__(self, backend: Backend, cfg: ServeConfig):
        if cfg.topk < 0:
            raise LayoverError("--topk must be 0 (all above threshold) or positive")
        if cfg.max_batch < 1 or cfg.max_queue_delay_us < 0 or cfg.max_image_pixels < 1:
            raise LayoverError("--max-batch and --max-image-pixels must be positive, --max-queue-delay-us not negative")
        self.backend, self.cfg = backend, cfg
        self.labels = backend.info.labels
        self.thresholds = backend.info.threshold_array(cfg.threshold)
        self.preprocess = Preprocessor(backend.info.preprocess)
        self.size = backend.info.preprocess.image_size
        # The two models run in their own threads; a TensorRT context and its buffers are not shareable.
        self.lock = threading.Lock()

    def decode(self, blob: bytes) -> np.ndarray | str:
        """RGB uint8 of one encoded image, or what is wrong with it."""
        if not blob:
            return "empty image data"
        try:
            return decode_image(io.BytesIO(blob), self.cfg.max_image_pixels)
        except Exception as e:  # PIL raises many types for foreign bytes; all mean "not an image"
            first = str(e).split(" <_io.BytesIO")[0] or type(e).__name__  # PIL's message names the buffer object
            return f"not a decodable image ({len(blob):,} bytes): {first}"

    def infer_images(self, requests: list[dict]) -> list[dict]:
        def prepare(blobs: np.ndarray) -> list[np.ndarray | str]:
            decoded = [self.decode(bytes(b)) for b in blobs[:, 0]]
            good = [d for d in decoded if not isinstance(d, str)]
            x = iter(self.preprocess(good) if good else ())
            return [d if isinstance(d, str) else next(x) for d in decoded]
        return self.answer([prepare(r[INPUT]) for r in requests])

    def infer_tensors(self, requests: list[dict]) -> list[dict]:
        def prepare(x: np.ndarray) -> list[np.ndarray | str]:
            finite = np.isfinite(x).reshape(len(x), -1).all(axis=1)
            return [row if ok else "the tensor holds NaN or infinity" for row, ok in zip(x, finite)]
        return self.answer([prepare(r[INPUT]) for r in requests])

    def answer(self, requests: list[list[np.ndarray | str]]) -> list[dict]:
        """Per request, per image: a preprocessed (3, S, S) array or an error -> that request's outputs."""
        flat = [x for images in requests for x in images if not isinstance(x, str)]
        if flat:
            with self.lock:
                probs = iter(self.backend.predict(np.stack(flat)))
        return [self.outputs([x if isinstance(x, str) else next(probs) for x in images]) for images in requests]

    def outputs(self, rows: list[np.ndarray | str]) -> dict[str, np.ndarray]:
        k, n = len(self.labels), len(rows)
        probs = np.full((n, k), np.nan, np.float32)
        errors = np.array([[r.encode() if isinstance(r, str) else b""] for r in rows], dtype=object).reshape(n, 1)
        good = [i for i, r in enumerate(rows) if not isinstance(r, str)]
        for i in good:
            probs[i] = rows[i]
        tags = dict(zip(good, select_tags(probs[good], self.labels, self.thresholds, self.cfg.topk)))
        width = max([len(t) for t in tags.values()] + [1])  # a zero-width BYTES tensor trips some clients
        labels = np.full((n, width), b"", dtype=object)
        scores = np.zeros((n, width), np.float32)
        for i, t in tags.items():
            labels[i, :len(t)] = [name.encode() for name, _ in t]
            scores[i, :len(t)] = [score for _, score in t]
        return {"probabilities": probs, "labels": labels, "scores": scores, "error": errors}


def import_pytriton():
    """PyTriton's pieces, or one LayoverError saying what to install."""
    if int(np.__version__.split(".")[0]) >= 2:
        # pytriton 0.7 declares numpy<2; forced onto numpy 2 it hands the model zeros and returns
        # empty tensors without an error (triton-inference-server/pytriton#93)
        raise LayoverError(f"the server needs numpy<2 (PyTriton 0.7 returns wrong, empty results with numpy "
                           f"{np.__version__}): pip install 'layover-edge[serve]' resolves it")
    try:
        from pytriton import model_config, triton
    except ImportError:
        raise LayoverError("the server needs PyTriton: pip install 'layover-edge[serve]' (Linux x86-64 or aarch64 "
                           "with glibc >= 2.35; elsewhere, e.g. JetPack 5, serve `export --triton-repo` with "
                           "NVIDIA's Triton)") from None
    return triton, model_config


def claim_port(host: str, port: int, name: str) -> int:
    """``port`` if it is free on ``host`` (0: one the kernel hands out), checked before Triton starts:
    tritonserver exits on a port in use, and PyTriton then waits a minute before it says "timed out"."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT is no conflict
        try:
            s.bind((host, port))
        except OSError as e:
            raise LayoverError(f"cannot listen on {host}:{port} for {name}: {e.strerror} "
                               f"(--{name}-port 0 picks a free port)") from None
        return s.getsockname()[1]


def prefer_own_libpython() -> None:
    """The python-backend stub links libpython through the loader, which may find the system's copy
    of another patch release than this interpreter (Debian's 3.11.2 beside pyenv's 3.11.7): every
    model then fails to load inside multiprocessing. PyTriton passes this environment to
    tritonserver and appends its own libraries, so putting this interpreter's LIBDIR first fixes it."""
    libdir, lib = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY")
    if not (libdir and lib and Path(libdir, lib).exists()):
        return
    paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p and p != libdir]
    os.environ["LD_LIBRARY_PATH"] = ":".join([libdir, *paths])


def serve(backend: Backend, cfg: ServeConfig | None = None, on_ready: Callable[[dict], None] | None = None,
          stop: threading.Event | None = None) -> dict:
    """Serve ``backend`` until SIGINT or SIGTERM (or ``stop`` is set), then shut Triton down cleanly.
    ``on_ready`` gets the addresses once every model is ready; they are also what it returns."""
    cfg = cfg or ServeConfig()
    triton_api, mc = import_pytriton()
    service = TaggerService(backend, cfg)
    ports = {name: claim_port(cfg.host, getattr(cfg, f"{name}_port"), name) for name in ("http", "grpc", "metrics")}
    prefer_own_libpython()
    # Without a log file PyTriton prints tritonserver's log on stdout (where the ready line goes)
    # and keeps a copy of it in memory for as long as the server runs.
    log_file = Path(cfg.log_file or Path(tempfile.gettempdir()) / f"layover-edge-serve-{os.getpid()}.log")
    config = triton_api.TritonConfig(
        http_address=cfg.host, http_port=ports["http"], grpc_address=cfg.host, grpc_port=ports["grpc"],
        metrics_address=cfg.host, metrics_port=ports["metrics"],
        allow_gpu_metrics=False,  # NVML probing only logs errors where there is no GPU; Triton's GPU metrics need DCGM
        exit_timeout_secs=30,  # stop() takes 4-8 s while the python stubs unload; shorter fails and leaves /tmp files
        log_file=log_file)
    stop = stop or threading.Event()
    restore = _stop_on_signals(stop)
    try:
        triton = triton_api.Triton(config=config)
    except Exception as e:
        restore()
        raise LayoverError(f"cannot start Triton: {_first_line(e)}") from None
    batching = mc.ModelConfig(max_batch_size=cfg.max_batch,
                              batcher=mc.DynamicBatcher(max_queue_delay_microseconds=cfg.max_queue_delay_us))
    k, s = len(service.labels), service.size
    outputs = [mc.Tensor(name="probabilities", dtype=np.float32, shape=(k,)),
               mc.Tensor(name="labels", dtype=np.bytes_, shape=(-1,)),
               mc.Tensor(name="scores", dtype=np.float32, shape=(-1,)),
               mc.Tensor(name="error", dtype=np.bytes_, shape=(1,))]
    try:
        triton.bind(IMAGE_MODEL, service.infer_images, [mc.Tensor(name=INPUT, dtype=np.bytes_, shape=(1,))],
                    outputs, config=batching)
        triton.bind(TENSOR_MODEL, service.infer_tensors, [mc.Tensor(name=INPUT, dtype=np.float32, shape=(3, s, s))],
                    outputs, config=batching)
        try:
            triton.run()
        except Exception as e:  # a port in use, a stub that cannot start: PyTriton's own exception types
            raise LayoverError(f"Triton did not start: {_first_line(e)} (its log: {log_file})") from None
        info = {"ready": True, "models": [IMAGE_MODEL, TENSOR_MODEL], "host": cfg.host, **ports,
                "metrics_url": f"http://{_url_host(cfg.host)}:{ports['metrics']}/metrics", "pid": os.getpid(),
                "backend": backend.metadata(), "labels": list(service.labels), "image_size": s,
                "log_file": str(log_file), "config": asdict(cfg)}
        if on_ready is not None:
            on_ready(info)
        while not stop.wait(POLL_S):
            if not triton.is_alive():
                raise LayoverError(f"tritonserver or a model stopped unexpectedly; see {log_file}")
    finally:
        triton.stop()
        restore()
    return info


def _stop_on_signals(stop: threading.Event) -> Callable[[], None]:
    """SIGINT and SIGTERM set ``stop`` (PyTriton's own ``serve()`` handles SIGINT only); returns
    what puts the previous handlers back. Off the main thread, the caller sets ``stop`` itself."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return restore


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
