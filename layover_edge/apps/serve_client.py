"""Talking to a running ``layover-edge serve``: a client that tags images and folders over HTTP or
gRPC (tritonclient), and the server as a child process, for notebooks, benchmarks and tests.

Images travel encoded, as they are on disk (the server decodes them exactly as ``tag`` does), so
the client needs neither torch nor the model. Results are ``tag``'s JSON lines.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import fields
from pathlib import Path

import numpy as np

from layover_edge.core.config import ServeConfig
from layover_edge.core.errors import LayoverError

from .serve import IMAGE_MODEL, INPUT, OUTPUTS, TENSOR_MODEL
from .serve_http import die_with_parent
from .sources import file_paths
from .tag import JsonLines, label_records

PROTOCOLS = ("grpc", "http")
REQUEST_TIMEOUT_S = 60.0   # one request, connection included
CONNECT_TIMEOUT_S = 10.0   # connect()'s liveness probe: a server that is up answers in milliseconds
STARTUP_TIMEOUT_S = 180.0  # a start takes 10-25 s on two busy cores; PyTriton's own wait is 120 s


def _tritonclient(protocol: str):
    if protocol not in PROTOCOLS:
        raise LayoverError(f"unknown protocol {protocol!r}; choose one of {PROTOCOLS}")
    try:
        if protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
        from tritonclient.utils import InferenceServerException
    except ImportError:
        raise LayoverError(f"the client needs tritonclient: pip install 'tritonclient[{protocol}]'") from None
    return module, InferenceServerException


class Client:
    """A client of one server. ``url`` is host:port of its gRPC or HTTP endpoint. The HTTP client is
    gevent-based: use each Client from the thread that made it (one per thread)."""

    def __init__(self, url: str, protocol: str = "grpc", timeout: float = REQUEST_TIMEOUT_S):
        self.module, self.error_type = _tritonclient(protocol)
        self.url, self.protocol, self.timeout = url, protocol, timeout
        if protocol == "grpc":
            self.client = self.module.InferenceServerClient(url)
        else:
            self.client = self.module.InferenceServerClient(url, connection_timeout=timeout, network_timeout=timeout)

    def infer(self, model: str, x: np.ndarray, outputs: tuple[str, ...] = OUTPUTS) -> dict[str, np.ndarray]:
        """One request: ``x`` is (B, 1) encoded images (object array of bytes) or (B, 3, S, S) FP32."""
        datatype = "BYTES" if x.dtype == object else "FP32"
        request = self.module.InferInput(INPUT, list(x.shape), datatype)
        request.set_data_from_numpy(x)
        wanted = [self.module.InferRequestedOutput(name) for name in outputs]
        timing = {"client_timeout": self.timeout} if self.protocol == "grpc" else {}
        try:
            result = self.client.infer(model, [request], outputs=wanted, **timing)
        except self.error_type as e:
            raise LayoverError(f"the server at {self.url} refused the request: {e.message()}") from None
        except OSError as e:  # the HTTP client's own: refused, reset, timed out
            raise self.unreachable(e) from None
        return {name: result.as_numpy(name) for name in outputs}

    def unreachable(self, e: Exception) -> LayoverError:
        reason = e.message() if isinstance(e, self.error_type) else (e.strerror or str(e) or type(e).__name__)
        return LayoverError(f"no layover-edge server answers at {self.url} ({self.protocol.upper()}): {reason}")

    def check_live(self, timeout: float = CONNECT_TIMEOUT_S) -> None:
        """LayoverError unless a server at the URL says it is live within ``timeout`` seconds (a
        closed port fails at once, a host or listener that never answers after ``timeout``)."""
        probe = Client(self.url, self.protocol, min(timeout, self.timeout))
        try:
            live = probe.client.is_server_live(**({"client_timeout": probe.timeout} if self.protocol == "grpc" else {}))
        except (OSError, self.error_type) as e:
            raise self.unreachable(e) from None
        finally:
            probe.close()
        if not live:
            raise LayoverError(f"the server at {self.url} ({self.protocol.upper()}) answers but is not live")

    def tag_bytes(self, blobs: list[bytes], sources: list[str] | None = None) -> list[dict]:
        """One request for these encoded images; per image ``tag``'s record: labels, or the error."""
        out = self.infer(IMAGE_MODEL, np.array([[b] for b in blobs], dtype=object).reshape(len(blobs), 1))
        return records(out, sources or [f"image {i}" for i in range(len(blobs))])

    def tag_tensor(self, batch: np.ndarray, model: str = TENSOR_MODEL) -> list[dict]:
        """One request of preprocessed images (B, 3, S, S) FP32; records as ``tag_bytes``."""
        out = self.infer(model, np.ascontiguousarray(batch, np.float32))
        return records(out, [f"tensor {i}" for i in range(len(batch))])

    def probabilities(self, batch: np.ndarray, model: str = TENSOR_MODEL) -> np.ndarray:
        """(B, K) probabilities of preprocessed images, from ``tagger_tensor`` or a generated
        repository's ``tagger_onnx`` / ``tagger_trt``."""
        return self.infer(model, np.ascontiguousarray(batch, np.float32), ("probabilities",))["probabilities"]

    def tag(self, sources: list[str], jsonl: str | Path = "-", batch_size: int = 8) -> dict:
        """Tag image files, folders and globs: their bytes are sent as they are, ``batch_size`` per
        request; one JSON line per image to ``jsonl`` as ``layover-edge tag`` writes. Returns a summary."""
        if batch_size < 1:
            raise LayoverError("--batch-size must be at least 1")
        paths, unreadable = [], []
        for spec in sources:
            found, reason = file_paths(spec)
            paths += found
            if reason:
                unreadable.append({"source": spec, "frame": 0, "error": reason})
        summary = {"frames": 0, "tags": 0, "unreadable": [], "seconds": 0.0}
        start = time.perf_counter()
        with ExitStack() as stack:
            write = JsonLines(jsonl, stack)
            for record in unreadable:
                write(record)
            for i in range(0, len(paths), batch_size):
                blobs = {}
                for path in paths[i:i + batch_size]:
                    try:
                        blobs[path] = Path(path).read_bytes()
                    except OSError as e:
                        unreadable.append({"source": path, "frame": 0, "error": f"cannot read: {e.strerror}"})
                        write(unreadable[-1])
                for record in self.tag_bytes(list(blobs.values()), list(blobs)) if blobs else []:
                    write(record)
                    if "error" in record:
                        unreadable.append(record)
                    else:
                        summary["frames"] += 1
                        summary["tags"] += len(record["labels"])
        summary |= {"unreadable": [{"source": r["source"], "reason": r["error"]} for r in unreadable],
                    "seconds": round(time.perf_counter() - start, 3), "server": self.url, "protocol": self.protocol}
        return summary

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_) -> None:
        self.close()


