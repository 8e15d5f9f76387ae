"""The HTTP port of ``serve``: a front that bounds each request before tritonserver reads it.

PyTriton 0.7 bundles tritonserver 2.51, whose HTTP endpoint allocates a JSON input at the size its
declared shape gives before anything compares that shape with the model (server
src/http_server.cc, v2.51.0, ``serialized.resize(byte_size)`` in EVRequestToTritonRequest: one
request declaring a million images is a ``std::bad_alloc`` that ends the process), and inflates a
gzip or deflate body with no limit (``DecompressBuffer``). ``--http-max-input-size`` bounds the
first from 2.59.0 and the second from 2.65.0 (data_compressor.h, ``max_decompressed_size``), and
no model-config setting is read before that allocation. gRPC checks declared sizes itself and is
served by Triton directly.

So tritonserver's HTTP endpoint listens on a private loopback port, and this front, a child
process of ``serve`` on the public one, refuses a compressed or chunked body, a body over
``--max-request-mb`` (before reading it), and an inference request whose JSON header declares an
input the model does not have, a batch over ``--max-batch`` or more elements than a full batch of
the model's images holds, in Triton's words where Triton has them; everything else (a small wrong
shape or dtype included, which Triton checks itself) goes to Triton byte for byte and Triton's
answer comes back unchanged. It listens only once every model is ready, so ``/v2/health/ready``
on this port never answers 200 early. A local user can still reach the private port; the front
guards the address clients are given.
"""
from __future__ import annotations

import http.client
import json
import math
import re
import signal
import socket
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from layover_edge.core.errors import LayoverError

# Triton 2.51's own route for a model's endpoints (http_server.cc, model_regex_), matched on the
# raw path as evhtp hands it over; the kinds that read input tensors.
MODEL_ROUTE = re.compile(r"/v2/models/([^/]+)(?:/versions/([0-9]+))?(?:/(infer|generate|generate_stream))")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade", "host", "content-length", "expect"}
IDLE_TIMEOUT_S = 60.0       # a client connection that sends nothing for this long is closed
UPSTREAM_TIMEOUT_S = 300.0  # one inference through tritonserver, queueing included
BACKLOG = 128               # connections the kernel accepts ahead of the front (socketserver's default is 5)


class Refused(Exception):
    """A request the front answers itself: HTTP status and Triton's error text."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object whose keys are distinct: Triton's parser reads the first of two equal keys and
    Python's the last, so a second ``shape`` could otherwise hide what Triton allocates."""
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"a key appears twice in one object ({sorted(k for k in set(keys) if keys.count(k) > 1)})")
    return dict(pairs)


class RequestBounds:
    """What one inference request may declare: per model, its inputs' dims after the batch dim."""

    def __init__(self, inputs: dict[str, dict[str, tuple[int, ...]]], max_batch: int, max_body: int):
        self.inputs, self.max_batch, self.max_body = inputs, max_batch, max_body

    def check_headers(self, headers) -> int:
        """The body length the headers announce, once they describe a body this front reads."""
        for value in headers.get_all("Content-Encoding") or []:
            if value.strip().lower() not in ("", "identity"):
                raise Refused(415, f"compressed request bodies are refused (Content-Encoding: {value.strip()}): "
                                   "send the request uncompressed")
        if headers.get_all("Transfer-Encoding"):
            raise Refused(411, "a chunked request body is refused: send it with a Content-Length")
        lengths = headers.get_all("Content-Length") or ["0"]
        if len(set(lengths)) != 1 or not lengths[0].strip().isdigit():
            raise Refused(400, f"unreadable Content-Length {', '.join(lengths)!r}")
        length = int(lengths[0])
        if length > self.max_body:
            raise Refused(413, f"the request body is {length:,} bytes, over the server's limit of "
                               f"{self.max_body:,} (--max-request-mb)")
        return length

    def check_infer(self, path: str, headers, body: bytes) -> None:
        """Refuse an inference request that would make Triton allocate more than the model takes."""
        match = MODEL_ROUTE.fullmatch(path)
        if not match:
            return
        model, _, kind = match.groups()
        if model not in self.inputs:
            raise Refused(400, f"Request for unknown model: '{model}' is not found")
        if kind != "infer":
            raise Refused(400, f"model '{model}' has no {kind} endpoint: use /v2/models/{model}/infer")
        header = body
        length = headers.get("Inference-Header-Content-Length")
        if length is not None:
            if not length.strip().isdigit() or int(length) > len(body):
                raise Refused(400, f"Inference-Header-Content-Length {length!r} does not fit the "
                                   f"{len(body):,}-byte body")
            header = body[:int(length)]
        try:
            doc = json.loads(header, object_pairs_hook=_unique_keys)
        except (ValueError, UnicodeDecodeError) as e:
            raise Refused(400, f"the request's JSON cannot be read: {e}") from None
        inputs = doc.get("inputs") if isinstance(doc, dict) else None
        if not isinstance(inputs, list):
            raise Refused(400, "the request's JSON has no 'inputs' list")
        for item in inputs:
            name = item.get("name") if isinstance(item, dict) else None
            dims = self.inputs[model].get(name) if isinstance(name, str) else None
            if dims is None:
                raise Refused(400, f"unexpected inference input {name!r} for model '{model}'; it takes "
                                   f"{', '.join(repr(n) for n in self.inputs[model])}")
            shape = item.get("shape")
            if not (isinstance(shape, list) and shape
                    and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
                raise Refused(400, f"unable to parse 'shape' of input '{name}': {shape!r}")
            if shape[0] > self.max_batch:
                raise Refused(400, f"inference request batch-size must be <= {self.max_batch} for '{model}'")
            if math.prod(shape) > self.max_batch * math.prod(dims):  # a smaller wrong shape gets Triton's own error
                want = ",".join(map(str, (-1, *dims)))
                raise Refused(400, f"unexpected shape for input '{name}' for model '{model}'. Expected [{want}], "
                                   f"got [{','.join(map(str, shape))}]")


class HttpFront:
    """The public HTTP port: bound when made (so a port in use is an error before Triton starts),
    served from ``start`` (once every model is ready) by a child process, which listens on that
    socket and forwards to Triton's own HTTP port. A process of its own, so the front and the
    model's Python threads do not share one interpreter lock."""

    def __init__(self, host: str, port: int, bounds: RequestBounds):
        self.bounds = bounds
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # ServeConfig allows IPv4 hosts only
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT is no conflict
        try:
            self.socket.bind((host, port))
        except OSError as e:
            self.socket.close()
            raise LayoverError(f"cannot listen on {host}:{port} for http: {e.strerror} "
                               "(--http-port 0 picks a free port)") from None
        self.port = self.socket.getsockname()[1]
        self.process: subprocess.Popen | None = None

    def start(self, upstream_port: int, log_file: Path) -> None:
        """Serve from now on; the child's own errors, if any, go to ``log_file``."""
        # listening from now on: a connection made before the child accepts waits in the backlog
        self.socket.listen(BACKLOG)
        spec = {"fd": self.socket.fileno(), "upstream": upstream_port,
                "inputs": self.bounds.inputs, "max_batch": self.bounds.max_batch, "max_body": self.bounds.max_body}
        with open(log_file, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", __name__, json.dumps(spec)], pass_fds=[spec["fd"]],
                                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                                            start_new_session=True, preexec_fn=die_with_parent)

    def is_alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.socket.close()


def run_front(spec: dict) -> None:
    """The child's work: listen on the inherited socket and forward until SIGTERM."""
    bounds = RequestBounds({m: {n: tuple(d) for n, d in inputs.items()} for m, inputs in spec["inputs"].items()},
                           spec["max_batch"], spec["max_body"])
    server = ThreadingHTTPServer(("", 0), _handler(bounds, ("127.0.0.1", spec["upstream"])), bind_and_activate=False)
    server.daemon_threads = True
    server.socket.close()
    server.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, fileno=spec["fd"])  # listening already
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.serve_forever()


