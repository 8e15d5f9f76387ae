"""A checkpoint scored on a labelled split: the library calls behind ``layover-edge eval`` and
``layover-edge thresholds`` (and ``layover_edge.evaluate``)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from layover_edge.artifacts.checkpoint import set_thresholds
from layover_edge.core import distributed
from layover_edge.core.config import ModelConfig
from layover_edge.core.device import resolve_device
from layover_edge.core.errors import LayoverError
from layover_edge.core.tables import format_table
from layover_edge.data.loading import skipped_report, skipped_text
from layover_edge.models import load_checkpoint

from .batches import image_batches
from .loop import predict
from .metrics import METRIC_KEYS, multilabel_metrics, size_ap
from .thresholds import plot_thresholds, tune_thresholds


@dataclass
class Scored:
    """A checkpoint's probabilities on every readable image of a split."""

    cfg: ModelConfig
    scores: np.ndarray
    targets: np.ndarray
    alpha: np.ndarray | None
    unreadable: list[dict]


def score_split(checkpoint: str | Path, dataset, batch_size: int = 64, workers: int = 0,
                device: str = "auto") -> Scored:
    """Run the checkpoint over ``dataset`` from images (sharded under torchrun, gathered in order)."""
    dev = resolve_device(device)
    model, cfg = load_checkpoint(checkpoint, dev)
    if list(dataset.classes) != cfg.labels:
        raise LayoverError(f"the data set's classes do not match the checkpoint's labels "
                           f"({len(dataset.classes)} vs {len(cfg.labels)} classes)")
    batches = image_batches(cfg, dataset, batch_size, shuffle=False, num_workers=workers)
    pred = predict(model, batches, dev)
    alpha = pred["alpha"].numpy() if "alpha" in pred else None
    return Scored(cfg, pred["scores"].numpy(), pred["targets"].numpy(), alpha,
                  skipped_report(dataset, distributed.gather_skipped(batches.skipped)))


def size_metrics(dataset, scores: np.ndarray, rows, targets: np.ndarray) -> dict:
    """``metrics.size_ap`` where ``dataset`` knows its objects' sizes (``size_masks``), else nothing:
    AP_small, AP_large (and their per-class lists), mAP_hard and hard_images. ``rows`` are the data
    set indices of the score rows, ``targets`` the rows' targets."""
    masks = dataset.size_masks(rows) if hasattr(dataset, "size_masks") else None
    return {} if masks is None else size_ap(scores, targets, *masks)


def readable_rows(dataset, unreadable: list[dict]) -> list[int]:
    """The data set indices of the images that were scored, in order."""
    bad = {u["index"] for u in unreadable}
    return [i for i in range(len(dataset)) if i not in bad]


def evaluate(checkpoint: str | Path, dataset, threshold: float | None = None, batch_size: int = 64,
             workers: int = 0, device: str = "auto") -> dict:
    """mAP, CP, CR, CF1, OP, OR, OF1 (the paper's conventions), per-class AP, AP on small and large
    objects and the mAP of the hard instances where the data set knows its objects' sizes, and, for
    RM, the mean gate α. ``threshold``: one value for every class (default: the checkpoint's, else 0.5)."""
    s = score_split(checkpoint, dataset, batch_size, workers, device)
    thresholds = threshold if threshold is not None else (s.cfg.thresholds or 0.5)
    m = multilabel_metrics(s.scores, s.targets, thresholds)
    m |= size_metrics(dataset, s.scores, readable_rows(dataset, s.unreadable), s.targets)
    m["unreadable"] = s.unreadable
    m["per_class"] = dict(zip(s.cfg.labels, m["AP"]))
    m["method"] = s.cfg.method
    if s.cfg.method in ("rm", "ft"):
        m["mix"] = s.cfg.mix
    if s.alpha is not None:
        m["alpha_mean"] = float(s.alpha.mean())
    return m


def evaluation_text(m: dict, title: str, split: str) -> str:
    extra = ("AP_small", "AP_large", "mAP_hard", "hard_images", "alpha_mean")
    columns = (*METRIC_KEYS, *(k for k in extra if k in m))
    row = m | ({"alpha_mean": f"{m['alpha_mean']:.3g}"} if "alpha_mean" in m else {})
    return (f"{title}: {m['num_images']} images, {len(m['unreadable'])} unreadable\n\n"
            f"{format_table({m['method'].upper(): row}, columns)}" + skipped_text({split: m["unreadable"]}))


def tune(checkpoint: str | Path, dataset, objective: str = "f1", min_precision: float = 0.9, write: bool = False,
         plot: str | Path | None = None, batch_size: int = 64, workers: int = 0, device: str = "auto",
         provenance: dict | None = None) -> dict:
    """Per-class tag thresholds tuned on ``dataset`` (best F1, or the lowest whose precision
    reaches ``min_precision``); ``write`` stores them in the checkpoint, ``plot`` draws the curves."""
    if not 0.0 < min_precision <= 1.0:
        raise LayoverError(f"--min-precision must be in (0, 1], got {min_precision}")
    s = score_split(checkpoint, dataset, batch_size, workers, device)
    tuned = tune_thresholds(s.scores, s.targets, objective, min_precision)
    values = [t.threshold for t in tuned]
    before = multilabel_metrics(s.scores, s.targets, s.cfg.thresholds or 0.5)
    after = multilabel_metrics(s.scores, s.targets, values)
    provenance = (provenance or {}) | {
        "split": getattr(dataset, "split", None), "objective": objective,
        "min_precision": min_precision if objective == "precision" else None, "num_images": after["num_images"]}
    if write and distributed.is_main():
        set_thresholds(checkpoint, values, provenance)
    if plot and distributed.is_main():
        plot_thresholds(s.scores, s.targets, tuned, plot)
    return provenance | {
        "checkpoint": str(checkpoint), "written": bool(write), "plot": str(plot) if plot else None,
        "before": before, "after": after, "unreadable": s.unreadable,
        "never_tagged": [label for label, t in zip(s.cfg.labels, tuned) if not t.reached],
        "per_class": {label: asdict(t) | {"AP": ap} for label, t, ap in zip(s.cfg.labels, tuned, after["AP"])}}


def tuning_text(r: dict, title: str) -> str:
    per_class = format_table(
        {label: {"positives": c["positives"], "AP": c["AP"], "threshold": f"{c['threshold']:.4f}",
                 "P": 100 * c["precision"], "R": 100 * c["recall"], "F1": 100 * c["f1"]}
         for label, c in r["per_class"].items()},
        columns=("positives", "AP", "threshold", "P", "R", "F1"), first="class")
    summary = format_table({"before": r["before"], "tuned": r["after"]}, METRIC_KEYS, first="thresholds")
    text = (f"{title}: {r['after']['num_images']} images, objective {r['objective']}\n\n{per_class}\n\n{summary}\n\n"
            f"Both rows are measured on the split the thresholds were tuned on, so 'tuned' is optimistic; "
            f"report metrics on another split.")
    if r["never_tagged"]:
        text += f"\nNo threshold reaches precision {r['min_precision']} for: {', '.join(r['never_tagged'])} (never tagged)."
    text += (f"\nWrote {len(r['per_class'])} thresholds to {r['checkpoint']}/config.json: tag, export and parity "
             f"use them." if r["written"] else "\nNothing written (add --write to store them in the checkpoint).")
    return text + skipped_text({r["split"]: r["unreadable"]})
