"""NVIDIA's own timing of an engine, beside ours: ``trtexec --loadEngine ... --useCudaGraph
--noDataTransfers`` and its "GPU Compute Time" line parsed.

What trtexec's sources fix (NVIDIA/TensorRT release/10.3 and 10.13, samples/common/):
- ``InferenceOptions::parse`` (sampleOptions.cpp:1595-1629 at 10.3) takes ``--iterations``,
  ``--duration`` (seconds, default 3), ``--warmUp`` (ms), ``--noDataTransfers``, ``--useCudaGraph``
  and ``--shapes``; ``--useDLACore`` and ``--dynamicPlugins`` are ``SystemOptions`` (1565-1586), so
  they apply to ``--loadEngine`` too;
- ``printEpilog`` (sampleReporting.cpp:224-264 at 10.3) prints, per metric, ``min = X ms, max = X ms,
  mean = X ms, median = X ms`` then ``, percentile(P%) = X ms`` for each reported percentile
  (90, 95, 99 by default), and ``Throughput: X qps``;
- from 11.x CUDA graphs and no data transfers are trtexec's defaults, and ``--useCudaGraph`` and
  ``--noDataTransfers`` are deprecated no-ops that print a warning (sampleOptions.cpp:1684-1720 at
  release/11.1): the command leaves them out for an engine built with TensorRT 11.
The engine's sidecar says which TensorRT built it; trtexec must be that version to load it.
"""
from __future__ import annotations

import re
import shutil
import subprocess

# at a line's start or after trtexec's "[I] " tag: not "H2D Latency" nor "Total GPU Compute Time"
METRIC = re.compile(r"(?:^|\] )(GPU Compute Time|Latency|Throughput): (.*)$")
FIELD = re.compile(r"(min|max|mean|median|percentile\((\d+(?:\.\d+)?)%\))\s*=?\s*([0-9.eE+-]+)\s*ms")


def parse_metric(text: str) -> dict[str, float]:
    """``min = 5.3 ms, ..., percentile(99%) = 12.9 ms`` -> {"min", "max", "mean", "median", "p90", ...}."""
    out = {}
    for name, pct, value in FIELD.findall(text):
        key = f"p{pct.removesuffix('.0')}" if pct else name
        out[key] = float(value)
    return out


def parse_summary(log: str) -> dict:
    """The performance summary of a trtexec log: ``gpu_compute_ms`` and ``latency_ms`` (each
    min/max/mean/median/p90/p95/p99 as printed) and ``throughput_qps``; {} when there is none."""
    out: dict = {}
    for line in log.splitlines():
        m = METRIC.search(line)
        if not m:
            continue
        name, rest = m.groups()
        if name == "Throughput":
            q = re.match(r"\s*([0-9.eE+-]+) qps", rest)
            if q:
                out["throughput_qps"] = float(q.group(1))
        elif (fields := parse_metric(rest)):
            out["gpu_compute_ms" if name == "GPU Compute Time" else "latency_ms"] = fields
    return out


def command(engine: str, sidecar: dict, batch: int, iterations: int, trtexec: str = "trtexec") -> list[str]:
    """The argument list (no shell) that times ``engine`` at ``batch`` the way our compute column is
    timed: CUDA graph, no host copies."""
    args = [trtexec, f"--loadEngine={engine}"]
    if int(str(sidecar["tensorrt"]).split(".")[0]) < 11:  # 11 does both by default; the flags only warn there
        args += ["--useCudaGraph", "--noDataTransfers"]
    args += [f"--iterations={iterations}", "--duration=0", "--warmUp=200"]
    low, _, high = (int(b) for b in sidecar["batch"])
    if low != high:  # a static engine takes no shapes
        s = int(sidecar["image_size"])
        args.append(f"--shapes={sidecar['input']}:{batch}x3x{s}x{s}")
    args += [f"--dynamicPlugins={p}" for p in sidecar.get("plugins") or []]
    if sidecar.get("dla_core") is not None:
        args.append(f"--useDLACore={int(sidecar['dla_core'])}")
    return args


def find() -> str | None:
    """trtexec on PATH, or JetPack's /usr/src/tensorrt/bin/trtexec."""
    return shutil.which("trtexec") or shutil.which("trtexec", path="/usr/src/tensorrt/bin")


def run(engine: str, sidecar: dict, batch: int, iterations: int, trtexec: str, timeout_s: float = 600) -> dict:
    """trtexec's summary for one engine and batch, with its command; ``error`` instead when it failed."""
    args = command(engine, sidecar, batch, iterations, trtexec)
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"command": args, "error": str(e)}
    summary = parse_summary(done.stdout)
    if done.returncode != 0 or "gpu_compute_ms" not in summary:
        tail = [line for line in (done.stdout + done.stderr).splitlines() if "[E]" in line or "Error" in line]
        return {"command": args, "error": f"trtexec exited {done.returncode}" + (f": {tail[-1]}" if tail else "")}
    return {"command": args, **summary}
