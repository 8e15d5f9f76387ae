"""Deployment target profiles: what an engine is built for.

An engine only runs on the compute capability and TensorRT version it was built with, so a
profile names both, plus the optimisation-profile batch sizes and workspace that suit the
device's memory. JetPack 6.1/6.2 ship TensorRT 10.3 (CUDA 12.6); TensorRT 11 does not support
Orin on JetPack 6. DLA (NVIDIA's "Working with DLA", TensorRT 11.4.1 docs): TensorRT 10.7 was the last
10.x release with it; 11.0-11.3 have none, 11.4.0 only on Windows on ARM; 11.4.1 brings it back on
Jetson AGX Orin only, under JetPack 7.2.2 or later.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from layover_edge.core.errors import LayoverError


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    compute_capability: str          # "8.7" -> sm_87
    tensorrt: str                    # the TensorRT the device ships or we recommend
    batch: tuple[int, int, int]      # optimisation profile (min, opt, max)
    workspace_gb: float              # builder workspace limit
    dla_cores: int = 0
    jetson: bool = False

    @property
    def sm(self) -> str:
        return "sm_" + self.compute_capability.replace(".", "")

    def to_dict(self) -> dict:
        return asdict(self) | {"sm": self.sm}


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("orin-nano", "Jetson Orin Nano 8 GB, JetPack 6.x (no DLA)", "8.7", "10.3", (1, 1, 8), 1.0,
           jetson=True),
    Target("orin-nx", "Jetson Orin NX 16 GB, JetPack 6.x (2 DLA cores; 1 on the 8 GB module)", "8.7", "10.3",
           (1, 4, 16), 2.0, dla_cores=2, jetson=True),
    Target("orin-agx", "Jetson AGX Orin 32/64 GB, JetPack 6.x (2 DLA cores)", "8.7", "10.3", (1, 8, 32), 4.0,
           dla_cores=2, jetson=True),
    Target("h100", "NVIDIA H100 (80 GB), TensorRT 10.x or 11.x", "9.0", "11", (1, 32, 128), 8.0),
    Target("h200", "NVIDIA H200 (141 GB), TensorRT 10.x or 11.x", "9.0", "11", (1, 32, 256), 8.0),
)}


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise LayoverError(f"unknown target {name!r}; choose one of {sorted(TARGETS)}") from None


def version_tuple(version: str) -> tuple[int, int, int]:
    parts = [int(p) for p in version.split(".")[:3] if p.isdigit()]
    return tuple(parts + [0] * (3 - len(parts)))  # type: ignore[return-value]


def check_dla(target: Target, dla_core: int | None, precision: str, trt_version: str,
              batch: tuple[int, int, int]) -> None:
    """DLA needs a Jetson with DLA cores, FP16 or INT8, static shapes, and TensorRT 10.0-10.7 or
    11.4.1+ (AGX Orin only)."""
    if dla_core is None:
        return
    if not 0 <= dla_core < target.dla_cores:
        raise LayoverError(f"target {target.name} has {target.dla_cores} DLA cores; --dla-core {dla_core} is not one")
    if precision == "fp32":
        raise LayoverError("DLA runs FP16 or INT8 only: build with --precision fp16 or int8")
    v = version_tuple(trt_version)
    if (10, 8, 0) <= v < (11, 0, 0):
        raise LayoverError(f"TensorRT {trt_version} has no DLA support (10.7 was the last 10.x release with it); "
                           f"use JetPack 6's TensorRT 10.3")
    if (11, 0, 0) <= v < (11, 4, 1):
        raise LayoverError(f"TensorRT {trt_version} has no DLA support on Jetson (it returns in 11.4.1, on AGX Orin "
                           f"with JetPack 7.2.2+); use JetPack 6's TensorRT 10.3")
    if v >= (11, 0, 0) and target.name != "orin-agx":
        raise LayoverError(f"TensorRT {trt_version} supports DLA on Jetson AGX Orin only, not {target.name}")
    if len(set(batch)) != 1:
        raise LayoverError(f"DLA needs a static batch: set --min-batch = --opt-batch = --max-batch (got {batch})")
