"""The demo's Markdown report and its per-class AP plot (the paper's tables come from paper.py)."""
from __future__ import annotations

from pathlib import Path

from layover_edge.core.io import save_figure, write_text
from layover_edge.core.tables import format_table

from .paper import size_table, table1, table2, table3, table4


def plot_per_class_ap(ap_lp: dict[str, float], ap_rm: dict[str, float], rm_name: str, path: Path) -> Path | None:
    """Bar chart of per-class AP, LP vs RM, classes sorted by LP AP (the paper's Table 4 as a picture)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    names = sorted(ap_lp, key=lambda k: ap_lp[k] or 0.0)
    x = range(len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(names)), 4.2))
    ax.bar([i - 0.2 for i in x], [ap_lp[n] or 0.0 for n in names], width=0.4, label="LP")
    ax.bar([i + 0.2 for i in x], [ap_rm[n] or 0.0 for n in names], width=0.4, label=rm_name)
    ax.set_xticks(list(x), names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("AP (%)")
    ax.set_title(f"Per-class AP, LP vs {rm_name} (sorted by LP)")
    ax.legend()
    return save_figure(fig, path, dpi=120)


def _backbone_text(results: dict) -> str:
    cfg, src = results["config"], results["source"]
    if src:
        return (f"Backbone `{cfg['backbone']}` pre-trained on the synthetic source task ({cfg['source_images']} images, "
                f"{cfg['source_epochs']} epochs, {src['seconds']} s, source validation accuracy "
                f"{src['source_accuracy']:.1f}%), then frozen for LP, RM and concat.")
    return (f"Backbone `{cfg['backbone']}` with the ImageNet weights `--weights {cfg['weights']}`, frozen for LP, RM "
            f"and concat.")


def _ft_text(results: dict) -> str:
    plan, methods = results.get("ft_plan"), results["methods"]
    if plan is None:
        return f"FT ran its {methods['FT']['epochs']} epochs." if "FT" in methods else "FT did not run."
    timing = (f"{plan['epoch_s']} s per epoch measured from its first steps ({plan['step_s']} s per batch), "
              f"{plan['budget_s']} s of the budget left")
    if not plan["epochs"]:
        return f"**FT did not run: not one epoch fits the time budget** ({timing})."
    ran = methods["FT"]["epochs_run"] if "FT" in methods else plan["epochs"]
    stopped = (f"; the budget stopped it after epoch {ran} of the {plan['epochs']} planned, the machine having "
               f"slowed down" if ran < plan["epochs"] else "")
    short = ran < plan["requested_epochs"]
    return (f"FT trained {ran} of {plan['requested_epochs']} epochs, what the time budget allows ({timing}{stopped})"
            + (": **FT is under-trained**, its numbers are a floor, not what FT reaches." if short else "."))


def _headline(results: dict) -> str:
    methods, lp = results["methods"], results["methods"]["LP"]
    rm = methods["RM"]
    line = (f"**{results['rm']} {'beats' if rm['mAP'] > lp['mAP'] else 'does not beat'} LP by "
            f"{rm['mAP'] - lp['mAP']:+.1f} mAP points**")
    if rm.get("AP_small") is not None:
        line += f" ({rm['AP_small'] - lp['AP_small']:+.1f} on small objects, {rm['AP_large'] - lp['AP_large']:+.1f} on large)"
    line += (f", mean α {rm['alpha_mean']:.2f}, with {(rm['params_trainable'] - lp['params_trainable']) / 1e6:.3f} M "
             f"more trainable parameters")
    if "FT" in methods:
        line += f"; FT reaches {methods['FT']['mAP']:.1f} mAP training everything"
    return line + "."


def write_report(results: dict, out: Path) -> Path:
    cfg, methods = results["config"], results["methods"]
    lp, rm, rm_name = methods["LP"], methods["RM"], results["rm"]
    tables = {"backbones": {cfg["backbone"]: results}}
    cost = format_table({k: {"Params (M)": f"{v['params_trainable'] / 1e6:.3f}", "train s": v["train_seconds"],
                             "best at": v["best_at"]} for k, v in methods.items()},
                        ("Params (M)", "train s", "best at"))
    sizes = size_table(tables)
    plot = plot_per_class_ap(lp["AP"], rm["AP"], rm_name, out / "per_class_ap.png")
    text = f"""# layover-edge demo: LP vs RM vs FT on synthetic hard instances

{_backbone_text(results)} Target: {cfg['num_classes']} classes, {cfg['train_images']} training and
{cfg['val_images']} validation images at {cfg['image_size']} px, each with one large and 1-4 small objects.
Whole demo: {results['seconds']} s. {_ft_text(results)}

{_headline(results)}

## Table 1: methods (best head, step or epoch by validation mAP)

{table1(tables)}

## Cost

{cost}

## Table 2: mAP by tap

{table2(tables)}
"""
    if sizes:
        text += f"""
## AP on small and on large objects, hard-instance mAP, mean α at the best epoch, per method and tap

{sizes}
"""
    text += f"""
## Table 3: classes with the largest mean α ({rm_name})

{table3(results, 8)}

## Table 4: per-class AP, LP vs {rm_name}, sorted by LP AP

{table4(results)}
"""
    if plot:
        text += "\n![per-class AP](per_class_ap.png)\n"
    if results.get("gallery"):
        text += (f"\n## Hard instances: the true labels LP scores lowest, with RM's scores\n\n"
                 f"![hard instances]({Path(results['gallery']).name}) ![EigenCAM]({Path(results['figure2']).name})\n")
    path = out / "report.md"
    write_text(path, text)
    return path
