"""Deployment target profiles: what an engine is built for.

An engine only runs on the compute capability and TensorRT version it was built with, so a
profile names both, plus the optimisation-profile batch sizes and workspace that suit the
device's memory. JetPack 6.1/6.2 ship TensorRT 10.3 (CUDA 12.6); TensorRT 11 does not support
Orin on JetPack 6, and DLA is absent from TensorRT 11.0-11.3 (NVIDIA's TensorRT 10.x-to-11.x Jetson
migration notes).
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


def check_dla(target: Target, dla_core: int | None, precision: str, trt_version: str,
              batch: tuple[int, int, int]) -> None:
    """DLA needs a Jetson with DLA cores, FP16 or INT8, static shapes and TensorRT 10.x or ≥ 11.4."""
    if dla_core is None:
        return
    if not 0 <= dla_core < target.dla_cores:
        raise LayoverError(f"target {target.name} has {target.dla_cores} DLA cores; --dla-core {dla_core} is not one")
    if precision == "fp32":
        raise LayoverError("DLA runs FP16 or INT8 only: build with --precision fp16 or int8")
    major, minor = (int(v) for v in (trt_version.split(".") + ["0"])[:2])
    if major == 11 and minor < 4:
        raise LayoverError(f"TensorRT {trt_version} has no DLA support (restored in 11.4 on JetPack 7.2.2+); "
                           f"use TensorRT 10.x (JetPack 6)")
    if len(set(batch)) != 1:
        raise LayoverError(f"DLA needs a static batch: set --min-batch = --opt-batch = --max-batch (got {batch})")
