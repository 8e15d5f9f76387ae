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

Hardening of the bundled tritonserver (2.51): the HTTP port is ``serve_http``'s front (it bounds
what a request may declare before Triton allocates it); models are written to the repository before
tritonserver starts and loaded at its start with model control off (``--model-control-mode=none``),
so the repository API can load nothing, whoever reads PyTriton's access token from tritonserver's
command line; ``--strict-readiness`` (Triton's default, set explicitly) and loading only at start
make ``/v2/health/ready`` answer 200 once, when every model is ready, and never flap.
"""
from __future__ import annotations

import io
import logging
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
from layover_edge.core.errors import LayoverError, ServerFailed
from layover_edge.runtime.base import Backend

from .serve_http import HttpFront, RequestBounds
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
    tritonserver exits on a port in use, and PyTriton then waits two minutes before it says "timed out"."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
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


def new_log_file() -> Path:
    """A log file created for this run alone (exclusively, mode 0600, random name) in the shared
    temporary folder: a name known in advance there could be a symlink another user planted."""
    fd, name = tempfile.mkstemp(prefix=f"layover-edge-serve-{os.getpid()}-", suffix=".log")
    os.close(fd)
    return Path(name)


def serve(backend: Backend, cfg: ServeConfig | None = None, on_ready: Callable[[dict], None] | None = None,
          stop: threading.Event | None = None) -> dict:
    """Serve ``backend`` until SIGINT or SIGTERM (or ``stop`` is set), then shut Triton down cleanly.
    ``on_ready`` gets the addresses once every model is ready; they are also what it returns."""
    cfg = cfg or ServeConfig()
    triton_api, mc = import_pytriton()
    service = TaggerService(backend, cfg)
    k, s = len(service.labels), service.size
    inputs = {IMAGE_MODEL: mc.Tensor(name=INPUT, dtype=np.bytes_, shape=(1,)),
              TENSOR_MODEL: mc.Tensor(name=INPUT, dtype=np.float32, shape=(3, s, s))}
    front = HttpFront(cfg.host, cfg.http_port, RequestBounds(
        {model: {t.name: tuple(t.shape)} for model, t in inputs.items()}, cfg.max_batch, cfg.max_request_mb << 20))
    try:
        ports = {"http": front.port, **{name: claim_port(cfg.host, getattr(cfg, f"{name}_port"), name)
                                        for name in ("grpc", "metrics")}}
        triton_http = claim_port("127.0.0.1", 0, "tritonserver's own http")
        prefer_own_libpython()
        # Without a log file PyTriton prints tritonserver's log on stdout (where the ready line goes)
        # and keeps a copy of it in memory for as long as the server runs.
        log_file = Path(cfg.log_file) if cfg.log_file else new_log_file()
        with open(log_file, "a"):  # a folder that is missing or read-only is an error now, not a silent tritonserver
            pass
        config = triton_api.TritonConfig(
            http_address="127.0.0.1", http_port=triton_http, grpc_address=cfg.host, grpc_port=ports["grpc"],
            metrics_address=cfg.host, metrics_port=ports["metrics"], strict_readiness=True,
            allow_gpu_metrics=False,  # NVML probing only logs errors where there is no GPU; GPU metrics need DCGM
            exit_timeout_secs=30,  # stop() takes 4-8 s while the python stubs unload; shorter leaves /tmp files
            log_file=log_file)
        stop = stop or threading.Event()
        restore_logs = _pytriton_logs_to(log_file)
        restore = _and_then(_stop_on_signals(stop), restore_logs)
    except BaseException:
        front.close()
        raise
    try:
        # local_model_store: bind() writes each model into the repository tritonserver starts from,
        # instead of loading it through the repository API afterwards.
        triton = triton_api.Triton(config=config, triton_lifecycle_policy=triton_api.TritonLifecyclePolicy(
            launch_triton_on_startup=True, local_model_store=True))
        _model_control_off(triton)
    except Exception as e:
        restore()
        front.close()
        raise ServerFailed(f"cannot start Triton: {_first_line(e)}") from None
    batching = mc.ModelConfig(max_batch_size=cfg.max_batch,
                              batcher=mc.DynamicBatcher(max_queue_delay_microseconds=cfg.max_queue_delay_us))
    outputs = [mc.Tensor(name="probabilities", dtype=np.float32, shape=(k,)),
               mc.Tensor(name="labels", dtype=np.bytes_, shape=(-1,)),
               mc.Tensor(name="scores", dtype=np.float32, shape=(-1,)),
               mc.Tensor(name="error", dtype=np.bytes_, shape=(1,))]
    try:
        triton.bind(IMAGE_MODEL, service.infer_images, [inputs[IMAGE_MODEL]], outputs, config=batching)
        triton.bind(TENSOR_MODEL, service.infer_tensors, [inputs[TENSOR_MODEL]], outputs, config=batching)
        try:
            triton.run()
        except Exception as e:  # a port in use, a stub that cannot start: PyTriton's own exception types
            raise ServerFailed(f"Triton did not start: {_first_line(e)} (its log: {log_file})") from None
        front.start(triton_http, log_file)
        info = {"ready": True, "models": [IMAGE_MODEL, TENSOR_MODEL], "host": cfg.host, **ports,
                "triton_http": triton_http,  # tritonserver's own HTTP endpoint, behind the front, on loopback
                "metrics_url": f"http://{cfg.host}:{ports['metrics']}/metrics", "pid": os.getpid(),
                "backend": backend.metadata(), "labels": list(service.labels), "image_size": s,
                "log_file": str(log_file), "config": asdict(cfg)}
        if on_ready is not None:
            on_ready(info)
        while not stop.wait(POLL_S):
            if not triton.is_alive() or not front.is_alive():
                raise ServerFailed(f"tritonserver or a model stopped unexpectedly; see {log_file}")
    finally:
        front.close()
        triton.stop()
        restore()
    return info


def _model_control_off(triton) -> None:
    """tritonserver loads every model of its repository at start and none after
    (``--model-control-mode=none``; core model_repository_manager.cc refuses a load with "explicit
    model load / unload is not allowed"). PyTriton 0.7 has no option for it and always writes
    ``explicit`` and ``--load-model=*`` into the arguments it keeps for tritonserver (triton.py,
    ``_prepare_triton_config``), so they are changed there, before the server starts."""
    args = getattr(triton, "_triton_server_config", None)
    if args is None or args["model_control_mode"] != "explicit":
        raise LayoverError("this PyTriton does not start tritonserver as 0.7 does; serve needs nvidia-pytriton 0.7")
    args["model_control_mode"] = "none"
    args["load-model"] = None


def _pytriton_logs_to(log_file: Path) -> Callable[[], None]:
    """PyTriton's own log records (its threads log tracebacks at ERROR when tritonserver goes away)
    join tritonserver's in the log file instead of stderr, which keeps one ``error:`` line; returns
    what undoes it."""
    logger = logging.getLogger("pytriton")
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False

    def restore() -> None:
        logger.removeHandler(handler)
        handler.close()
        logger.propagate = propagate
    return restore


def _and_then(first: Callable[[], None], second: Callable[[], None]) -> Callable[[], None]:
    return lambda: (second(), first())


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
