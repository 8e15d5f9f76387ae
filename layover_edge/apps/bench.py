"""The backbone-name benchmark: LP, RM and FT built from one timm backbone (random weights by
default: the paper's shapes without a download) on every available backend and precision.
``bench_files`` times the user's own files instead; both time through ``timing``.

Every variant goes through the one Backend interface the tagger uses (torch eager / CUDA graph /
torch.compile, ONNX Runtime FP32 and INT8), so the numbers describe what ships.
"""
from __future__ import annotations

import gc
import importlib.util
import logging
import platform
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from layover_edge.core.config import METHODS, ModelConfig
from layover_edge.core.errors import LayoverError
from layover_edge.core.io import save_figure, write_json, write_text
from layover_edge.runtime.base import Backend

from . import timing
from .timing import cpu_name

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
# torch, timm and the models are imported where used: the CLI registers this verb on a device
# install without torch (doctor, build, tag), and a Jetson should not pay torch's import for them.
FORMATS = ("torch", "onnxruntime")
TORCH_MODES = ("eager", "graph", "compile")
# int8: ModelOpt's Q/DQ graph for TensorRT, which ONNX Runtime's CPU provider runs as separate Q and DQ ops
# (accuracy emulation: slower than FP32 there); int8-ort: ONNX Runtime's own QOperator INT8, the CPU speed path.
ONNX_PRECISIONS = ("fp32", "int8", "int8-ort")
ONNX_LABELS = {"fp32": "ONNX Runtime fp32", "int8": "ONNX Runtime int8 TensorRT Q/DQ (accuracy emulation)",
               "int8-ort": "ONNX Runtime int8 QOperator (CPU)"}
MODE_NAMES = {"eager": "eager", "graph": "CUDA graph", "compile": "torch.compile"}


@dataclass(frozen=True)
class Variant:
    """One way to run the model: a format, a precision and (torch) a mode."""

    format: str
    precision: str
    mode: str = "eager"

    @property
    def label(self) -> str:
        if self.format == "torch":
            return f"PyTorch {MODE_NAMES[self.mode]} {self.precision}"
        return ONNX_LABELS[self.precision]


@dataclass
class BenchConfig:
    backbone: str = "test_convnext"
    weights: str = "none"
    image_size: int | None = None
    num_classes: int = 80
    tap: int = 1
    methods: tuple[str, ...] = ("lp", "rm", "ft")  # the paper's comparison; METHODS lists every one
    batches: tuple[int, ...] = (1, 8, 32)
    device: str = "cpu"
    formats: tuple[str, ...] | None = None       # None: every available format
    precisions: tuple[str, ...] | None = None    # None: fp32 (+ int8 ONNX) on CPU, fp16 on CUDA
    modes: tuple[str, ...] | None = None         # torch modes; None: eager (+ graph on CUDA)
    warmup: int = 10
    iters: int = 50
    rounds: int = 5
    calib_images: int = 64
    threads: int | None = None                   # CPU threads for torch and ONNX Runtime (None: their default)
    workdir: Path | None = None                  # where ONNX files go (default: OUT/models)
    seed: int = 0

    def __post_init__(self) -> None:
        bad = set(self.methods) - set(METHODS)
        if bad or not self.methods:
            raise LayoverError(f"unknown methods {sorted(bad)}; choose from {METHODS}")
        if not self.batches or min(self.batches) < 1:
            raise LayoverError("batch sizes must be positive")
        if self.iters < self.rounds or self.rounds < 1 or self.warmup < 0:
            raise LayoverError("need rounds ≥ 1, iters ≥ rounds and warmup ≥ 0")


