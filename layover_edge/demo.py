"""The offline demo: pre-train a small timm backbone on the synthetic source task, then train
LP, RM and FT on the synthetic hard-instance target task and write the paper-style report.

Everything runs on CPU in minutes: the backbone sees the source task (one large centred
object per image), then stays frozen for LP and RM, which train from one feature cache.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm.auto import tqdm

from .config import ModelConfig, TrainConfig
from .data import image_loader
from .data.synthetic import SyntheticScenes, SyntheticSource
from .io import write_json
from .metrics import multilabel_metrics
from .models import build_backbone, count_params, create_timm
from .models.model import resolve_data_config
from .pipeline import batches, train_run
from .reports import write_report
from .train import predict, resolve_device


@dataclass
class DemoConfig:
    backbone: str = "test_convnext"
    image_size: int = 96
    num_classes: int = 10
    source_classes: int = 21
    source_images: int = 8000
    source_epochs: int = 6
    source_lr: float = 2e-3
    train_images: int = 2000
    val_images: int = 1000
    head_epochs: int = 30
    ft_epochs: int = 10
    batch_size: int = 64
    seed: int = 0

    @classmethod
    def quick(cls) -> "DemoConfig":
        """Seconds instead of minutes: for smoke tests of the whole pipeline."""
        return cls(source_images=256, source_epochs=1, train_images=96, val_images=64, head_epochs=2,
                   ft_epochs=1, image_size=48, batch_size=32)


def pretrain_backbone(dc: DemoConfig, out: Path, device: torch.device, progress: bool) -> dict:
    """Single-label pre-training on the source task; saves a timm-compatible safetensors file."""
    torch.manual_seed(dc.seed)
    model = create_timm(dc.backbone)
    model.reset_classifier(dc.source_classes)
    cfg = ModelConfig(backbone=dc.backbone, num_classes=dc.source_classes, image_size=dc.image_size)
    resolve_data_config(cfg, model)
    train = SyntheticSource("train", dc.source_images, dc.image_size, dc.source_classes, dc.seed)
    val = SyntheticSource("val", max(dc.source_images // 8, 32), dc.image_size, dc.source_classes, dc.seed)
    loader = image_loader(train, cfg, dc.batch_size, shuffle=True, seed=dc.seed)
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=dc.source_lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, dc.source_lr, epochs=dc.source_epochs,
                                                steps_per_epoch=len(loader), pct_start=0.15)
    t0 = time.perf_counter()
    for epoch in range(dc.source_epochs):
        model.train()
        for x, y, _, _ in tqdm(loader, desc=f"pre-train epoch {epoch + 1}/{dc.source_epochs}",
                               leave=False, disable=not progress):
            loss = F.cross_entropy(model(x.to(device)), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    seconds = time.perf_counter() - t0
    model.eval()
    correct = total = 0
    with torch.inference_mode():
        for x, y, _, _ in image_loader(val, cfg, 256):
            correct += (model(x.to(device)).argmax(1).cpu() == y).sum().item()
            total += len(y)
    path = out / "backbone.safetensors"
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(path))
    return {"weights": str(path), "source_accuracy": 100.0 * correct / total, "seconds": round(seconds, 2)}


def mean_alpha_per_class(alpha: np.ndarray, targets: np.ndarray) -> list[float]:
    """Mean α over the images that contain each class (the paper's Table 3)."""
    pos = targets > 0
    return [float(alpha[pos[:, k]].mean()) if pos[:, k].any() else float("nan") for k in range(targets.shape[1])]


def small_object_recall(scores: np.ndarray, dataset: SyntheticScenes) -> dict[str, float]:
    """Recall at 0.5 of labels whose object is small vs large: where the hard instances are."""
    hit = {True: [0, 0], False: [0, 0]}
    for i in range(len(dataset)):
        for obj in dataset.objects(i):
            hit[obj.is_small][0] += int(scores[i, obj.class_index] >= 0.5)
            hit[obj.is_small][1] += 1
    return {"small": 100.0 * hit[True][0] / max(hit[True][1], 1),
            "large": 100.0 * hit[False][0] / max(hit[False][1], 1)}


def run_demo(dc: DemoConfig, out: Path, progress: bool = True, device: str = "auto") -> dict:
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    t_start = time.perf_counter()
    source = pretrain_backbone(dc, out, dev, progress)
    train_ds = SyntheticScenes("train", dc.train_images, dc.image_size, dc.num_classes, dc.seed)
    val_ds = SyntheticScenes("val", dc.val_images, dc.image_size, dc.num_classes, dc.seed)
    labels = list(train_ds.classes)
    base = ModelConfig(backbone=dc.backbone, num_classes=len(labels), labels=labels, weights=source["weights"],
                       image_size=dc.image_size)
    tcfg = TrainConfig(epochs=dc.head_epochs, batch_size=dc.batch_size, seed=dc.seed, device=str(dev))
    cache = out / "features"
    results: dict = {"config": asdict(dc), "source": source, "methods": {}, "taps": {}}

    def evaluate(name: str, cfg: ModelConfig, t: TrainConfig) -> dict:
        result, model = train_run(cfg, t, train_ds, val_ds, out / "runs" / name, cache, progress=progress)
        val = batches(cfg, t, val_ds, "val", cache, False, progress)
        pred = predict(model, val, dev)
        scores, targets = pred["scores"].numpy(), pred["targets"].numpy()
        m = multilabel_metrics(scores, targets)
        entry = {k: m[k] for k in ("mAP", "CP", "CR", "CF1", "OP", "OR", "OF1")}
        entry |= {"params_trainable": count_params(cfg)["trainable"], "train_seconds": round(result.seconds, 2),
                  "best_epoch": result.best_epoch, "epochs": t.epochs,
                  "AP": dict(zip(labels, m["AP"])), "recall_by_size": small_object_recall(scores, val_ds),
                  "checkpoint": str(result.checkpoint)}
        if "alpha" in pred:
            alpha = pred["alpha"].numpy()
            entry["alpha_mean"] = float(alpha.mean())
            entry["alpha_per_class"] = dict(zip(labels, mean_alpha_per_class(alpha, targets)))
        return entry

    results["methods"]["LP"] = evaluate("lp", replace(base, method="lp"), tcfg)
    with torch.device("meta"):
        n_taps = len(build_backbone(replace(base), None, load_weights=False).taps)
    for tap in range(1, n_taps + 1):  # every tap trains from the same cache in seconds
        results["taps"][f"RM@{tap}"] = evaluate(f"rm{tap}", replace(base, method="rm", tap=tap), tcfg)
    results["methods"]["RM"] = results["taps"]["RM@1"]
    results["methods"]["FT"] = evaluate("ft", replace(base, method="ft", tap=1), replace(tcfg, epochs=dc.ft_epochs))
    results["seconds"] = round(time.perf_counter() - t_start, 1)
    write_json(out / "results.json", results)
    write_report(results, out)
    return results
