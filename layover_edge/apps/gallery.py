"""The "hard instances" gallery: validation images whose true labels the linear probe scores
lowest, with the Layover head's score beside them (the paper's Figures 2 and 4: the objects
LP misses are small or occluded, and RM recovers some of them)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from layover_edge.core.io import save_figure


def hard_instances(lp: np.ndarray, rm: np.ndarray, targets: np.ndarray, rows: np.ndarray, classes: list[str],
                   n: int) -> list[dict]:
    """The ``n`` (image, true label) pairs with the lowest LP score, lowest first.

    lp, rm, targets: (num_rows, K) over the same rows; ``rows`` maps a row to its data set index.
    """
    r, k = np.nonzero(targets == 1)
    order = np.lexsort((k, r, lp[r, k]))[:n]  # ties broken by image, then class: deterministic
    return [{"index": int(rows[r[j]]), "class": classes[k[j]], "class_index": int(k[j]),
             "lp": float(lp[r[j], k[j]]), "rm": float(rm[r[j], k[j]])} for j in order]


def save_gallery(dataset, instances: list[dict], path: str | Path, columns: int = 4) -> Path:
    """A PNG grid of the hard instances, each captioned 'class / LP score / RM score'."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = max(1, -(-len(instances) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, inst in zip(axes.flat, instances):
        ax.imshow(dataset[inst["index"]][0])
        ax.set_title(f"{inst['class']}\nLP {inst['lp']:.2f}  RM {inst['rm']:.2f}", fontsize=8)
    fig.suptitle("Hard instances: true labels LP scores lowest", fontsize=9)
    return save_figure(fig, path)