def records(out: dict[str, np.ndarray], sources: list[str]) -> list[dict]:
    """The server's outputs as ``tag``'s per-image records (padding dropped)."""
    result = []
    for i, source in enumerate(sources):
        error = out["error"][i, 0].decode()
        if error:
            result.append({"source": source, "frame": 0, "error": error})
            continue
        tags = [(name.decode(), float(score)) for name, score in zip(out["labels"][i], out["scores"][i]) if name]
        result.append({"source": source, "frame": 0, "labels": label_records(tags)})
    return result


def serve_args(cfg: ServeConfig) -> list[str]:
    """``layover-edge serve`` options for ``cfg`` (every option is named after its ServeConfig field)."""
    args = []
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if value is not None:
            args += [f"--{f.name.replace('_', '-')}", str(value)]
    return args


class ServerProcess:
    """``layover-edge serve MODEL`` as a child process in its own session: ``start`` waits for its
    ready line (or says why it never came), ``stop`` sends SIGTERM and waits for the clean shutdown.
    A context manager; ``stop`` runs on leaving it. If this process dies first, the child gets
    SIGTERM from the kernel (Linux's parent-death signal, tied to the thread that started it)."""

    def __init__(self, model: str | Path, cfg: ServeConfig | None = None, device: str = "cpu",
                 startup_timeout: float = STARTUP_TIMEOUT_S, env: dict[str, str] | None = None,
                 stderr: int | None = None):
        self.cmd = [sys.executable, "-m", "layover_edge", "serve", str(model), "--json", "--device", device,
                    *serve_args(cfg or ServeConfig())]
        self.startup_timeout, self.env, self.stderr = startup_timeout, env, stderr  # stderr: as Popen takes it
        self.process: subprocess.Popen | None = None
        self.info: dict = {}

    def start(self) -> dict:
        """Launch the server and wait until it is ready; returns its addresses."""
        self.launch()
        return self.wait_ready()

    def launch(self) -> None:
        """Start the child and return at once (several servers start faster side by side)."""
        self.process = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                                        stderr=self.stderr, env=self.env, start_new_session=True,
                                        preexec_fn=die_with_parent)
        self.lines: list[str] = []
        self.ready = threading.Event()

        def read() -> None:  # a thread, so a silent, hung server cannot block past the timeout
            for line in self.process.stdout:
                self.lines.append(line.rstrip())
                if line.startswith("{"):
                    self.info = json.loads(line)
                    self.ready.set()
        threading.Thread(target=read, daemon=True).start()
        self.deadline = time.monotonic() + self.startup_timeout

    def wait_ready(self) -> dict:
        """The ready line's addresses, or a LayoverError (with the server's last output) once the
        child has exited or the start-up timeout has passed; the child is killed then."""
        while not self.ready.wait(0.2):
            code = self.process.poll()
            if code is not None or time.monotonic() > self.deadline:
                self.kill()
                why = (f"exited with code {code}" if code is not None
                       else f"was not ready after {self.startup_timeout:.0f} s")
                raise LayoverError(f"the server {why}; its output: {' | '.join(self.lines[-5:]) or '(none)'}")
        return self.info

    def client(self, protocol: str = "grpc", timeout: float = REQUEST_TIMEOUT_S) -> Client:
        return Client(f"{self.info['host']}:{self.info[protocol]}", protocol, timeout)

    def stop(self, timeout: float = STARTUP_TIMEOUT_S, sig: int = signal.SIGTERM) -> int:
        """``sig``, then wait for the exit code; the whole process group is killed if it has not exited
        by ``timeout``."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise LayoverError(f"the server did not stop within {timeout:.0f} s after signal {sig}: killed") from None

    def kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()

    def __enter__(self) -> "ServerProcess":
        self.start()
        return self

    def __exit__(self, *_) -> None:
        self.stop()
