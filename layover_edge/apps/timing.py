"""How ``bench`` times models, whichever way they were given (a backbone name or the user's files):
interleaved rounds, per-call percentiles, device time from CUDA events, energy from the power rails.

Why it is built this way:
- the models of one comparison are timed in the same process, interleaved round by round with a
  rotating first, so clock, thermal and load drift hit all of them alike and their ratio is trustworthy;
- two latencies: ``predict`` on a host batch (copies in and out included: what a caller sees) and,
  where the backend keeps a batch on the GPU, inference alone (``Backend.device_timer``: CUDA events
  on the backend's own stream, one request at a time);
- p50/p90/p99 over single calls, not a mean: tails matter on a device;
- torch-free: a Jetson with the device install times engines and ONNX files with this.
"""
from __future__ import annotations

import importlib.metadata
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np

from layover_edge.runtime.base import Backend

from .power import PowerMeter


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def library_versions() -> dict[str, str]:
    """Installed versions of what can run a model, read without importing them (torch stays unloaded)."""
    out = {"numpy": np.__version__, "python": platform.python_version()}
    for dist, key in (("torch", "torch"), ("timm", "timm"), ("onnxruntime", "onnxruntime"),
                      ("onnxruntime-gpu", "onnxruntime"), ("triton", "triton"), ("tensorrt", "tensorrt"),
                      ("tensorrt-cu12", "tensorrt"), ("tensorrt-cu13", "tensorrt"), ("cuda-python", "cuda-python"),
                      ("cuda-bindings", "cuda-python")):
        try:
            out.setdefault(key, importlib.metadata.version(dist))
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean())}


def time_host(backend: Backend, x: np.ndarray, n: int) -> list[float]:
    """predict() on a host batch, per call in ms: copies in, inference, copy back (synchronous)."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        backend.predict(x)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def measure(backends: dict[str, Backend], x: np.ndarray, warmup: int, iters: int, rounds: int,
            device: bool = True, meter: PowerMeter | None = None) -> dict[str, dict]:
    """Warm each backend up, then time them interleaved: ``rounds`` rounds of ``iters // rounds``
    calls each, rotating who goes first. ``device``: also time device-resident inference where the
    backend can; ``meter``: energy per image from the power sampled while each one ran."""
    batch = len(x)
    timers: dict[str, Callable[[], float]] = {}
    if device:
        timers = {k: t for k, b in backends.items() if (t := b.device_timer(x)) is not None}
    for k, b in backends.items():
        b.warmup(batch, max(warmup, 1))
        for _ in range(max(warmup, 1) if k in timers else 0):
            timers[k]()
    host: dict[str, list[float]] = {k: [] for k in backends}
    dev: dict[str, list[float]] = {k: [] for k in timers}
    spans: dict[str, list[tuple[float, float]]] = {k: [] for k in backends}
    per_round = iters // rounds
    names = list(backends)
    for r in range(rounds):
        for k in names[r % len(names):] + names[: r % len(names)]:
            t0 = time.perf_counter()
            host[k] += time_host(backends[k], x, per_round)
            spans[k].append((t0, time.perf_counter()))
            if k in timers:
                dev[k] += [timers[k]() for _ in range(per_round)]
    out = {}
    for k in backends:
        energy = meter.energy_mj(spans[k]) if meter is not None else None
        out[k] = {"latency_ms": percentiles(host[k]), "throughput": batch * 1e3 / statistics.fmean(host[k]),
                  "compute_ms": percentiles(dev[k]) if k in dev else None,
                  "compute_throughput": batch * 1e3 / statistics.fmean(dev[k]) if k in dev else None,
                  "iterations": len(host[k]),
                  "energy_mj_per_image": energy / (len(host[k]) * batch) if energy is not None else None}
    return out
