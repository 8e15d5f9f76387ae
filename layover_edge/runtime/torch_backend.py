"""PyTorch backend: a layover-edge checkpoint (or an in-memory model) on CPU or CUDA, run eagerly,
replayed from CUDA graphs, or through torch.compile, in fp32, fp16 or bf16.

Why three modes: at batch 1 a big backbone is bound by Python launch overhead in eager mode
(Swin-B on an H200: 11.3 ms eager vs 2.7 ms graphed, measured in an earlier session with plain
PyTorch), so the cost of the RM branch can only be judged with CUDA graphs. The RM branch runs through
``torch.ops.layover.fused_mix`` in every mode (Triton on CUDA), which graphs and compiles.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from layover_edge.artifacts.model_info import ModelInfo
from layover_edge.core.config import ModelConfig
from layover_edge.core.errors import LayoverError
from layover_edge.models import load_checkpoint

from .base import Backend

MODES = ("eager", "graph", "compile")
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PRECISION_NAMES = {v: k for k, v in PRECISIONS.items()}


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        if dtype not in PRECISION_NAMES:
            raise LayoverError(f"unsupported dtype {dtype}; choose one of {tuple(PRECISIONS)}")
        return dtype
    if dtype not in PRECISIONS:
        raise LayoverError(f"unknown precision {dtype!r}; choose one of {tuple(PRECISIONS)}")
    return PRECISIONS[dtype]


class _GraphCache:
    """One CUDA graph per input shape, all in one memory pool: static input, captured forward,
    static output. ``__call__`` copies the batch in and replays (no Python per layer)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]):
        self.fn = fn
        self.pool = torch.cuda.graph_pool_handle()
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}

    def capture(self, x: torch.Tensor) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]:
        static_x = x.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the capture stream: cuDNN/Triton autotuning, lazy init
            for _ in range(3):
                self.fn(static_x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            static_y = self.fn(static_x)
        return graph, static_x, static_y

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape), x.dtype, x.stride())
        if key not in self.graphs:
            self.graphs[key] = self.capture(x)
        graph, static_x, static_y = self.graphs[key]
        static_x.copy_(x)
        graph.replay()
        return static_y


class TorchBackend(Backend):
    """``TorchBackend(checkpoint, device, dtype)`` as before; ``mode`` picks eager, CUDA graphs
    or torch.compile; ``dtype`` also takes "fp32" / "fp16" / "bf16" (the last two CUDA only)."""

    name = "torch"

    def __init__(self, checkpoint: str | Path, device: str = "cpu", dtype: torch.dtype | str = torch.float32,
                 mode: str = "eager", compile_mode: str | None = None, channels_last: bool | None = None):
        model, cfg = load_checkpoint(checkpoint, "cpu")
        self._setup(model, cfg, device, dtype, mode, compile_mode, channels_last)

    @classmethod
    def from_model(cls, model: torch.nn.Module, cfg: ModelConfig, device: str = "cpu",
                   dtype: torch.dtype | str = torch.float32, mode: str = "eager", compile_mode: str | None = None,
                   channels_last: bool | None = None) -> "TorchBackend":
        """A backend around a model built in memory (the benchmark's random-weight models)."""
        self = cls.__new__(cls)
        self._setup(model, cfg, device, dtype, mode, compile_mode, channels_last)
        return self

    def _setup(self, model, cfg, device, dtype, mode, compile_mode, channels_last) -> None:
        self.device = torch.device(device)
        self.dtype = resolve_dtype(dtype)
        cuda = self.device.type == "cuda"
        if mode not in MODES:
            raise LayoverError(f"unknown torch mode {mode!r}; choose one of {MODES}")
        if cuda and not torch.cuda.is_available():
            raise LayoverError(f"device {device} requested but CUDA is not available")
        if mode == "graph" and not cuda:
            raise LayoverError("CUDA graphs need a CUDA device (--device cuda)")
        if self.dtype != torch.float32 and not cuda:
            raise LayoverError(f"{self.dtype} inference needs a CUDA device; use fp32 on the CPU")
        self.mode = mode
        # channels-last NCHW is what cuDNN's fastest fp16 convolutions want; moot on the CPU
        self.channels_last = cuda if channels_last is None else channels_last
        self.cfg = cfg
        if cuda:
            torch.backends.cudnn.benchmark = True
        model = model.to(self.device, self.dtype).eval()
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self._forward = self._probabilities
        if mode == "compile":
            self._forward = torch.compile(self._probabilities, mode=compile_mode, dynamic=False)
        elif mode == "graph":
            self._forward = _GraphCache(self._probabilities)
        Backend.__init__(self, ModelInfo.from_config(cfg))

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).float()

    def _probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """(B, K) probabilities, with the RM gate α as an extra last column where the model has one:
        one output tensor, so CUDA graphs and torch.compile carry it unchanged (``predict_with_alpha``)."""
        logits, alpha = self.model.forward_with_alpha(x)
        probs = torch.sigmoid(logits.float())
        return probs if alpha is None else torch.cat([probs, alpha.float()[:, None]], 1)

    def to_device(self, batch: np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(batch).to(self.device, self.dtype, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @torch.inference_mode()
    def forward_device(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities for a batch already on the device, left there: the compute-only path."""
        return self._forward(x)[:, :len(self.info.labels)]

    def device_runner(self, batch: np.ndarray) -> Callable[[], Any] | None:
        x = self.to_device(batch)
        return lambda: self.forward_device(x)

    def device_timer(self, batch: np.ndarray) -> Callable[[], float] | None:
        if self.device.type != "cuda":
            return None
        run = self.device_runner(batch)

        def timed() -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        return timed

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self.predict_with_alpha(batch)[0]

    @torch.inference_mode()
    def predict_with_alpha(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        out = self._forward(self.to_device(batch)).cpu().numpy()
        k = len(self.info.labels)
        return out[:, :k], (out[:, k] if self.model.has_gate else None)

    @torch.inference_mode()
    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        logits = self._logits(self.to_device(batch))
        return {"logits": logits.cpu().numpy(), "probabilities": torch.sigmoid(logits).cpu().numpy()}

    def model_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in [*self.model.parameters(), *self.model.buffers()])

    def metadata(self) -> dict[str, Any]:
        cuda = self.device.type == "cuda"
        meta = {"backend": self.name, "device": torch.cuda.get_device_name(self.device) if cuda else "cpu",
                "precision": PRECISION_NAMES[self.dtype], "mode": self.mode,
                "cuda_graph": self.mode == "graph", "channels_last": self.channels_last,
                "torch": torch.__version__}
        if cuda:
            meta["cuda"] = torch.version.cuda
            if self.cfg.fused_branch:
                from layover_edge.kernels import op
                meta["rm_branch"] = ("triton fused_mix" if op.HAS_TRITON and op.triton_error is None
                                     else "reference fused_mix")
        return meta
