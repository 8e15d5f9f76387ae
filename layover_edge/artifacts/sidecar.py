"""The JSON beside every engine (``model.engine`` -> ``model.engine.json``): what it was built with
and for, and what the runtime needs to tag with it.

TensorRT engines run only on the TensorRT version and GPU architecture that built them; loading
one elsewhere fails deep inside deserialisation ("Version tag does not match") or worse.
``check_compatible`` refuses a mismatch up front with the reason.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from layover_edge.core.errors import LayoverError
from layover_edge.core.io import read_json

FORMAT = "layover-edge/engine/1"
REQUIRED = ("format", "tensorrt", "gpu", "compute_capability", "precision", "input", "outputs", "batch",
            "onnx_sha256", "engine_sha256", "labels", "image_size", "mean", "std", "interpolation")
log = logging.getLogger(__name__)


def sidecar_path(engine: str | Path) -> Path:
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def read_sidecar(engine: str | Path) -> dict[str, Any]:
    path = sidecar_path(engine)
    if not path.is_file():
        raise LayoverError(f"{engine} has no sidecar {path.name}: build engines with `layover-edge build`, "
                           f"which records the TensorRT version, GPU and labels beside the engine")
    doc = read_json(path, FORMAT)
    missing = [k for k in REQUIRED if k not in doc]
    if missing:
        raise LayoverError(f"{path} lacks {missing}")
    return doc


def check_compatible(sidecar: dict[str, Any], tensorrt: str, compute_capability: str, gpu: str,
                     library: dict[str, Any] | None = None) -> None:
    """Raise LayoverError unless the running TensorRT (its bindings' version and, where both sides
    know it, its library's build: core.tensorrt.library_identity) and GPU architecture are the engine's."""
    if sidecar["tensorrt"] != tensorrt:
        raise LayoverError(f"engine built with TensorRT {sidecar['tensorrt']}, this is TensorRT {tensorrt}: "
                           f"rebuild it here (layover-edge build) or install TensorRT {sidecar['tensorrt']}")
    built = sidecar.get("tensorrt_library")
    if built and library and (built["version"], built["bytes"]) != (library["version"], library["bytes"]):
        same = built["version"] == library["version"]
        raise LayoverError(f"engine built with another build of TensorRT {tensorrt}: libnvinfer "
                           + (f"of {built['bytes']} bytes, this one has {library['bytes']}" if same else
                              f"{built['version']}, this is {library['version']}")
                           + "; TensorRT runs a plan only on the build that made it: rebuild it here "
                             "(layover-edge build)")
    if sidecar["compute_capability"] != compute_capability:
        raise LayoverError(f"engine built for {sidecar['gpu']} (compute capability {sidecar['compute_capability']}), "
                           f"this GPU is {gpu} ({compute_capability}): rebuild it on this device")
    if sidecar["gpu"] != gpu:
        log.warning("engine tuned on %s, running on %s (same compute capability): it runs, timings may differ",
                    sidecar["gpu"], gpu)