def environment(device: torch.device) -> dict[str, Any]:
    """Device name and library versions, stored beside every number."""
    import timm
    import torch
    env = {"device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
           "device": str(device), "torch": torch.__version__, "timm": timm.__version__, "numpy": np.__version__,
           "python": platform.python_version(), "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        env["cuda"] = torch.version.cuda
        env["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
    for lib in ("onnxruntime", "triton", "tensorrt"):
        if importlib.util.find_spec(lib) is not None:
            env[lib] = __import__(lib).__version__
    return env


def plan_variants(cfg: BenchConfig, device: torch.device) -> list[Variant]:
    """Every variant requested (or available by default) on this device."""
    from layover_edge.runtime.torch_backend import PRECISIONS
    cuda = device.type == "cuda"
    formats = cfg.formats or tuple(f for f in FORMATS if f == "torch" or importlib.util.find_spec(f) is not None)
    bad = set(formats) - set(FORMATS)
    if bad:
        raise LayoverError(f"unknown formats {sorted(bad)}; choose from {FORMATS}")
    modes = cfg.modes or (("eager", "graph") if cuda else ("eager",))
    if set(modes) - set(TORCH_MODES):
        raise LayoverError(f"unknown torch modes {sorted(set(modes) - set(TORCH_MODES))}; choose from {TORCH_MODES}")
    out = []
    if "torch" in formats:
        precisions = cfg.precisions or (("fp16",) if cuda else ("fp32",))
        out += [Variant("torch", p, m) for p in precisions if p in PRECISIONS for m in modes]
    if "onnxruntime" in formats:
        precisions = cfg.precisions or ONNX_PRECISIONS
        out += [Variant("onnxruntime", p) for p in precisions if p in ONNX_PRECISIONS]
    if not out:
        raise LayoverError("no variant to benchmark: check --formats, --precisions and --modes")
    return out


@dataclass
class Prepared:
    """The three models in memory (torch variants) and, once made, their ONNX files."""

    models: dict[str, tuple[torch.nn.Module, ModelConfig]]
    workdir: Path
    onnx: dict[tuple[str, str], Path] = field(default_factory=dict)


def build_models(cfg: BenchConfig) -> dict[str, tuple[torch.nn.Module, ModelConfig]]:
    """LP, RM, FT of one backbone; the same seed gives all three the same backbone weights."""
    import torch

    from layover_edge.models import build_model, resolve_config
    out = {}
    for method in cfg.methods:
        mc = resolve_config(ModelConfig(backbone=cfg.backbone, num_classes=cfg.num_classes, method=method,
                                        tap=cfg.tap, weights=cfg.weights, image_size=cfg.image_size))
        torch.manual_seed(cfg.seed)
        out[method] = (build_model(mc).eval(), mc)
    return out


def fresh_copy(model: torch.nn.Module, mc: ModelConfig) -> torch.nn.Module:
    """A new model with the same weights: each variant moves its own copy to its device and dtype.
    (Not copy.deepcopy: the backbone's tap hooks are closures over the original module.)"""
    from layover_edge.models import build_model
    clone = build_model(mc, load_weights=False)
    clone.load_state_dict(model.state_dict())
    return clone.eval()


def calibration(info, n: int) -> np.ndarray:
    """INT8 calibration images from the synthetic scenes (real images, not noise), preprocessed."""
    from layover_edge.data import build_dataset
    from layover_edge.data.synthetic import SyntheticScenes
    from layover_edge.export.data import image_arrays
    ds = build_dataset("synthetic", "train", num_images=n, image_size=info.preprocess.image_size,
                       num_classes=min(len(info.labels), SyntheticScenes.MAX_CLASSES))
    return np.concatenate([x for x, _ in image_arrays(ds, info.preprocess, 64, n, progress=False)])


def onnx_file(prep: Prepared, method: str, precision: str, calib_images: int) -> Path:
    """Export (and quantize) through export/: the same files `layover-edge export` writes."""
    key = (method, precision)
    if key in prep.onnx:
        return prep.onnx[key]
    from layover_edge.export.onnx import export_onnx
    from layover_edge.models import save_checkpoint
    fp32 = prep.onnx.get((method, "fp32"))
    if fp32 is None:
        model, mc = prep.models[method]
        ckpt = save_checkpoint(model, mc, prep.workdir / f"{method}-checkpoint")
        fp32 = prep.onnx[(method, "fp32")] = export_onnx(ckpt, prep.workdir / f"{method}.onnx")
    if precision in ("int8", "int8-ort"):
        from layover_edge.export.quantize import quantize_int8, quantize_int8_ort
        from layover_edge.runtime.onnx_backend import OnnxBackend
        images = calibration(OnnxBackend(fp32).info, calib_images)
        quantize = quantize_int8 if precision == "int8" else quantize_int8_ort
        prep.onnx[key] = quantize(fp32, prep.workdir / f"{method}.{precision}.onnx", images)
    return prep.onnx[key]


def open_variant(prep: Prepared, v: Variant, method: str, device: torch.device, cfg: BenchConfig) -> Backend:
    if v.format == "torch":
        from layover_edge.runtime.torch_backend import TorchBackend
        return TorchBackend.from_model(fresh_copy(*prep.models[method]), prep.models[method][1], str(device),
                                       v.precision, v.mode)
    from layover_edge.runtime.onnx_backend import OnnxBackend
    return OnnxBackend(onnx_file(prep, method, v.precision, cfg.calib_images), device=device.type,
                       threads=cfg.threads)


def measure(backends: dict[str, Backend], batch: int, cfg: BenchConfig, device: torch.device,
            image_size: int) -> dict[str, dict]:
    x = np.random.default_rng(cfg.seed).standard_normal((batch, 3, image_size, image_size), np.float32)
    return timing.measure(backends, x, cfg.warmup, cfg.iters, cfg.rounds, device=device.type == "cuda")


def release(backends: dict[str, Backend]) -> None:
    import torch
    backends.clear()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_bench(cfg: BenchConfig, out: Path, progress: bool = True) -> dict:
    """Benchmark every variant × method × batch; write bench.json, bench.md, bench.png into ``out``."""
    import torch
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LayoverError(f"device {cfg.device} requested but CUDA is not available")
    variants = plan_variants(cfg, device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    env = environment(device)
    prep = Prepared(build_models(cfg), Path(cfg.workdir or out / "models"))
    first_cfg = next(iter(prep.models.values()))[1]
    image_size = first_cfg.image_size
    rows: list[dict] = []
    for v in tqdm(variants, desc="variants", disable=not progress):
        base = {"backbone": cfg.backbone, "image_size": image_size, "format": v.format, "variant": v.label,
                "precision": v.precision, "mode": v.mode, "cuda_graph": v.mode == "graph", "env": env}
        backends: dict[str, Backend] = {}
        try:
            for method in cfg.methods:
                backends[method] = open_variant(prep, v, method, device, cfg)
            for batch in cfg.batches:
                timed = measure(backends, batch, cfg, device, image_size)
                rows += [{**base, "method": m.upper(), "batch": batch, "status": "ok", "size_mb": backends[m].model_bytes() / 1e6,
                          "backend": backends[m].metadata(), **timed[m]} for m in cfg.methods]
        except (LayoverError, RuntimeError, torch.cuda.OutOfMemoryError) as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            log.warning("%s failed: %s", v.label, reason)
            done = {(r["method"], r["batch"]) for r in rows if r["variant"] == v.label}
            rows += [{**base, "method": m.upper(), "batch": b, "status": "failed", "error": reason}
                     for m in cfg.methods for b in cfg.batches if (m.upper(), b) not in done]
        finally:
            release(backends)
    from layover_edge.kernels import op
    if op.triton_error:  # RM's fused branch ran as PyTorch ops from that point on
        env["fused_mix_fallback"] = op.triton_error
    result = {"config": {k: (str(val) if isinstance(val, Path) else val) for k, val in cfg.__dict__.items()},
              "environment": env, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "bench.json", result)
    write_text(out / "bench.md", markdown(result))
    result["plot"] = str(plot(result, out / "bench.png") or "")
    return result


def run_any_bench(cfg, out: Path, progress: bool = True) -> tuple[dict, str]:
    """A ``BenchConfig`` (backbone name) or a ``bench_files.FileBenchConfig`` (model files): its
    result and its table."""
    from .bench_files import FileBenchConfig, run_file_bench
    from .bench_files import markdown as files_markdown
    if isinstance(cfg, FileBenchConfig):
        result = run_file_bench(cfg, out, progress)
        return result, files_markdown(result)
    result = run_bench(cfg, out, progress)
    return result, markdown(result)


def format_number(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def format_ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}" if v < 10 else f"{v:.1f}"


def headline(row: dict) -> float:
    """The latency ratios compare: compute-only where measured (GPU), else the predict() latency."""
    return (row.get("compute_ms") or row["latency_ms"])["p50"]


def ratio_rows(rows: list[dict]) -> list[dict]:
    """Per variant and batch: LP, RM, FT p50 and the RM/LP, FT/LP ratios (same process, interleaved).
    A method given twice in one variant (two LP files) has no single number: it gets no ratio."""
    out = []
    keys = dict.fromkeys((r["variant"], r["batch"]) for r in rows if r["status"] == "ok")
    for variant, batch in keys:
        cell = [r for r in rows if r["variant"] == variant and r["batch"] == batch and r["status"] == "ok"]
        count = Counter(r["method"] for r in cell)
        by = {r["method"]: r for r in cell if count[r["method"]] == 1}
        lp = by.get("LP")
        out.append({"variant": variant, "batch": batch, **{m: headline(r) for m, r in by.items()},
                    "RM/LP": headline(by["RM"]) / headline(lp) if lp and "RM" in by else None,
                    "FT/LP": headline(by["FT"]) / headline(lp) if lp and "FT" in by else None})
    return out


def markdown(result: dict) -> str:
    env, c, rows = result["environment"], result["config"], result["rows"]
    libs = ", ".join(f"{k} {env[k]}" for k in ("torch", "onnxruntime", "triton", "tensorrt", "timm", "cuda") if k in env)
    lines = [f"# Latency: LP vs RM vs FT, `{c['backbone']}` at {rows[0]['image_size'] if rows else '?'} px, "
             f"{c['num_classes']} classes", "",
             f"{env['device_name']} ({env['device']}, {env['torch_threads']} torch threads); {libs}; {result['date']}.",
             f"Weights: {c['weights']}. {c['warmup']} warm-up calls, then {c['iters']} timed calls per cell, "
             f"LP/RM/FT interleaved in {c['rounds']} rounds. `predict` = host batch in, probabilities out "
             "(host↔device copies included); `compute` = batch already on the device, CUDA events "
             "(GPU only). Status: ✅ ran, ❌ failed (reason in bench.json).",
             "ONNX Runtime int8 TensorRT Q/DQ runs the graph built for TensorRT (ModelOpt's Q/DQ pairs) on the CPU "
             "provider: it shows INT8 accuracy, not INT8 speed; the CPU INT8 speed path is int8 QOperator.", "",
             "| Method | Format | Precision | CUDA graph | Status | Size (MB) | Batch | p50 ms | p90 ms | p99 ms "
             "| img/s | compute p50 ms | compute p99 ms |",
             "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ok = r["status"] == "ok"
        lat, comp = r.get("latency_ms") or {}, r.get("compute_ms") or {}
        cells = [r["method"], r["variant"], r["precision"], "yes" if r["cuda_graph"] else "no", "✅" if ok else "❌",
                 format_number(r.get("size_mb"), ".1f"), r["batch"], format_ms(lat.get("p50")), format_ms(lat.get("p90")),
                 format_ms(lat.get("p99")), format_number(r.get("throughput"), ".0f"), format_ms(comp.get("p50")), format_ms(comp.get("p99"))]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    ratios = ratio_rows(rows)
    if ratios:
        lines += ["", "## RM and FT against LP (p50; compute-only where measured)", "",
                  "| Variant | Batch | LP ms | RM ms | FT ms | RM/LP | FT/LP |", "|---|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {q['variant']} | {q['batch']} | {format_ms(q.get('LP'))} | {format_ms(q.get('RM'))} | {format_ms(q.get('FT'))} | "
                  f"{format_number(q['RM/LP'], '.3f')} | {format_number(q['FT/LP'], '.3f')} |" for q in ratios]
    failed = {r["variant"]: r["error"] for r in rows if r["status"] != "ok"}
    lines += [""] + [f"- ❌ {k}: {v}" for k, v in failed.items()]
    return "\n".join(lines).rstrip() + "\n"


def plot(result: dict, path: Path) -> Path | None:
    """p50 latency bars (p90 whiskers), one panel per batch size, LP/RM/FT side by side per variant."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = [r for r in result["rows"] if r["status"] == "ok"]
    if not rows:
        return None
    batches = sorted({r["batch"] for r in rows})
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig, axes = plt.subplots(1, len(batches), figsize=(max(5.0, 1.6 * len(variants)) * len(batches) / 1.5, 4.2),
                             squeeze=False)
    width = 0.8 / len(methods)
    for ax, batch in zip(axes[0], batches):
        for j, m in enumerate(methods):
            cells = [next((r for r in rows if r["variant"] == v and r["method"] == m and r["batch"] == batch), None)
                     for v in variants]
            p50 = [headline(r) if r else 0.0 for r in cells]
            p90 = [(r.get("compute_ms") or r["latency_ms"])["p90"] if r else 0.0 for r in cells]
            xs = [i + (j - (len(methods) - 1) / 2) * width for i in range(len(variants))]
            ax.bar(xs, p50, width, label=m, yerr=[[0] * len(p50), [b - a for a, b in zip(p50, p90)]], capsize=2)
        ax.set_xticks(range(len(variants)), variants, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"batch {batch}")
        ax.set_ylabel("p50 latency (ms), whisker p90")
    axes[0][0].legend()
    title = result.get("title") or result["config"]["backbone"]
    fig.suptitle(f"{title} on {result['environment']['device_name']}", fontsize=10)
    return save_figure(fig, path)
