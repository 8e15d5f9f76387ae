"""Paper-style reports: the demo's Markdown report and its per-class AP plot."""
from __future__ import annotations

import math
from pathlib import Path

from .io import atomic_path, write_text
from .metrics import METRIC_KEYS, format_table


def plot_per_class_ap(ap_lp: dict[str, float], ap_rm: dict[str, float], path: Path) -> Path | None:
    """Bar chart of per-class AP, LP vs RM, classes sorted by LP AP (the paper's Table 4)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    names = sorted(ap_lp, key=lambda k: ap_lp[k])
    x = range(len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(names)), 4.0))
    ax.bar([i - 0.2 for i in x], [ap_lp[n] for n in names], width=0.4, label="LP")
    ax.bar([i + 0.2 for i in x], [ap_rm[n] for n in names], width=0.4, label="RM@1")
    ax.set_xticks(list(x), names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("AP (%)")
    ax.set_title("Per-class AP, LP vs RM (sorted by LP)")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


def _m(params: int) -> str:
    return f"{params / 1e6:.3f}"


def write_report(results: dict, out: Path) -> Path:
    methods, taps = results["methods"], results["taps"]
    lp, rm = methods["LP"], methods["RM"]
    cols = ("Params (M)", *METRIC_KEYS, "train s", "epochs")
    table1 = format_table({k: v | {"Params (M)": _m(v["params_trainable"]), "train s": v["train_seconds"],
                                   "epochs": f"{v['best_epoch']}/{v['epochs']}"} for k, v in methods.items()}, cols)
    table2 = format_table({"LP": lp, **taps, "FT": methods["FT"]}, ("mAP",))
    size = format_table({k: {"small": v["recall_by_size"]["small"], "large": v["recall_by_size"]["large"]}
                         for k, v in methods.items()}, ("small", "large"))
    alpha = sorted(rm["alpha_per_class"].items(), key=lambda kv: -kv[1] if not math.isnan(kv[1]) else math.inf)
    table3 = format_table({name: {"mean α": a, "AP LP": lp["AP"][name], "AP RM": rm["AP"][name]}
                           for name, a in alpha[:8]}, ("mean α", "AP LP", "AP RM"), first="Class")
    order = sorted(lp["AP"], key=lambda k: lp["AP"][k])
    table4 = format_table({n: {"LP": lp["AP"][n], "RM": rm["AP"][n], "Δ": rm["AP"][n] - lp["AP"][n]}
                           for n in order}, ("LP", "RM", "Δ"), first="Class")
    plot = plot_per_class_ap(lp["AP"], rm["AP"], out / "per_class_ap.png")
    delta = rm["mAP"] - lp["mAP"]
    verdict = (f"RM@1 {'beats' if delta > 0 else 'does not beat'} LP by {delta:+.1f} mAP points "
               f"with {_m(rm['params_trainable'] - lp['params_trainable'])} M more trainable parameters.")
    src = results["source"]
    cfg = results["config"]
    text = f"""# layover-edge demo: LP vs RM vs FT on synthetic hard instances

Backbone `{cfg['backbone']}` pre-trained on the synthetic source task ({cfg['source_images']} images,
{cfg['source_epochs']} epochs, {src['seconds']} s, source validation accuracy {src['source_accuracy']:.1f}%),
then frozen for LP and RM. Target: {cfg['num_classes']} classes, {cfg['train_images']} training and
{cfg['val_images']} validation images at {cfg['image_size']} px, each with one large and 1-4 small objects.
Whole demo: {results['seconds']} s.

**{verdict}**

## Table 1: methods (best epoch by validation mAP)

{table1}

## Table 2: mAP by tap

{table2}

## Recall at 0.5 by object size (%)

{size}

## Table 3: classes with the largest mean α (RM@1)

{table3}

## Table 4: per-class AP, LP vs RM@1, sorted by LP AP

{table4}
"""
    if plot:
        text += "\n![per-class AP](per_class_ap.png)\n"
    path = out / "report.md"
    write_text(path, text)
    return path
