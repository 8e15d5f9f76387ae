"""The paper's experiments end to end, for a list of backbones on one data set.

Per backbone: extract the feature cache once (train and validation), train LP, RM@k in each
requested mix (``RM@k`` is the default residual mix, ``RM@k (paper)`` the paper's eq. 5-6) and,
on request, the concat baseline for every requested tap from it, FT from images, evaluate the
best epoch of each on the validation split, and write the paper's tables (``tables.md``,
``results.json``):

* Table 1: trainable Params (M), mAP, CP, CR, CF1, OP, OR, OF1 per backbone and method (RM = RM@1);
* Table 2: mAP per tap (RM@1, RM@2, ...) beside LP and FT, one column per backbone;
* Table 3: the classes with the largest mean α (RM@1), with their LP and RM AP;
* Table 4: per-class AP, LP vs RM@1, sorted by LP AP, with the difference;
* where the data set knows its objects' sizes: AP on small and on large objects, the mAP of the
  hard instances (images holding both a small and a large object), mean α and cost of every method
  and tap;

plus the hard-instance gallery and an EigenCAM grid of its first images (Figure 2). With a time
budget (``budget_s``), FT's epochs are capped to what LP and RM leave, from its first steps timed.
"""
from __future__ import annotations

import math
import re
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from layover_edge.core import distributed
from layover_edge.core.config import MIXES, RECIPES, ModelConfig, TrainConfig
from layover_edge.core.device import resolve_device
from layover_edge.core.errors import LayoverError
from layover_edge.core.io import write_json, write_text
from layover_edge.core.tables import format_table
from layover_edge.data.loading import paper_image_size
from layover_edge.models import count_params, resolve_config
from layover_edge.training.batches import split_batches
from layover_edge.training.evaluate import readable_rows, size_metrics
from layover_edge.training.features import FeatureCache
from layover_edge.training.loop import predict
from layover_edge.training.metrics import METRIC_KEYS, multilabel_metrics
from layover_edge.training.run import train_run
from layover_edge.training.schedule import ft_epochs, plan_ft, stop_before

from .cam import save_cam_grid
from .gallery import hard_instances, save_gallery


@dataclass
class PaperConfig:
    backbones: list[str]
    weights: list[str]            # one per backbone: "pretrained", "none" or a path
    taps: tuple[int, ...] = (1, 2, 3)
    mixes: tuple[str, ...] = MIXES  # RM at every tap in each; the first listed is Table 1's RM
    concat: bool = False          # also the one-tap concat baseline at every tap
    recipe: str = RECIPES[0]      # sweep: heads swept from the cache; paper: A.2 exactly (TrainConfig)
    epochs: int = 30              # LP, RM and concat under the paper's recipe (A.2)
    ft_epochs: int = 30           # FT at most (paper: exactly); 0 skips FT (the expensive column); a budget may cap it
    budget_s: float | None = None  # wall-clock seconds for one backbone: FT gets what the rest leaves
    image_size: int | None = None  # None: the paper's size for BiT (448), else timm's config
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    interpolation: str | None = None
    batch_size: int = 64
    num_workers: int = 0
    seed: int = 0
    device: str = "auto"
    top_alpha: int = 8            # Table 3 lists 8 classes (10 % of COCO's 80)
    gallery: int = 12             # hard instances in the gallery; the first 3 get activation maps


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def rm_name(tap: int, mix: str) -> str:
    """``RM@k`` for the default mix, ``RM@k (paper)`` for the paper's."""
    return f"RM@{tap}" + ("" if mix == MIXES[0] else f" ({mix})")


def mean_alpha_per_class(alpha: np.ndarray, targets: np.ndarray) -> list[float]:
    """Mean α over the images that contain each class (the paper's Table 3)."""
    pos = targets > 0
    return [float(alpha[pos[:, k]].mean()) if pos[:, k].any() else float("nan") for k in range(targets.shape[1])]


