"""Open any model file behind the one Backend interface, chosen by what the path is."""
from __future__ import annotations

from pathlib import Path

from layover_edge.core.errors import LayoverError, NotFound

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
        raise NotFound(f"model not found: {path}")
    raise LayoverError(f"{path} is not a model layover-edge can run: expected a checkpoint directory, "
                       f"an .onnx file or a TensorRT .engine/.plan")


def open_backend(path: str | Path, kind: str | None = None, **options) -> Backend:
    """A checkpoint directory runs in PyTorch, an .onnx file in ONNX Runtime, an engine in TensorRT;
    ``options`` go to that backend's constructor."""
    kind = kind or kind_of(path)
    if kind == "torch":
        from .torch_backend import TorchBackend
        return TorchBackend(path, **options)
    if kind == "onnxruntime":
        from .onnx_backend import OnnxBackend
        return OnnxBackend(path, **options)
    if kind == "tensorrt":
        from .tensorrt_backend import TensorRTBackend
        return TensorRTBackend(path, **options)
    raise LayoverError(f"unknown backend {kind!r}; choose one of {KINDS}")


def open_model(path: str | Path, device: str = "auto", precision: str = "fp32", mode: str = "eager") -> Backend:
    """Any model file behind the Backend interface, for users: ``device`` may be ``auto``;
    ``precision`` and ``mode`` apply to checkpoints only; a wrong or broken file is one LayoverError."""
    kind = kind_of(path)
    if kind != "torch" and (precision != "fp32" or mode != "eager"):
        raise LayoverError(f"--precision and --mode apply to PyTorch checkpoints; {path} is a {kind} model "
                           "whose precision was fixed when it was exported")
    if kind == "torch":
        from layover_edge.artifacts.checkpoint import read_config
        from layover_edge.core.device import resolve_device
        read_config(path)  # a broken config.json is refused before torch is even imported
        options = {"device": str(resolve_device(device)), "dtype": precision, "mode": mode}
    elif kind == "onnxruntime":
        options = {"device": "cuda" if device.startswith("cuda") else "cpu"}
    else:
        options = {"device": int(device.split(":")[1]) if device.startswith("cuda:") else 0}
    try:
        return open_backend(path, kind, **options)
    except LayoverError:
        raise
    except ImportError as e:
        raise LayoverError(f"cannot run {path}: {e}") from None
    except Exception as e:  # a foreign file fails deep inside safetensors/onnx/TensorRT with many types
        first = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
        raise LayoverError(f"cannot open model {path}: {first}") from None
