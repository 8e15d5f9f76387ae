"""The Python API: one object for any model file, and the jobs the CLI verbs run.

    import layover_edge as le
    model = le.load("runs/rm/best")                 # a checkpoint, model.onnx or model.engine
    for p in model.predict(["a.jpg", "b.png"]):     # paths, PIL images or RGB uint8 arrays
        print(p.source, p.tags)                     # [("dog", 0.93), ...] above the thresholds
    le.train("test_convnext", "runs/rm", method="rm", tap=1, data="synthetic", epochs=5)

    with le.start_server("deploy/model.onnx", http_port=0, grpc_port=0, metrics_port=0) as server:
        print(server.client().tag(["photos/"]))      # Triton over gRPC; le.connect(URL) for a running one
    le.bench(["lp.onnx", "rm.onnx", "ft.onnx"], "runs/bench")   # latency per backend, RM/LP and FT/LP

Keyword options go to the library's config classes by name (``ModelConfig``, ``TrainConfig``,
``DataSpec``, ``ExportConfig``, ``ServeConfig``, the bench configs), so every default is the CLI's default, written once.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from layover_edge.core.config import MAX_BATCH, ExportConfig, ModelConfig, ServeConfig, TrainConfig
from layover_edge.core.errors import LayoverError
from layover_edge.data.spec import DataSpec

Image = Any  # a path, a PIL image or an RGB uint8 (H, W, 3) array
ERRORS = ("raise", "skip")  # predict's choices for an unreadable image


@dataclass
class Prediction:
    """One image's result: the tags above their thresholds (highest first) and every probability;
    for an unreadable image (``predict(..., errors="skip")``) ``error`` says why, with no tags and
    no probabilities."""

    source: str
    tags: list[tuple[str, float]]
    probabilities: np.ndarray
    error: str | None = None


def _names(cls) -> set[str]:
    return {f.name for f in fields(cls)}


def _unknown(left: Iterable[str], known: Iterable[str], where: str) -> LayoverError:
    """The error for keywords no config takes, each with the closest known names."""
    import difflib
    known = sorted(known)
    parts = []
    for name in sorted(left):
        close = difflib.get_close_matches(name, known, n=3)
        parts.append(repr(name) + (f" (did you mean {', '.join(close)}?)" if close else ""))
    return LayoverError(f"{where}: unknown keyword {', '.join(parts)}; it takes {', '.join(known)}")


def _split_options(options: dict, where: str, *groups: set[str]) -> list[dict]:
    """``options`` divided among groups of field names, in order; a name no group takes is an error."""
    parts, left = [], dict(options)
    for names in groups:
        parts.append({k: left.pop(k) for k in list(left) if k in names})
    if left:
        raise _unknown(left, set().union(*groups), where)
    return parts


def _config(cls, options: dict, where: str):
    """``cls(**options)``, an unknown keyword named with its close matches."""
    _split_options(options, where, _names(cls))
    return cls(**options)


def _data(data: str | DataSpec, options: dict, where: str) -> DataSpec:
    spec = data if isinstance(data, DataSpec) else DataSpec(name=data)
    _split_options(options, where, _names(DataSpec))
    return replace(spec, **options)


class Model:
    """Any model form behind one object: ``predict`` images, read ``labels`` and ``thresholds``;
    checkpoints also ``export`` and ``evaluate``. ``device`` is ``auto``, ``cpu`` or ``cuda[:N]``;
    ``precision`` and ``mode`` (eager, graph, compile) apply to checkpoints."""

    def __init__(self, path: str | Path, device: str = "auto", precision: str = "fp32", mode: str = "eager"):
        from layover_edge.runtime.factory import open_model
        self.path = Path(path)
        self.backend = open_model(path, device, precision, mode)

    @property
    def labels(self) -> list[str]:
        return list(self.backend.info.labels)

    @property
    def thresholds(self) -> np.ndarray:
        return self.backend.info.threshold_array()

    def predict(self, images: Image | Iterable[Image], threshold: float | None = None, topk: int = 0,
                batch_size: int = 8, errors: str = "raise") -> list[Prediction]:
        """Tags for each image, in order. ``threshold`` overrides the per-class thresholds; ``topk``
        keeps at most that many tags per image (0: all). Every image is read before any is run: an
        unreadable one is a LayoverError naming each (``errors="raise"``), or with ``errors="skip"``
        a Prediction whose ``error`` says why, the others answered as usual."""
        from layover_edge.apps.tag import Preprocessor, chunks, select_tags
        from layover_edge.core import checks
        if threshold is not None:
            checks.probability(threshold, "predict: threshold")
        checks.nonnegative_int(topk, "predict: topk")
        checks.integer(batch_size, "predict: batch_size", 1, MAX_BATCH)
        if errors not in ERRORS:
            raise LayoverError(f"predict: errors must be one of {ERRORS}, got {errors!r}")
        frames = list(_frames(images))
        bad = [(source, rgb) for source, rgb in frames if isinstance(rgb, str)]
        if bad and errors == "raise":
            listed = "; ".join(f"{source}: {why}" for source, why in bad[:3]) + (" ..." if len(bad) > 3 else "")
            raise LayoverError(f"predict: {len(bad)} of {len(frames)} images cannot be read ({listed}); "
                               f"errors=\"skip\" returns the others' predictions with these marked")
        preprocess = Preprocessor(self.backend.info.preprocess)
        thresholds = self.backend.info.threshold_array(threshold)
        done: dict[int, Prediction] = {}
        good = [(i, source, rgb) for i, (source, rgb) in enumerate(frames) if not isinstance(rgb, str)]
        for chunk in chunks(iter(good), batch_size):
            probs = self.backend.predict(preprocess([rgb for _, _, rgb in chunk]))
            tags = select_tags(probs, self.labels, thresholds, topk)
            done |= {i: Prediction(source, t, p) for (i, source, _), t, p in zip(chunk, tags, probs)}
        return [done.get(i) or Prediction(source, [], np.empty(0, np.float32), rgb)
                for i, (source, rgb) in enumerate(frames)]

    def tag(self, sources: list[str], jsonl: str | Path = "-", **options) -> dict:
        """What ``layover-edge tag SOURCES --model PATH`` does: files, folders, videos, cameras."""
        from layover_edge.apps.tag import tag
        _split_options(options, "tag", set(inspect.signature(tag).parameters) - {"backend", "sources", "jsonl"})
        return tag(self.backend, sources, jsonl, **options)

    def _checkpoint(self, what: str) -> Path:
        if self.backend.name != "torch":
            raise LayoverError(f"{what} needs the checkpoint directory, not {self.path}")
        return self.path

    def export(self, out: str | Path, data_root: str | None = None, progress: bool = True, **options) -> dict:
        """ONNX files of this checkpoint (``ExportConfig`` options: int8, fp16, calib_data, ...)."""
        return export(self._checkpoint("export"), out, data_root=data_root, progress=progress, **options)

    def evaluate(self, data: str | DataSpec = "synthetic", split: str | None = None, **options) -> dict:
        return evaluate(self._checkpoint("evaluate"), data, split, **options)


def _frames(images: Image | Iterable[Image]) -> Iterable[tuple[str, np.ndarray | str]]:
    """(source name, RGB uint8 array) for each image; (path, why) for a path that cannot be read."""
    from PIL import Image as PILImage

    from layover_edge.apps.sources import read_image
    from layover_edge.core.images import to_rgb, upright
    if isinstance(images, (str, Path, np.ndarray, PILImage.Image)):
        images = [images]
    elif not isinstance(images, Iterable):
        raise LayoverError(f"predict: expected an image or a list of images (paths, PIL images, RGB uint8 arrays), "
                           f"got {type(images).__name__}")
    for i, im in enumerate(images):
        if isinstance(im, (str, Path)):
            frame = read_image(str(im))
            yield str(im), frame.error or frame.image
            continue
        if isinstance(im, PILImage.Image):  # decoded as an image file is: upright, 16-bit scaled
            source, im = f"image {i}", np.array(to_rgb(upright(im)))
        elif isinstance(im, np.ndarray) and im.ndim == 3 and im.shape[2] == 3 and im.dtype == np.uint8:
            source = f"array {i}"
        else:
            raise LayoverError(f"predict: image {i}: expected a path, a PIL image or an RGB uint8 (H, W, 3) array, "
                               f"got {type(im).__name__}{getattr(im, 'shape', '')}")
        if im.shape[0] == 0 or im.shape[1] == 0:
            raise LayoverError(f"predict: {source} is empty ({im.shape[1]}x{im.shape[0]} pixels)")
        yield source, im


def load(path: str | Path, device: str = "auto", precision: str = "fp32", mode: str = "eager") -> Model:
    """A checkpoint directory (PyTorch), ``.onnx`` (ONNX Runtime) or ``.engine`` (TensorRT)."""
    return Model(path, device, precision, mode)


def train(backbone: str, out: str | Path, data: str | DataSpec = "synthetic", cache: str | Path | None = None,
          resume: bool = False, progress: bool = True, overwrite: bool = False, **options):
    """Train LP / RM / concat / FT (``method``, ``tap``, ``rs``, ``weights``, ``image_size``, ... and
    the recipe: ``recipe``, ``steps``, ``sweep_lrs``, ``budget_s``, ``epochs``, ``batch_size``, ...) as
    ``layover-edge train`` does; returns the run's summary, text and best model (``.summary``,
    ``.text``, ``.model``). ``method="auto"`` selects the best head instead (``select``). A folder
    that holds a run needs ``resume`` or ``overwrite``."""
    from layover_edge.training.run import train as run
    if options.get("method") == "auto":
        if resume:
            raise LayoverError("method='auto' has no resume: run it again, it is deterministic")
        options.pop("method")
        return select(backbone, out, data, cache, progress=progress, overwrite=overwrite, **options)
    cfg, tcfg, train_ds, val_ds = _run_options(backbone, data, options)
    return run(cfg, tcfg, train_ds, val_ds, out, cache, resume, progress, overwrite)


def select(backbone: str, out: str | Path, data: str | DataSpec = "synthetic", cache: str | Path | None = None,
           taps: list[int] | None = None, progress: bool = True, overwrite: bool = False, **options):
    """LP, RM in both mixes and concat at every tap (or ``taps``), each swept from one feature cache,
    the best by validation mAP kept as ``OUT/best`` (``layover-edge train --method auto``); returns a
    ``Selection`` (``.rows``, ``.winner``, ``.checkpoint``, ``.text``)."""
    from layover_edge.training.select import select as run
    cfg, tcfg, train_ds, val_ds = _run_options(backbone, data, options | {"method": "lp"})
    return run(cfg, tcfg, train_ds, val_ds, out, cache, taps, progress=progress, overwrite=overwrite)


def _run_options(backbone: str, data, options: dict):
    """(ModelConfig, TrainConfig, training split, validation split) from the keyword options."""
    from layover_edge.data.loading import paper_image_size
    model_opts, train_opts, data_opts = _split_options(
        options, "train", _names(ModelConfig) - {"backbone", "num_classes", "labels"}, _names(TrainConfig),
        _names(DataSpec))
    spec = _data(data, data_opts, "train")
    train_ds, val_ds = spec.open(spec.split("train")), spec.open(spec.split("val"))
    model_opts.setdefault("image_size", paper_image_size(backbone))
    cfg = ModelConfig(backbone=backbone, num_classes=len(train_ds.classes), labels=list(train_ds.classes),
                      **model_opts)
    return cfg, TrainConfig(**train_opts), train_ds, val_ds


def evaluate(checkpoint: str | Path, data: str | DataSpec = "synthetic", split: str | None = None,
             threshold: float | None = None, batch_size: int = TrainConfig.batch_size, workers: int = 0,
             device: str = "auto", **data_options) -> dict:
    """mAP, CP, CR, CF1, OP, OR, OF1 of a checkpoint on a split (default: the validation split)."""
    from layover_edge.training.evaluate import evaluate as run
    spec = _data(data, data_options, "evaluate")
    return run(checkpoint, spec.open(spec.split("val", split)), threshold, batch_size, workers, device)


def tune_thresholds(checkpoint: str | Path, data: str | DataSpec = "synthetic", split: str | None = None,
                    objective: str = "f1", min_precision: float = 0.9, write: bool = False,
                    plot: str | Path | None = None, device: str = "auto", **data_options) -> dict:
    """Per-class tag thresholds tuned on a labelled split; ``write`` stores them in the checkpoint."""
    from layover_edge.training.evaluate import tune
    spec = _data(data, data_options, "tune_thresholds")
    return tune(checkpoint, spec.open(spec.split("val", split)), objective, min_precision, write, plot,
                device=device, provenance={"data": spec.name})


def export(checkpoint: str | Path, out: str | Path, data_root: str | None = None, progress: bool = True,
           **options) -> dict:
    """model.onnx, model.plugin.onnx and, with ``int8=True`` / ``fp16=True``, the reduced-precision
    graphs (``ExportConfig`` options); returns one row per file."""
    from layover_edge.export.pipeline import export_all
    return export_all(checkpoint, out, _config(ExportConfig, options, "export"), data_root, progress)


def parity(reference: str | Path, candidate: str | Path, data: str, **options) -> dict:
    """Tensor- and task-level parity of ``candidate`` against ``reference`` on ``data``
    (``NAME:SPLIT``); ``result["passed"]`` says whether every gate held."""
    from layover_edge.apps.parity import Gates, run_parity
    takes = set(inspect.signature(run_parity).parameters) - {"reference", "candidate", "data", "gate_overrides"}
    _split_options(options, "parity", takes | _names(Gates))
    return run_parity(reference, candidate, data, **options)


def bench(models: Iterable[str | Path] = (), out: str | Path = "runs/bench", progress: bool = True,
          **options) -> dict:
    """What ``layover-edge bench`` does: with ``models`` (checkpoints, .onnx files, engines, any mix)
    each is timed on every backend here (``FileBenchConfig`` options: batches, device, iters, ...);
    without, LP/RM/FT of one backbone (``BenchConfig`` options). Writes bench.json, bench.md and
    bench.png into ``out``; returns bench.json's content."""
    from layover_edge.apps.bench import BenchConfig, run_any_bench
    from layover_edge.apps.bench_files import FileBenchConfig
    models = tuple(str(m) for m in models)
    cfg = FileBenchConfig(models=models, **options) if models else BenchConfig(**options)
    return run_any_bench(cfg, Path(out), progress)[0]