def run_method(cfg: ModelConfig, tcfg: TrainConfig, train_ds, val_ds, out: Path, cache: Path,
               progress: bool, on_epoch=None) -> tuple[dict, dict]:
    """Train one method and take its best epoch's predictions on the validation split.

    Returns (summary entry for the tables, raw predictions: scores, targets, alpha)."""
    result, model = train_run(cfg, tcfg, train_ds, val_ds, out, cache, progress=progress, on_epoch=on_epoch)
    if result.predictions is None:  # resumed past its best epoch: predict the split again
        device = resolve_device(tcfg.device)
        result.predictions = predict(model.to(device), split_batches(cfg, tcfg, val_ds, "val", cache, False, progress),
                                     device)
    pred = {k: v.numpy() for k, v in result.predictions.items()}
    m = multilabel_metrics(pred["scores"], pred["targets"])
    sizes = size_metrics(val_ds, pred["scores"], readable_rows(val_ds, result.skipped["val"]), pred["targets"])
    entry = {k: m[k] for k in METRIC_KEYS} | {k: v for k, v in sizes.items() if not k.endswith("per_class")} | {
        "params_trainable": count_params(cfg)["trainable"], "train_seconds": round(result.seconds, 2),
        "best_epoch": result.best_epoch, "epochs": tcfg.epochs, "epochs_run": len(result.history),
        "best_at": (f"step {result.sweep['step']}/{result.sweep['steps']}" if result.sweep
                    else f"epoch {result.best_epoch}/{tcfg.epochs}"),
        **({"sweep": {k: v for k, v in result.sweep.items() if k != "grid"}} if result.sweep else {}),
        "AP": dict(zip(cfg.labels, m["AP"])),
        "checkpoint": str(result.checkpoint), "unreadable": result.skipped}
    if cfg.method in ("rm", "ft"):
        entry["mix"] = cfg.mix
    if "alpha" in pred:
        entry["alpha_mean"] = float(pred["alpha"].mean())
        entry["alpha_per_class"] = dict(zip(cfg.labels, mean_alpha_per_class(pred["alpha"], pred["targets"])))
    return entry, pred


def predict_rate(cache: Path, split: str) -> float:
    """Images per second of the cache's extraction (frozen forward, rendering included)."""
    manifest = FeatureCache(cache / split).manifest
    return manifest["num_images"] / max(manifest.get("seconds") or 1.0, 1e-3)


def run_backbone(pc: PaperConfig, backbone: str, weights: str, train_ds, val_ds, out: Path,
                 progress: bool) -> tuple[dict, dict]:
    """One backbone's tables entry, and the raw validation predictions of every method."""
    t_start = time.perf_counter()
    labels = list(train_ds.classes)
    base = resolve_config(ModelConfig(backbone=backbone, weights=weights, num_classes=len(labels), labels=labels,
                                      image_size=pc.image_size or paper_image_size(backbone), mean=pc.mean,
                                      std=pc.std, interpolation=pc.interpolation))
    tcfg = TrainConfig(recipe=pc.recipe, epochs=pc.epochs, batch_size=pc.batch_size, num_workers=pc.num_workers,
                       seed=pc.seed, device=pc.device)
    cache, runs = out / "features" / slug(backbone), out / "runs" / slug(backbone)
    methods, taps, preds = {}, {}, {}
    heads = 1 + len(pc.taps) * (len(pc.mixes) + bool(pc.concat))
    # One bar over every head (and FT), one line per finished head: the heads' own bars would be hundreds.
    progress = progress and distributed.is_main()
    bar = tqdm(total=heads + bool(pc.ft_epochs), desc=backbone, unit="head", disable=not progress,
               dynamic_ncols=True, file=sys.stderr)

    def stage(name: str, cfg: ModelConfig, stage_tcfg: TrainConfig, run: Path, guard=None) -> tuple[dict, dict]:
        bar.set_description_str(f"{backbone} {name}" + (" (extracting features first)" if not cache.exists() else ""))

        def on_epoch(row: dict) -> bool:  # epoch runs only (FT, --recipe paper); a sweep reports when done
            bar.set_postfix_str(f"epoch {row['epoch']}/{stage_tcfg.epochs}")
            return bool(guard and guard(row))
        done, pred = run_method(cfg, stage_tcfg, train_ds, val_ds, run, cache, False, on_epoch)
        bar.set_postfix_str("")
        bar.update(1)
        if progress:
            alpha = f", mean α {done['alpha_mean']:.2g}" if "alpha_mean" in done else ""
            bar.write(f"{name}: mAP {done['mAP']:.1f}, best at {done['best_at']}, {done['train_seconds']:.1f} s{alpha}",
                      file=sys.stderr)
        return done, pred

    with bar:
        methods["LP"], preds["LP"] = stage("LP", replace(base, method="lp"), tcfg, runs / "lp")
        for tap in pc.taps:  # every tap, mix and baseline trains from the same cache
            for mix in pc.mixes:
                name = rm_name(tap, mix)
                run = runs / (f"rm{tap}" + ("" if mix == MIXES[0] else f"-{mix}"))
                taps[name], preds[name] = stage(name, replace(base, method="rm", tap=tap, mix=mix), tcfg, run)
            if pc.concat:
                taps[f"concat@{tap}"], preds[f"concat@{tap}"] = stage(
                    f"concat@{tap}", replace(base, method="concat", tap=tap), tcfg, runs / f"concat{tap}")
        rm_key = rm_name(1 if 1 in pc.taps else pc.taps[0], pc.mixes[0])
        methods["RM"] = taps[rm_key]
        entry = {"weights": weights, "image_size": base.image_size, "rm": rm_key, "methods": methods, "taps": taps}
        if pc.ft_epochs:
            ft = replace(base, method="ft", tap=pc.taps[0], mix=pc.mixes[0])
            epochs, guard = ft_epochs(replace(tcfg, epochs=pc.ft_epochs), len(train_ds)), None
            ft_tcfg = replace(tcfg, epochs=epochs)
            if pc.budget_s is not None:
                left = pc.budget_s - (time.perf_counter() - t_start)
                entry["ft_plan"] = plan_ft(ft, ft_tcfg, train_ds, val_ds, left, predict_rate(cache, val_split(val_ds)))
                epochs, guard = entry["ft_plan"]["epochs"], stop_before(t_start + pc.budget_s)
            if epochs:  # the cache only gives FT its tap statistics: FT trains from images
                methods["FT"], preds["FT"] = stage("FT", ft, replace(ft_tcfg, epochs=epochs), runs / "ft", guard)
            elif progress:
                bar.write("FT: skipped, the budget leaves no time for one epoch", file=sys.stderr)
    if distributed.is_main():
        rows = np.flatnonzero(FeatureCache(cache / val_split(val_ds)).valid)  # cached rows -> data set index
        hard = hard_instances(preds["LP"]["scores"], preds[rm_key]["scores"], preds["LP"]["targets"], rows,
                              labels, pc.gallery)
        entry["hard_instances"] = hard
        if hard:
            entry["gallery"] = str(save_gallery(val_ds, hard, out / f"gallery_{slug(backbone)}.png"))
            entry["figure2"] = str(figure2(methods["RM"]["checkpoint"], val_ds, hard, out / f"figure2_{slug(backbone)}.png"))
    return entry, preds


