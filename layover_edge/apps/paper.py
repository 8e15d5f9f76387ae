"""The paper's experiments end to end, for a list of backbones on one data set.

Per backbone: extract the feature cache once (train and validation), train LP and RM@k for
every requested tap from it, FT from images, evaluate the best epoch of each on the
validation split, and write the paper's tables (``tables.md``, ``results.json``):

* Table 1: trainable Params (M), mAP, CP, CR, CF1, OP, OR, OF1 per backbone and method (RM = RM@1);
* Table 2: mAP per tap (RM@1, RM@2, ...) beside LP and FT, one column per backbone;
* Table 3: the classes with the largest mean α (RM@1), with their LP and RM AP;
* Table 4: per-class AP, LP vs RM@1, sorted by LP AP, with the difference;

plus the hard-instance gallery and an EigenCAM grid of its first images (Figure 2).
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from layover_edge.core import distributed
from layover_edge.core.config import ModelConfig, TrainConfig
from layover_edge.core.device import resolve_device
from layover_edge.core.errors import LayoverError
from layover_edge.core.io import write_json, write_text
from layover_edge.core.tables import format_table
from layover_edge.data.loading import paper_image_size
from layover_edge.models import count_params, resolve_config
from layover_edge.training.batches import split_batches
from layover_edge.training.features import FeatureCache
from layover_edge.training.loop import predict
from layover_edge.training.metrics import METRIC_KEYS, multilabel_metrics
from layover_edge.training.run import train_run

from .cam import save_cam_grid
from .gallery import hard_instances, save_gallery


@dataclass
class PaperConfig:
    backbones: list[str]
    weights: list[str]            # one per backbone: "pretrained", "none" or a path
    taps: tuple[int, ...] = (1, 2, 3)
    epochs: int = 30              # LP and RM (paper A.2)
    ft_epochs: int = 30           # 0 skips FT (the expensive column)
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


def mean_alpha_per_class(alpha: np.ndarray, targets: np.ndarray) -> list[float]:
    """Mean α over the images that contain each class (the paper's Table 3)."""
    pos = targets > 0
    return [float(alpha[pos[:, k]].mean()) if pos[:, k].any() else float("nan") for k in range(targets.shape[1])]


def run_method(cfg: ModelConfig, tcfg: TrainConfig, train_ds, val_ds, out: Path, cache: Path,
             progress: bool) -> tuple[dict, dict]:
    """Train one method, reload its best epoch, predict the validation split.

    Returns (summary entry for the tables, raw predictions: scores, targets, alpha)."""
    result, model = train_run(cfg, tcfg, train_ds, val_ds, out, cache, progress=progress)
    device = resolve_device(tcfg.device)
    pred = {k: v.numpy() for k, v in predict(model.to(device), split_batches(cfg, tcfg, val_ds, "val", cache, False,
                                                                       progress), device).items()}
    m = multilabel_metrics(pred["scores"], pred["targets"])
    entry = {k: m[k] for k in METRIC_KEYS} | {
        "params_trainable": count_params(cfg)["trainable"], "train_seconds": round(result.seconds, 2),
        "best_epoch": result.best_epoch, "epochs": tcfg.epochs, "AP": dict(zip(cfg.labels, m["AP"])),
        "checkpoint": str(result.checkpoint), "unreadable": result.skipped}
    if "alpha" in pred:
        entry["alpha_mean"] = float(pred["alpha"].mean())
        entry["alpha_per_class"] = dict(zip(cfg.labels, mean_alpha_per_class(pred["alpha"], pred["targets"])))
    return entry, pred


def run_backbone(pc: PaperConfig, backbone: str, weights: str, train_ds, val_ds, out: Path,
                 progress: bool) -> tuple[dict, dict]:
    """One backbone's tables entry, and the raw validation predictions of every method."""
    labels = list(train_ds.classes)
    base = resolve_config(ModelConfig(backbone=backbone, weights=weights, num_classes=len(labels), labels=labels,
                                      image_size=pc.image_size or paper_image_size(backbone), mean=pc.mean,
                                      std=pc.std, interpolation=pc.interpolation))
    tcfg = TrainConfig(epochs=pc.epochs, batch_size=pc.batch_size, num_workers=pc.num_workers, seed=pc.seed,
                       device=pc.device)
    cache, runs = out / "features" / slug(backbone), out / "runs" / slug(backbone)
    methods, taps, preds = {}, {}, {}
    methods["LP"], preds["LP"] = run_method(replace(base, method="lp"), tcfg, train_ds, val_ds, runs / "lp", cache,
                                          progress)
    for tap in pc.taps:  # every tap trains from the same cache
        taps[f"RM@{tap}"], preds[f"RM@{tap}"] = run_method(replace(base, method="rm", tap=tap), tcfg, train_ds, val_ds,
                                                         runs / f"rm{tap}", cache, progress)
    rm_key = "RM@1" if "RM@1" in taps else next(iter(taps))
    methods["RM"] = taps[rm_key]
    if pc.ft_epochs:
        methods["FT"], preds["FT"] = run_method(replace(base, method="ft", tap=pc.taps[0]), replace(tcfg, epochs=pc.ft_epochs),
                                    train_ds, val_ds, runs / "ft", None, progress)
    entry = {"weights": weights, "image_size": base.image_size, "rm": rm_key, "methods": methods, "taps": taps}
    if distributed.is_main():
        rows = np.flatnonzero(FeatureCache(cache / getattr(val_ds, "split", "val")).valid)  # cached rows -> data set index
        hard = hard_instances(preds["LP"]["scores"], preds[rm_key]["scores"], preds["LP"]["targets"], rows,
                              labels, pc.gallery)
        entry["hard_instances"] = hard
        if hard:
            entry["gallery"] = str(save_gallery(val_ds, hard, out / f"gallery_{slug(backbone)}.png"))
            entry["figure2"] = str(figure2(methods["RM"]["checkpoint"], val_ds, hard, out / f"figure2_{slug(backbone)}.png"))
    return entry, preds


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
             "## Table 1: methods (best epoch by validation mAP; RM = RM@1)\n", table1(results),
             "\n## Table 2: mAP by tap\n", table2(results)]
    for bb, entry in results["backbones"].items():
        parts += [f"\n## Table 3: {bb}: classes with the largest mean α ({entry['rm']})\n", table3(entry, top_alpha),
                  f"\n## Table 4: {bb}: per-class AP, LP vs {entry['rm']}, sorted by LP AP\n", table4(entry)]
        if entry.get("gallery"):
            parts += [f"\n![hard instances]({Path(entry['gallery']).name}) ![EigenCAM]({Path(entry['figure2']).name})"]
    return "\n".join(parts) + "\n"