def serve(model: str | Path, device: str = "auto", precision: str = "fp32", mode: str = "eager", **options) -> dict:
    """What ``layover-edge serve MODEL`` does, in this process: Triton serves the model until SIGINT or
    SIGTERM (``ServeConfig`` options: host, http_port, max_batch, ...); returns its addresses."""
    from layover_edge.apps.serve import serve as run
    from layover_edge.runtime.factory import open_model
    return run(open_model(model, device, precision, mode), _config(ServeConfig, options, "serve"))


def start_server(model: str | Path, device: str = "cpu", env: dict[str, str] | None = None, **options):
    """``layover-edge serve MODEL`` as a child process, ready when this returns; ``.client()`` talks to
    it, ``.stop()`` (or leaving a ``with`` block) shuts it down. Options as ``serve``."""
    from layover_edge.apps.serve_client import ServerProcess
    server = ServerProcess(model, _config(ServeConfig, options, "start_server"), device, env=env)
    server.start()
    return server


def connect(url: str | None = None, protocol: str = "grpc"):
    """A client of a running server (``host:port`` of its gRPC or HTTP endpoint; default: the serve
    defaults on this machine): ``tag`` files and folders, ``tag_bytes`` encoded images,
    ``tag_tensor`` / ``probabilities`` preprocessed batches. LayoverError when no server is live
    there (at once for a closed port, after 10 s for one that never answers)."""
    from layover_edge.apps.serve_client import Client
    s = ServeConfig()
    client = Client(url or f"{s.host}:{s.grpc_port if protocol == 'grpc' else s.http_port}", protocol)
    client.check_live()
    return client