def val_split(val_ds) -> str:
    """The cache directory of the validation split (VOC: test)."""
    return getattr(val_ds, "split", "val")


def figure2(checkpoint: str, val_ds, hard: list[dict], path: Path) -> Path:
    """EigenCAM per stage of the RM model for the hardest instances of the first hard class."""
    from layover_edge.models import load_checkpoint
    model, cfg = load_checkpoint(checkpoint)
    first = [h for h in hard if h["class_index"] == hard[0]["class_index"]][:3]
    return save_cam_grid(model, cfg, [val_ds[h["index"]][0] for h in first], first[0]["class_index"], path,
                         titles=[f"LP {h['lp']:.2f}" for h in first])


def run_paper(pc: PaperConfig, train_ds, val_ds, out: str | Path, data_name: str = "",
              progress: bool = True) -> dict:
    """All backbones; writes ``results.json`` and ``tables.md`` into ``out`` (rank 0)."""
    if list(val_ds.classes) != list(train_ds.classes):
        raise LayoverError("the training and validation splits have different class lists")
    if len(pc.weights) != len(pc.backbones):
        raise LayoverError(f"{len(pc.weights)} --weights for {len(pc.backbones)} backbones: give one, or one each")
    out = Path(out)
    t0 = time.perf_counter()
    results = {"config": asdict(pc), "data": {"name": data_name, "train_images": len(train_ds),
                                              "val_images": len(val_ds), "classes": list(train_ds.classes)},
               "backbones": {}}
    for backbone, weights in zip(pc.backbones, pc.weights):
        results["backbones"][backbone], _ = run_backbone(pc, backbone, weights, train_ds, val_ds, out, progress)
    results["seconds"] = round(time.perf_counter() - t0, 1)
    if distributed.is_main():
        write_json(out / "results.json", results)
        write_text(out / "tables.md", tables_markdown(results, pc.top_alpha))
    return results


def _params(n: int) -> str:
    return f"{n / 1e6:.3f}"


