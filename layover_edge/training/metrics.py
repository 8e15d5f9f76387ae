"""Multi-label classification metrics in the conventions of the paper's tables.

The paper (and its official code, LT-ML) uses ML-GCN's ``AveragePrecisionMeter``:
mAP is the mean over classes of per-class AP; CP, CR, CF1, OP, OR, OF1 count a label
as predicted when its probability is >= 0.5 (logit >= 0). Differences from that code,
all deliberate:

* AP equals scikit-learn's ``average_precision_score``: runs of equal scores form one
  threshold, so the result does not depend on the order of tied images (ML-GCN and
  ASL break ties by sort order).
* Targets use 1 = positive, 0 = negative, -1 = ignored (VOC "difficult"). Ignored
  entries count in neither AP nor the threshold metrics (ML-GCN ignores them in AP but
  counts them as negatives in CP/CR/OP/OR).
* A class with no positives has no defined AP or recall. It is reported in
  ``excluded_classes`` and left out of mAP, CP and CR (ML-GCN divides by zero; ASL
  counts AP = 0). Its false positives still count in OP.
* CF1 = 2·CP·CR / (CP + CR), the harmonic mean of the class averages (ML-GCN, LT-ML).
  ASL and ML-Decoder report the *mean of per-class F1* instead, which is never larger;
  numbers from those papers are not directly comparable.

Object-size metrics (``size_ap``), for data sets that know their objects' sizes (small, medium,
large: COCO's area ranges, see ``data.coco``): for class c and size S (small or large) the positives
are the images holding a c object of size S, the images holding c only at other sizes are ignored,
the negatives (images without c) are unchanged; AP_S(c) is the ordinary AP over that column and
small (large) AP the mean over the classes with such positives. It answers how well the images with
a *small* c rank against the images without c. The *hard instances* are the images holding both a
small and a large object, of any classes (the paper's pilot study); hard mAP is the ordinary mAP
over that subset of images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

METRIC_KEYS: tuple[str, ...] = ("mAP", "CP", "CR", "CF1", "OP", "OR", "OF1")


def _to_numpy(x: Any) -> np.ndarray:
    """Accept numpy arrays, torch tensors (any device) and nested lists."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _div(num: Any, den: Any) -> np.ndarray:
    """Element-wise ``num / den`` with x/0 -> 0, the guard every metric here uses."""
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    out = np.zeros(np.broadcast_shapes(num.shape, den.shape))
    return np.divide(num, den, out=out, where=den != 0)


def _harmonic(p: float, r: float) -> float:
    return float(_div(2 * p * r, p + r))


def average_precision(scores: Any, targets: Any) -> np.ndarray:
    """Per-class AP, identical to sklearn's ``average_precision_score`` column by column.

    AP = sum over distinct thresholds of (R_n - R_{n-1}) · P_n. Each positive adds
    1/num_pos of recall at the threshold of its score, so AP is the mean over positives
    of the precision at the *last* row of their run of equal scores. Ignored (-1)
    entries add to neither TP nor FP. Returns NaN for classes with no positives.
    """
    s = _to_numpy(scores).astype(np.float64)
    t = _to_numpy(targets)
    order = np.argsort(-s, axis=0, kind="stable")
    s_sorted = np.take_along_axis(s, order, axis=0)
    pos = np.take_along_axis(t == 1, order, axis=0)
    tp = np.cumsum(pos, axis=0)
    seen = np.cumsum(np.take_along_axis(t != -1, order, axis=0), axis=0)  # TP + FP
    n = s.shape[0]
    run_end = np.ones(s.shape, dtype=bool)
    run_end[:-1] = s_sorted[:-1] != s_sorted[1:]
    rows = np.where(run_end, np.arange(n)[:, None], n)
    last_of_run = np.minimum.accumulate(rows[::-1], axis=0)[::-1]
    precision = _div(np.take_along_axis(tp, last_of_run, axis=0), np.take_along_axis(seen, last_of_run, axis=0))
    num_pos = pos.sum(axis=0)
    ap = (precision * pos).sum(axis=0) / np.maximum(num_pos, 1)
    return np.where(num_pos > 0, ap, np.nan)


