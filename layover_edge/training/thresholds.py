"""Per-class decision thresholds tuned on a labelled split, for tagging.

The heads are trained for ranking (mAP) and come out under-confident at 0.5 after a short
schedule, so a tagger at 0.5 misses most tags. Per class this picks the threshold that
maximises F1, or the lowest one whose precision reaches a floor (for deployments where a wrong
tag costs more than a missing one). A threshold sits halfway between the chosen score and the
next lower one, so a new image scoring between them is decided by neither neighbour alone.

Thresholds are float32 values (the tagger compares float32 probabilities), stored in the
checkpoint's config.json; export, build, tag and parity pick them up from there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

OBJECTIVES = ("f1", "precision")


@dataclass(frozen=True)
class ClassThreshold:
    threshold: float
    positives: int
    precision: float  # on the tuning split, at the threshold; 0 when nothing is predicted
    recall: float
    f1: float
    reached: bool     # False: no threshold meets the precision floor, the class is never tagged


def _operating_points(scores: np.ndarray, labels: np.ndarray):
    """Over the non-ignored images: scores sorted high to low, the index of each tie group's last
    member, the true and predicted positives when everything down to that group is tagged, and
    the number of positives; None when the class has no positive."""
    keep = labels != -1
    s, y = np.asarray(scores, np.float32)[keep], labels[keep] == 1
    if not y.any():
        return None
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
    return s, last, np.cumsum(y)[last], last + 1, int(y.sum())


def _between(s: np.ndarray, last: np.ndarray, i: int) -> np.float32:
    """A float32 threshold that tags group i and everything above it, and nothing below."""
    hi = s[last[i]]
    if i + 1 == len(last):
        return hi
    lo = s[last[i] + 1]
    mid = np.float32((np.float64(hi) + np.float64(lo)) / 2)
    return mid if lo < mid <= hi else hi


def pr_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) at every distinct threshold, high to low; empty without positives."""
    points = _operating_points(scores, labels)
    if points is None:
        return np.zeros(0), np.zeros(0)
    _, _, tp, pred, num_pos = points
    return tp / num_pos, tp / pred


def tune_class(scores: np.ndarray, labels: np.ndarray, objective: str = "f1",
               min_precision: float = 0.9, default: float = 0.5) -> ClassThreshold:
    """One class: ``scores`` float32 probabilities, ``labels`` in {1, 0, -1} (-1 ignored)."""
    points = _operating_points(scores, labels)
    if points is None:
        return ClassThreshold(float(default), 0, 0.0, 0.0, 0.0, True)
    s, last, tp, pred, num_pos = points
    precision, recall, f1 = tp / pred, tp / num_pos, 2 * tp / (num_pos + pred)
    if objective == "f1":
        i = int(np.argmax(f1))  # the first maximum: the highest threshold among equals
    elif objective == "precision":
        ok = np.flatnonzero(precision >= min_precision)
        if len(ok) == 0:
            above_all = np.nextafter(s[0], np.float32(np.inf))
            return ClassThreshold(float(above_all), num_pos, 0.0, 0.0, 0.0, False)
        i = int(ok[-1])  # the most recall at the floor
    else:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    return ClassThreshold(float(_between(s, last, i)), num_pos, float(precision[i]), float(recall[i]),
                          float(f1[i]), True)


def tune_thresholds(scores: Any, targets: Any, objective: str = "f1", min_precision: float = 0.9,
                    default: float = 0.5) -> list[ClassThreshold]:
    """Every class of (num_images, num_classes) scores and {1, 0, -1} targets; classes without a
    positive keep ``default``."""
    s, t = np.asarray(scores, np.float32), np.asarray(targets)
    if s.ndim != 2 or s.shape != t.shape:
        raise ValueError(f"scores {s.shape} and targets {t.shape} must both be (num_images, num_classes)")
    if not 0.0 < min_precision <= 1.0:
        raise ValueError(f"the precision floor must be in (0, 1], got {min_precision}")
    return [tune_class(s[:, c], t[:, c], objective, min_precision, default) for c in range(s.shape[1])]


def plot_thresholds(scores: Any, targets: Any, tuned: list[ClassThreshold], path) -> Any:
    """Every class's precision-recall curve with its chosen operating point, and where the
    thresholds fall; one picture for 10 classes or 80."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from layover_edge.core.io import save_figure
    s, t = np.asarray(scores, np.float32), np.asarray(targets)
    fig, (ax, hist) = plt.subplots(1, 2, figsize=(10, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    for c in range(len(tuned)):
        recall, precision = pr_curve(s[:, c], t[:, c])
        if len(recall):
            ax.plot(recall, precision, color="0.6", lw=0.8, alpha=0.6)
    points = [c for c in tuned if c.positives and c.reached]
    dots = ax.scatter([c.recall for c in points], [c.precision for c in points], c=[c.f1 for c in points],
                      cmap="viridis", vmin=0, vmax=1, s=18, zorder=3)
    fig.colorbar(dots, ax=ax, label="F1 at the chosen threshold")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.01),
           title="precision-recall per class, chosen points")
    hist.hist([c.threshold for c in tuned if c.positives], bins=20, range=(0, 1), color="tab:blue")
    hist.axvline(0.5, color="black", ls="--", lw=1, label="0.5")
    hist.set(xlabel="threshold", ylabel="classes", title="tuned thresholds")
    hist.legend()
    return save_figure(fig, path)