def table1(results: dict) -> str:
    rows = {}
    for bb, r in results["backbones"].items():
        for name, m in r["methods"].items():
            rows[f"{bb} {name}" + (f" ({r['rm']})" if name == "RM" else "")] = m | {
                "Res": str(r["image_size"]), "Params (M)": _params(m["params_trainable"])}
    return format_table(rows, ("Res", "Params (M)", *METRIC_KEYS))


def table2(results: dict) -> str:
    bbs = results["backbones"]
    names = ["LP", "FT", *dict.fromkeys(t for r in bbs.values() for t in r["taps"])]
    rows = {n: {bb: (r["methods"].get(n) or r["taps"].get(n) or {}).get("mAP") for bb, r in bbs.items()}
            for n in names}
    return format_table(rows, list(bbs), first="mAP")


SIZE_COLUMNS = ("mAP", "AP small", "AP large", "mAP hard", "mean α", "Params", "train s")


def size_rows(entry: dict) -> dict[str, dict]:
    """One backbone's methods and taps with their object-size AP, gate and cost (``SIZE_COLUMNS``)."""
    rows = {}
    for name, m in {**{k: v for k, v in entry["methods"].items() if k != "RM"}, **entry["taps"]}.items():
        rows[name] = {"mAP": m["mAP"], "AP small": m.get("AP_small"), "AP large": m.get("AP_large"),
                      "mAP hard": m.get("mAP_hard"),
                      "mean α": f"{m['alpha_mean']:.2g}" if "alpha_mean" in m else None,
                      "Params": f"{m['params_trainable']:,}", "train s": m["train_seconds"]}
    return rows


def size_table(results: dict) -> str | None:
    """AP on small and on large objects and hard-instance mAP per backbone, method and tap, with the
    number of hard instances; None without object sizes."""
    rows = {f"{bb} {name}": row for bb, entry in results["backbones"].items() for name, row in size_rows(entry).items()}
    if not any(r["AP small"] is not None for r in rows.values()):
        return None
    hard = {e["methods"]["LP"].get("hard_images") for e in results["backbones"].values()}
    return (format_table(rows, SIZE_COLUMNS) + f"\n\nmAP hard: the mAP over the {', '.join(map(str, sorted(hard)))} "
            f"validation images that hold both a small and a large object.")


def _values(d: dict) -> dict[str, float]:
    """Per-class values with JSON's null (a class without positives) back as NaN."""
    return {k: float("nan") if v is None else v for k, v in d.items()}


def _ascending(d: dict[str, float]) -> list[str]:
    return sorted(d, key=lambda k: (math.isnan(d[k]), d[k]))


def table3(entry: dict, top: int) -> str:
    lp, rm = _values(entry["methods"]["LP"]["AP"]), _values(entry["methods"]["RM"]["AP"])
    alpha = _values(entry["methods"]["RM"]["alpha_per_class"])
    order = _ascending({k: -a for k, a in alpha.items()})[:top]
    return format_table({n: {"mean α": f"{alpha[n]:.4g}", "AP LP": lp[n], "AP RM": rm[n]} for n in order},
                        ("mean α", "AP LP", "AP RM"), first="Class")


def table4(entry: dict) -> str:
    lp, rm = _values(entry["methods"]["LP"]["AP"]), _values(entry["methods"]["RM"]["AP"])
    return format_table({n: {"LP": lp[n], "RM": rm[n], "difference": rm[n] - lp[n]} for n in _ascending(lp)},
                        ("LP", "RM", "difference"), first="Class")


def tables_markdown(results: dict, top_alpha: int = 8) -> str:
    d = results["data"]
    parts = [f"# Paper tables: {d['name']} ({d['train_images']} training, {d['val_images']} validation images, "
             f"{len(d['classes'])} classes)\n",
             "## Table 1: methods (best head, step or epoch by validation mAP; RM = RM@1)\n", table1(results),
             "\n## Table 2: mAP by tap\n", table2(results)]
    sizes = size_table(results)
    if sizes:
        parts += ["\n## Object-size AP, hard-instance mAP, mean α at the best epoch and cost, per method and tap\n",
                  sizes]
    for bb, entry in results["backbones"].items():
        parts += [f"\n## Table 3: {bb}: classes with the largest mean α ({entry['rm']})\n", table3(entry, top_alpha),
                  f"\n## Table 4: {bb}: per-class AP, LP vs {entry['rm']}, sorted by LP AP\n", table4(entry)]
        if entry.get("gallery"):
            parts += [f"\n![hard instances]({Path(entry['gallery']).name}) ![EigenCAM]({Path(entry['figure2']).name})"]
    return "\n".join(parts) + "\n"
