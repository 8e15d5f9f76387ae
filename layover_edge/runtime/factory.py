"""Open any model file behind the one Backend interface, chosen by what the path is."""
from __future__ import annotations

from pathlib import Path

from ..errors import LayoverError
from .base import Backend

KINDS = ("torch", "onnxruntime", "tensorrt")


def kind_of(path: str | Path) -> str:
    path = Path(path)
    if path.is_dir() and (path / "config.json").is_file():
        return "torch"
    if path.suffix == ".onnx":
        return "onnxruntime"
    if path.suffix in (".engine", ".plan", ".trt"):
        return "tensorrt"
    if not path.exists():
        raise LayoverError(f"model not found: {path}")
    raise LayoverError(f"{path} is not a model layover-edge can run: expected a checkpoint directory, "
                       f"an .onnx file or a TensorRT .engine/.plan")


def open_backend(path: str | Path, kind: str | None = None, device: str = "cpu", **options) -> Backend:
    """A checkpoint directory runs in PyTorch, an .onnx file in ONNX Runtime, an engine in TensorRT."""
    kind = kind or kind_of(path)
    if kind == "torch":
        from .torch_backend import TorchBackend
        return TorchBackend(path, device=device, **options)
    if kind == "onnxruntime":
        from .onnx_backend import OnnxBackend
        return OnnxBackend(path, device=device, **options)
    if kind == "tensorrt":
        from .tensorrt_backend import TensorRTBackend
        return TensorRTBackend(path, **options)
    raise LayoverError(f"unknown backend {kind!r}; choose one of {KINDS}")