def multilabel_metrics(scores: Any, targets: Any,
                       threshold: float | Sequence[float] | np.ndarray = 0.5) -> dict[str, Any]:
    """mAP, CP, CR, CF1, OP, OR, OF1 and per-class ``AP`` in percent, plus bookkeeping.

    scores: (num_images, K) probabilities; targets: (num_images, K) in {1, 0, -1};
    threshold: a scalar or one value per class (predicted positive iff score >= it).
    Per class c: Nc = correct positives, Np = predicted positives, Ng = true positives.
    CP = mean_c Nc/Np (Np = 0 -> 0), CR = mean_c Nc/Ng over classes with Ng > 0;
    OP = ΣNc/ΣNp, OR = ΣNc/ΣNg over all classes; every 0/0 is 0.
    """
    s = _to_numpy(scores).astype(np.float64)
    t = _to_numpy(targets)
    if s.ndim != 2 or s.shape != t.shape:
        raise ValueError(f"scores {s.shape} and targets {t.shape} must both be (num_images, num_classes)")
    if not np.isin(t, (-1, 0, 1)).all():
        raise ValueError("targets must be 1 (positive), 0 (negative) or -1 (ignored)")
    thr = np.asarray(threshold, np.float64)
    if thr.ndim > 1 or (thr.ndim == 1 and thr.shape[0] != s.shape[1]):
        raise ValueError(f"threshold must be a scalar or have {s.shape[1]} entries, got shape {thr.shape}")

    gt = t == 1
    pred = (s >= thr) & (t != -1)
    nc, np_, ng = (pred & gt).sum(0), pred.sum(0), gt.sum(0)
    evaluated = ng > 0
    ap = average_precision(s, t)

    def mean(x: np.ndarray) -> float:
        return float(x[evaluated].mean()) if evaluated.any() else 0.0

    cp, cr = mean(_div(nc, np_)), mean(_div(nc, ng))
    op, or_ = float(_div(nc.sum(), np_.sum())), float(_div(nc.sum(), ng.sum()))
    return {
        "mAP": 100 * mean(ap),
        "CP": 100 * cp, "CR": 100 * cr, "CF1": 100 * _harmonic(cp, cr),
        "OP": 100 * op, "OR": 100 * or_, "OF1": 100 * _harmonic(op, or_),
        "AP": (100 * ap).tolist(),
        "excluded_classes": np.flatnonzero(~evaluated).tolist(),
        "num_images": int(s.shape[0]),
        "num_classes_evaluated": int(evaluated.sum()),
    }


def size_ap(scores: Any, targets: Any, small: Any, large: Any) -> dict[str, Any]:
    """``AP_small``, ``AP_large`` with their per-class lists, ``mAP_hard`` (percent; NaN without
    such positives or images) and ``hard_images``, the number of hard instances.

    targets: (num_images, K) in {1, 0, -1}; small, large: (num_images, K) bool, whether image i holds
    a small / large object of class k (``size_masks`` of ``SyntheticScenes`` and ``CocoDataset``).
    An image holding k at both sizes is a positive of both; one holding it only at medium size
    (or with no known size) is ignored in both."""
    s, t = _to_numpy(scores), _to_numpy(targets)
    small, large = _to_numpy(small).astype(bool), _to_numpy(large).astype(bool)
    if not (s.shape == t.shape == small.shape == large.shape):
        raise ValueError(f"scores {s.shape}, targets {t.shape} and size masks {small.shape}, {large.shape} "
                         f"differ in shape")
    if ((small | large) & (t != 1)).any():
        raise ValueError("a size mask marks an object of a class that the image's targets do not hold")
    out: dict[str, Any] = {}
    for name, this in (("small", small), ("large", large)):
        ap = 100 * average_precision(s, np.where(this, 1, np.where(t == 0, 0, -1)))
        out[f"AP_{name}"], out[f"AP_{name}_per_class"] = _mean_over_classes(ap), ap.tolist()
    hard = small.any(axis=1) & large.any(axis=1)
    out["mAP_hard"] = _mean_over_classes(100 * average_precision(s[hard], t[hard]))
    out["hard_images"] = int(hard.sum())
    return out


def _mean_over_classes(ap: np.ndarray) -> float:
    """The mean of per-class AP over the classes that have positives (NaN where none has)."""
    has = ~np.isnan(ap)
    return float(ap[has].mean()) if has.any() else float("nan")