def die_with_parent() -> None:
    """In a child, before exec: the kernel sends it SIGTERM when the thread that started it ends."""
    if sys.platform.startswith("linux"):
        import ctypes
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _handler(bounds: RequestBounds, upstream: tuple[str, int]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as tritonclient's HTTP client expects
        timeout = IDLE_TIMEOUT_S
        upstream: http.client.HTTPConnection | None = None

        def setup(self) -> None:
            super().setup()
            # headers and body leave in two writes: with Nagle's algorithm the second waits for the
            # client's delayed ACK of the first, 40 ms a request
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def handle_one_request(self) -> None:
            super().handle_one_request()
            if self.close_connection and self.upstream is not None:
                self.upstream.close()

        def handle_expect_100(self) -> bool:
            """A body refused from its headers is refused before the client is told to send it."""
            try:
                bounds.check_headers(self.headers)
            except Refused as e:
                self.reply_error(e, close=True)
                return False
            return super().handle_expect_100()

        def log_message(self, *_) -> None:  # tritonserver's log has the requests; stderr stays quiet
            pass

        def serve(self) -> None:
            try:
                length = bounds.check_headers(self.headers)
            except Refused as e:
                return self.reply_error(e, close=True)  # the body, unread, cannot stay on the connection
            body = self.rfile.read(length)
            if len(body) < length:
                self.close_connection = True
                return
            if not self.path.startswith("/"):
                return self.reply_error(Refused(400, f"request target {self.path[:80]!r} is not a path"))
            try:
                if self.command == "POST":
                    bounds.check_infer(re.split(r"[?#]", self.path, maxsplit=1)[0], self.headers, body)
            except Refused as e:
                return self.reply_error(e)
            self.forward(body)

        do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_OPTIONS = do_PATCH = serve

        def forward(self, body: bytes) -> None:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            for attempt in (0, 1):  # a kept-alive upstream connection Triton closed is reopened once
                try:
                    if self.upstream is None:
                        self.upstream = http.client.HTTPConnection(*upstream, timeout=UPSTREAM_TIMEOUT_S)
                        self.upstream.connect()
                        self.upstream.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self.upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = self.upstream.getresponse()
                    data = answer.read()
                    break
                except (OSError, http.client.HTTPException) as e:
                    self.upstream.close()
                    self.upstream = None
                    if attempt or isinstance(e, TimeoutError):
                        return self.reply_error(Refused(502, f"tritonserver did not answer: {e}"))
            self.send_response(answer.status, answer.reason)
            for key, value in answer.getheaders():
                if key.lower() not in HOP_BY_HOP:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def reply_error(self, e: Refused, close: bool = False) -> None:
            data = json.dumps({"error": str(e)}).encode()
            self.send_response(e.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(data)
    return Handler


if __name__ == "__main__":
    run_front(json.loads(sys.argv[1]))
