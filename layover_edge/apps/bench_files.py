"""The device benchmark: the user's own model files (checkpoints, ONNX files, TensorRT engines, any
mix, e.g. the LP, RM and FT exports of one backbone) timed on every backend that can run them here.

- engines: the project's TensorRT runtime with CUDA graphs, host copies included (``predict``) and
  device-resident (``compute``, CUDA events); where trtexec is installed, also
  ``trtexec --loadEngine --useCudaGraph --noDataTransfers``, its GPU-compute percentiles beside ours;
- ONNX files: ONNX Runtime on the CPU, and on CUDA where its provider is installed;
- checkpoints: PyTorch where torch is installed (fp32 eager on the CPU; fp16 eager and CUDA graphs on
  a GPU, or ``precisions``/``modes``).
Each file's method, backbone, precision and input size come from its own metadata (config.json,
the ONNX metadata, the engine's sidecar); the files one backend runs at one precision and size are
timed together, interleaved, so RM/LP and FT/LP come out of one run. Torch-free except for
checkpoints: this is what a Jetson with the device install runs. On a Jetson it records the power
mode, the clocks and, from the power rails, the energy per image of each model.
"""
from __future__ import annotations

import gc
import importlib.util
import logging
import re
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from layover_edge.core.errors import LayoverError
from layover_edge.core.io import write_json, write_text
from layover_edge.runtime.base import Backend
from layover_edge.runtime.factory import kind_of, open_backend

from . import trtexec_timing
from .bench import format_ms, format_number, plot, ratio_rows
from .power import PowerMeter, jetson_state
from .sources import is_jetson
from .timing import cpu_name, library_versions, measure

log = logging.getLogger(__name__)
TORCH_PRECISIONS = ("fp32", "fp16", "bf16")
TORCH_MODES = ("eager", "graph", "compile")
KIND_NAMES = {"torch": "checkpoint", "onnxruntime": "ONNX", "tensorrt": "engine"}


@dataclass
class FileBenchConfig:
    models: tuple[str, ...]
    batches: tuple[int, ...] = (1, 8, 32)
    device: str = "auto"                         # auto: every backend here; cpu; cuda / cuda:N: GPU ones
    precisions: tuple[str, ...] | None = None    # checkpoints only (None: fp32 on CPU, fp16 on CUDA)
    modes: tuple[str, ...] | None = None         # checkpoints only (None: eager, + graph on CUDA)
    warmup: int = 10
    iters: int = 50
    rounds: int = 5
    threads: int | None = None                   # CPU threads for PyTorch and ONNX Runtime
    trtexec: bool = True                         # also time engines with trtexec where it is installed
    power: bool = True                           # energy per image where the board has power monitors
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.models:
            raise LayoverError("no model files given")
        if not self.batches or min(self.batches) < 1:
            raise LayoverError("batch sizes must be positive")
        if self.iters < self.rounds or self.rounds < 1 or self.warmup < 0:
            raise LayoverError("need rounds ≥ 1, iters ≥ rounds and warmup ≥ 0")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise LayoverError(f"--device must be auto, cpu, cuda or cuda:N for model files, got {self.device!r}")
        bad = set(self.precisions or ()) - set(TORCH_PRECISIONS)
        if bad:
            raise LayoverError(f"precisions {sorted(bad)}: with model files, --precisions applies to checkpoints "
                               f"({', '.join(TORCH_PRECISIONS)}); an ONNX file's or engine's precision is its own")
        if set(self.modes or ()) - set(TORCH_MODES):
            raise LayoverError(f"unknown modes {sorted(set(self.modes) - set(TORCH_MODES))}; choose from {TORCH_MODES}")

    @property
    def gpu_index(self) -> int:
        return int(self.device.split(":")[1]) if ":" in self.device else 0


@dataclass
class ModelFile:
    """A model file and what its metadata says about it."""

    path: Path
    kind: str                 # torch / onnxruntime / tensorrt
    name: str                 # how the tables name it
    method: str
    backbone: str
    precision: str | None     # fixed at export for ONNX files and engines; None for checkpoints
    image_size: int
    meta: dict


