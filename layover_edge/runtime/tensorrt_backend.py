"""TensorRT backend: a layover-edge engine (``model.engine`` + ``model.engine.json``).

Before TensorRT touches the file, the sidecar is checked: the engine's sha256, then the running
TensorRT version and GPU compute capability against the ones it was built with. Inference uses
the TensorRT 10/11 tensor-address API (``set_input_shape``, ``set_tensor_address``,
``execute_async_v3``) on device buffers sized for the profile's maximum batch, with an optional
CUDA graph per batch size (replayed after the input copy). Each graph gets an execution context of
its own, set to its batch once: a graph replays the kernels and the context state of its capture,
and neither NVIDIA's headers nor its samples say that state survives the context being set to
another shape (trtexec captures one graph "for the current execution context",
samples/common/sampleInference.cpp release/10.3 l.956-977). ``device_timer`` replays it on a batch
left on the device, timed with CUDA events (what ``bench`` reports as compute).

The batches the engine takes come from the engine itself (its input shape, or its profile's
min/max), so ``Backend.run`` pads a batch below the minimum (a static batch-4 DLA engine tagging a
camera one frame at a time) and splits one above the maximum. Those calls report failure by their
return value, not by raising (bool, pyCore.cpp at release/10.3), so each is checked. A DLA engine
needs ``Runtime.DLA_core`` set before deserialising, as trtexec does (sampleEngines.cpp:117-119).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from layover_edge.artifacts.model_info import ModelInfo
from layover_edge.artifacts.sidecar import check_compatible, read_sidecar
from layover_edge.core.errors import LayoverError, NotFound
from layover_edge.core.io import sha256
from layover_edge.core.tensorrt import library_identity, load_plugins

from .base import Backend


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, path: str | Path, device: int = 0, plugins: list[str] | None = None,
                 cuda_graph: bool = False):
        self.path = Path(path)
        if not self.path.is_file():
            raise NotFound(f"engine not found: {self.path}")
        self.sidecar = read_sidecar(self.path)
        if sha256(self.path) != self.sidecar["engine_sha256"]:
            raise LayoverError(f"{self.path} is not the engine its sidecar describes (sha256 differs): rebuild it")
        try:
            import tensorrt as trt
        except ImportError:
            raise LayoverError("TensorRT is not installed: the engine cannot run here "
                               "(use the .onnx file with ONNX Runtime instead)") from None
        from layover_edge.core.cuda import CudaDevice
        self.cuda = CudaDevice(device)
        check_compatible(self.sidecar, trt.__version__, self.cuda.compute_capability, self.cuda.name,
                         library_identity())
        logger = trt.Logger(trt.Logger.WARNING)
        load_plugins(trt, logger, plugins if plugins is not None else self.sidecar["plugins"])
        runtime = trt.Runtime(logger)
        if self.sidecar.get("dla_core") is not None:
            runtime.DLA_core = int(self.sidecar["dla_core"])
        self.engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise LayoverError(f"TensorRT could not deserialize {self.path} (see its messages above); it was built "
                               f"with TensorRT {self.sidecar['tensorrt']} (libnvinfer "
                               f"{(self.sidecar.get('tensorrt_library') or {}).get('version', 'unrecorded')}), this "
                               f"is {trt.__version__}: a plan runs only on the TensorRT build that made it, so "
                               f"rebuild it here (layover-edge build)")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise LayoverError(f"TensorRT could not create an execution context for {self.path} (out of memory?)")
        self.input = self.sidecar["input"]
        self.outputs = list(self.sidecar["outputs"])
        self.batch_range = self._batch_range()
        self.max_batch = self.batch_range[1]
        s = int(self.sidecar["image_size"])
        k = len(self.sidecar["labels"])
        self.buffers = {self.input: self.cuda.malloc(self.max_batch * 3 * s * s * 4)}
        for name in self.outputs:
            if self.engine.get_tensor_dtype(name) != trt.float32:
                raise LayoverError(f"engine output {name} is not float32")
            self.buffers[name] = self.cuda.malloc(self.max_batch * k * 4)
        self._bind(self.context)
        self.num_classes = k
        self.use_graph = cuda_graph
        self.graphs: dict[int, tuple[Any, Any]] = {}  # batch -> (its execution context, its CUDA graph)
        super().__init__(ModelInfo.from_metadata(self.sidecar))

    def _batch_range(self) -> tuple[int, int]:
        """(min, max) batch of the engine: its fixed batch, else profile 0's; the sidecar must agree."""
        fixed = self.engine.get_tensor_shape(self.input)[0]
        low, high = (fixed, fixed) if fixed > 0 else (
            dims[0] for dims in self.engine.get_tensor_profile_shape(self.input, 0)[::2])
        if [low, high] != [int(self.sidecar["batch"][0]), int(self.sidecar["batch"][2])]:
            raise LayoverError(f"{self.path} takes batches {low}-{high}, its sidecar says "
                               f"{self.sidecar['batch'][0]}-{self.sidecar['batch'][2]}: rebuild it")
        return int(low), int(high)

    def _bind(self, context) -> None:
        for name, ptr in self.buffers.items():
            if not context.set_tensor_address(name, ptr):
                raise LayoverError(f"the engine has no tensor {name!r}: its sidecar describes another model")

    def _shape(self, context, shape: tuple[int, ...]) -> None:
        if not context.set_input_shape(self.input, shape):
            raise LayoverError(f"the engine refused input shape {shape} (batches "
                               f"{self.batch_range[0]}-{self.batch_range[1]}, see TensorRT's message above)")

    def _launch(self, context) -> None:
        if not context.execute_async_v3(self.cuda.stream_handle):
            raise LayoverError("TensorRT execution failed (see its messages above)")

    def _graph(self, shape: tuple[int, ...]) -> Any:
        """The CUDA graph for this batch, captured on first use in a context of its own (the backend's
        first context serves the first batch size)."""
        b = shape[0]
        if b not in self.graphs:
            context = self.context if not self.graphs else self.engine.create_execution_context()
            if context is None:
                raise LayoverError(f"TensorRT could not create an execution context for batch {b} (out of memory?)")
            self._bind(context)
            self._shape(context, shape)
            self._launch(context)  # a first run outside capture lets TensorRT finish shape-dependent setup
            self.graphs[b] = (context, self.cuda.capture(lambda: self._launch(context)))
        return self.graphs[b][1]

    def _execute(self, shape: tuple[int, ...]) -> None:
        """Enqueue one inference of the batch in the input buffer: its CUDA graph, or the engine."""
        if self.use_graph:
            self.cuda.replay(self._graph(shape))
        else:
            self._shape(self.context, shape)
            self._launch(self.context)

    def _run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        b = len(x)
        self.cuda.htod(self.buffers[self.input], x)
        self._execute(tuple(x.shape))
        out = {name: np.empty((b, self.num_classes), np.float32) for name in self.outputs}
        for name, host in out.items():
            self.cuda.dtoh(host, self.buffers[name])
        self.cuda.sync()
        return out

    def device_timer(self, batch: np.ndarray) -> Callable[[], float] | None:
        """The batch copied into the input buffer once; each call enqueues one inference (its CUDA
        graph with ``cuda_graph``) and returns its time between CUDA events on the stream, in ms."""
        low, high = self.batch_range
        if not low <= len(batch) <= high:
            return None
        x = np.ascontiguousarray(batch, np.float32)
        self.cuda.htod(self.buffers[self.input], x)
        self.cuda.sync()
        return lambda: self.cuda.time_ms(lambda: self._execute(tuple(x.shape)))

    def metadata(self) -> dict[str, Any]:
        return {"backend": self.name, "device": self.cuda.name, "compute_capability": self.cuda.compute_capability,
                "precision": self.sidecar["precision"], "tensorrt": self.sidecar["tensorrt"],
                "cuda_graph": self.use_graph, "cuda_binding": self.cuda.lib, "model": str(self.path)}

    def __del__(self):
        for ptr in getattr(self, "buffers", {}).values():
            try:
                self.cuda.free(ptr)
            except Exception:  # interpreter shutdown: the driver may already be gone
                pass