def describe(path: str | Path) -> ModelFile:
    """Read a model file's metadata without running it; one LayoverError for a file we did not write."""
    path = Path(path)
    kind = kind_of(path)
    if kind == "torch":
        from layover_edge.artifacts.checkpoint import read_config
        cfg, _ = read_config(path)
        meta = {"method": cfg.method, "backbone": cfg.backbone, "image_size": cfg.image_size}
    elif kind == "onnxruntime":
        try:
            import onnx
        except ImportError:
            raise LayoverError(f"{path}: reading an ONNX file needs onnx (pip install onnx)") from None
        from layover_edge.artifacts.onnx_metadata import get_metadata
        try:
            meta = get_metadata(onnx.load(str(path), load_external_data=False), path)
        except LayoverError:
            raise
        except Exception as e:  # protobuf's DecodeError and friends
            raise LayoverError(f"{path} is not a readable ONNX file: {e}") from None
    else:
        from layover_edge.artifacts.sidecar import read_sidecar
        meta = read_sidecar(path)
    missing = [k for k in ("method", "image_size") if meta.get(k) is None]
    if missing:
        raise LayoverError(f"{path}: its metadata lacks {missing}")
    return ModelFile(path, kind, path.name, str(meta["method"]), str(meta.get("backbone") or "?"),
                     meta.get("precision") if kind != "torch" else None, int(meta["image_size"]), meta)


def unique_names(files: list[ModelFile]) -> None:
    """Two files called model.onnx in different folders are named by their paths instead."""
    seen: dict[str, int] = {}
    for f in files:
        seen[f.name] = seen.get(f.name, 0) + 1
    for f in files:
        if seen[f.name] > 1:
            f.name = str(f.path)


@dataclass(frozen=True)
class Runner:
    """One way to run files of one kind here: a label and the options ``open_backend`` takes."""

    label: str
    kind: str
    precision: str | None = None   # checkpoints: the dtype to run; others run their own
    options: tuple = ()

    def open(self, f: ModelFile) -> Backend:
        try:
            return open_backend(f.path, self.kind, **dict(self.options))
        except LayoverError:
            raise
        except ImportError as e:
            raise LayoverError(f"cannot run {f.path}: {e}") from None
        except Exception as e:  # a foreign file fails deep inside ONNX Runtime / TensorRT / safetensors
            first = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
            raise LayoverError(f"cannot open {f.path}: {first}") from None


def plan(kinds: set[str], cfg: FileBenchConfig) -> tuple[list[Runner], dict[str, str]]:
    """The runners this machine has for the kinds of file given, and why a kind has none."""
    cpu, gpu = cfg.device in ("auto", "cpu"), cfg.device != "cpu"
    runners: list[Runner] = []
    missing: dict[str, str] = {}
    if "torch" in kinds:
        if importlib.util.find_spec("torch") is None:
            missing["torch"] = "PyTorch is not installed: checkpoints run where it is (or export them to ONNX)"
        else:
            import torch
            if cfg.threads:
                torch.set_num_threads(cfg.threads)
            cuda = gpu and torch.cuda.is_available()
            if cpu:
                runners += [Runner(f"PyTorch CPU {m}", "torch", p,
                                   (("device", "cpu"), ("dtype", p), ("mode", m)))
                            for p in (cfg.precisions or ("fp32",)) if p == "fp32" for m in (cfg.modes or ("eager",))
                            if m != "graph"]
            if cuda:
                runners += [Runner(f"PyTorch CUDA {m}", "torch", p,
                                   (("device", f"cuda:{cfg.gpu_index}"), ("dtype", p), ("mode", m)))
                            for p in (cfg.precisions or ("fp16",)) for m in (cfg.modes or ("eager", "graph"))]
            if not any(r.kind == "torch" for r in runners):
                missing["torch"] = ("no CUDA device for PyTorch" if cfg.device != "cpu" and not cuda
                                    else "no checkpoint variant matches --precisions/--modes on this device")
    if "onnxruntime" in kinds:
        if importlib.util.find_spec("onnxruntime") is None:
            missing["onnxruntime"] = "ONNX Runtime is not installed (pip install onnxruntime)"
        else:
            import onnxruntime as ort
            if cpu:
                runners.append(Runner("ONNX Runtime CPU", "onnxruntime", None,
                                      (("device", "cpu"), ("threads", cfg.threads))))
            if gpu and "CUDAExecutionProvider" in ort.get_available_providers():
                runners.append(Runner("ONNX Runtime CUDA", "onnxruntime", None, (("device", "cuda"),)))
            elif cfg.device.startswith("cuda"):
                missing["onnxruntime"] = "this onnxruntime has no CUDAExecutionProvider (pip install onnxruntime-gpu)"
    if "tensorrt" in kinds:
        if gpu:
            runners.append(Runner("TensorRT CUDA graph", "tensorrt", None,
                                  (("device", cfg.gpu_index), ("cuda_graph", True))))
        else:
            missing["tensorrt"] = "engines run on a GPU; --device cpu leaves them out"
    return runners, missing


def _reason(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _row(f: ModelFile, label: str, precision: str | None, batch: int, status: str, **rest) -> dict:
    return {"model": f.name, "path": str(f.path), "kind": f.kind, "method": f.method.upper(), "backbone": f.backbone,
            "image_size": f.image_size, "variant": f"{label} {precision or '?'}", "backend_label": label,
            "precision": precision, "batch": batch, "status": status, **rest}


def run_group(runner: Runner, files: list[ModelFile], cfg: FileBenchConfig, meter: PowerMeter | None,
              trtexec: str | None) -> list[dict]:
    """Open every file of one comparison, then time them interleaved at each batch size."""
    rows: list[dict] = []
    backends: dict[str, Backend] = {}
    opened: dict[str, ModelFile] = {}
    for f in files:
        precision = runner.precision or f.precision
        try:
            backends[f.name] = runner.open(f)
            opened[f.name] = f
        except LayoverError as e:
            log.warning("%s on %s: %s", f.name, runner.label, _reason(e))
            rows += [_row(f, runner.label, precision, b, "skipped", error=_reason(e)) for b in cfg.batches]
    try:
        for batch in cfg.batches:
            fits = {k: b for k, b in backends.items()
                    if b.batch_range is None or b.batch_range[0] <= batch <= b.batch_range[1]}
            for k in set(backends) - set(fits):
                low, high = backends[k].batch_range
                rows.append(_row(opened[k], runner.label, runner.precision or opened[k].precision, batch, "skipped",
                                 error=f"the model takes batches {low}-{high}"))
            if not fits:
                continue
            size = files[0].image_size
            x = np.random.default_rng(cfg.seed).standard_normal((batch, 3, size, size), np.float32)
            try:
                timed = measure(fits, x, cfg.warmup, cfg.iters, cfg.rounds, device=True, meter=meter)
            except (LayoverError, RuntimeError, MemoryError) as e:
                log.warning("%s at batch %d failed: %s", runner.label, batch, _reason(e))
                rows += [_row(opened[k], runner.label, runner.precision or opened[k].precision, batch, "failed",
                              error=_reason(e)) for k in fits]
                continue
            rows += [_row(opened[k], runner.label, runner.precision or opened[k].precision, batch, "ok",
                          size_mb=fits[k].model_bytes() / 1e6, backend=fits[k].metadata(), **timed[k]) for k in fits]
    finally:
        backends.clear()
        gc.collect()
    if trtexec and runner.kind == "tensorrt":  # our contexts are freed first: trtexec gets the GPU alone
        for r in rows:
            if r["status"] == "ok":
                f = opened[r["model"]]
                r["trtexec"] = trtexec_timing.run(str(f.path), f.meta, r["batch"], cfg.iters, trtexec)
    return rows


def groups(runners: list[Runner], files: list[ModelFile]) -> list[tuple[Runner, list[ModelFile]]]:
    """(runner, files) per comparison: one backend, one precision, one input size."""
    out = []
    for runner in runners:
        mine = [f for f in files if f.kind == runner.kind]
        keys = dict.fromkeys((runner.precision or f.precision, f.image_size) for f in mine)
        out += [(runner, [f for f in mine if (runner.precision or f.precision, f.image_size) == k]) for k in keys]
    return out


def environment(cfg: FileBenchConfig, meter: PowerMeter | None, trtexec: str | None) -> dict:
    env = {"device_name": cpu_name(), "device": cfg.device, **library_versions(),
           "trtexec": trtexec or "not found (not on PATH, nor /usr/src/tensorrt/bin)"}
    if sys.modules.get("torch") is not None:  # loaded for checkpoints only
        env["torch_threads"] = sys.modules["torch"].get_num_threads()
    if is_jetson() or shutil.which("nvpmodel"):
        env["jetson"] = jetson_state()
    env["power"] = meter.source if meter is not None else "no power monitor (INA3221 sysfs or tegrastats) here"
    return env


def run_file_bench(cfg: FileBenchConfig, out: Path, progress: bool = True) -> dict:
    """Time every file on every backend that runs it here; write bench.json, bench.md, bench.png into ``out``."""
    files = [describe(p) for p in cfg.models]
    unique_names(files)
    runners, missing = plan({f.kind for f in files}, cfg)
    trtexec = trtexec_timing.find() if cfg.trtexec and any(f.kind == "tensorrt" for f in files) else None
    meter = PowerMeter.open() if cfg.power else None
    env = environment(cfg, meter, trtexec)
    rows: list[dict] = []
    for f in files:
        if f.kind in missing:
            rows += [_row(f, KIND_NAMES[f.kind], f.precision, b, "skipped", error=missing[f.kind]) for b in cfg.batches]
    if meter is not None:
        meter.start()
        time.sleep(1.0)  # the idle floor, before anything runs
        env["idle_mw"] = meter.mean_mw(meter.times[0], time.perf_counter()) if meter.times else None
    try:
        for runner, mine in tqdm(groups(runners, files), desc="backends", disable=not progress):
            rows += run_group(runner, mine, cfg, meter, trtexec)
    finally:
        if meter is not None:
            meter.stop()
    env["gpus"] = sorted({r["backend"]["device"] for r in rows if r["status"] == "ok" and r["backend"].get("device")
                          not in (None, "cpu", "cuda")})  # names: TensorRT and PyTorch report them
    result = {"mode": "files", "title": ", ".join(sorted({f.backbone for f in files})),
              "config": {k: v for k, v in cfg.__dict__.items()}, "environment": env,
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "bench.json", result)
    write_text(out / "bench.md", markdown(result))
    result["plot"] = str(plot(result, out / "bench.png") or "")
    return result


STATUS = {"ok": "✅", "skipped": "⏭", "failed": "❌"}


def markdown(result: dict) -> str:
    env, c, rows = result["environment"], result["config"], result["rows"]
    libs = ", ".join(f"{k} {env[k]}" for k in ("onnxruntime", "tensorrt", "torch", "cuda-python") if k in env)
    jetson = env.get("jetson") or {}
    lines = [f"# Latency of {len(c['models'])} model files ({result['title']})", "",
             f"{', '.join([env['device_name'], *env.get('gpus', [])])} (--device {env['device']}); {libs}; "
             f"{result['date']}.",
             f"{c['warmup']} warm-up calls, then {c['iters']} timed calls per cell; the files one backend runs at "
             f"one precision and size interleaved in {c['rounds']} rounds. `predict` = host batch in, probabilities "
             "out (host↔device copies included); `compute` = batch already on the GPU, CUDA events; trtexec = "
             "NVIDIA's GPU Compute Time (`--useCudaGraph --noDataTransfers`). "
             "Status: ✅ ran, ⏭ cannot run here, ❌ failed (reasons below)."]
    if jetson:
        lines.append(f"Jetson power mode: {jetson.get('power_mode', jetson.get('power_mode_error'))}; clocks: "
                     + ("recorded in bench.json" if "clocks" in jetson else str(jetson.get("clocks_error"))) + ".")
    lines.append(f"Power: {env['power']}" + (f", idle {env['idle_mw']:.0f} mW" if env.get("idle_mw") else "")
                 + "; energy per image includes the idle floor.")
    lines += ["", "| Model | Method | Backend | Precision | Status | Batch | p50 ms | p90 ms | p99 ms | img/s "
              "| compute p50 ms | compute p99 ms | trtexec p50 ms | trtexec p99 ms | mJ/img |",
              "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lat, comp = r.get("latency_ms") or {}, r.get("compute_ms") or {}
        nv = (r.get("trtexec") or {}).get("gpu_compute_ms") or {}
        cells = [r["model"], r["method"], r["backend_label"], r["precision"] or "-", STATUS[r["status"]], r["batch"],
                 format_ms(lat.get("p50")), format_ms(lat.get("p90")), format_ms(lat.get("p99")), format_number(r.get("throughput"), ".0f"),
                 format_ms(comp.get("p50")), format_ms(comp.get("p99")), format_ms(nv.get("median")), format_ms(nv.get("p99")),
                 format_number(r.get("energy_mj_per_image"), ".2f")]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    ratios = ratio_rows(rows)
    if ratios:
        lines += ["", "## RM and FT against LP (p50; compute-only where measured)", "",
                  "| Backend and precision | Batch | LP ms | RM ms | FT ms | RM/LP | FT/LP |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {q['variant']} | {q['batch']} | {format_ms(q.get('LP'))} | {format_ms(q.get('RM'))} | {format_ms(q.get('FT'))} | "
                  f"{format_number(q['RM/LP'], '.3f')} | {format_number(q['FT/LP'], '.3f')} |" for q in ratios]
    notes = dict.fromkeys(f"{STATUS[r['status']]} {r['model']} on {r['backend_label']}: {r['error']}"
                          for r in rows if r["status"] != "ok")
    notes.update(dict.fromkeys(f"trtexec on {r['model']} at batch {r['batch']}: {r['trtexec']['error']}"
                               for r in rows if (r.get("trtexec") or {}).get("error")))
    lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines).rstrip() + "\n"
