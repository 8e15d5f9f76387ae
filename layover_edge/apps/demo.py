"""The offline demo: pre-train a small timm backbone on the synthetic source task, then run
the paper's experiment (LP, RM@k from one feature cache, FT from images) on the synthetic
hard-instance target task and write ``results.json`` and ``report.md``.

The source task draws every object in a random colour, so pre-training makes the late layers
colour-invariant while the first stage keeps colour; the target classes differ by colour. That
is the situation the paper targets: the information a target class needs is lost on the way to
the pre-logits and still present in an intermediate stage.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm.auto import tqdm

from layover_edge.core.config import ModelConfig
from layover_edge.core.device import resolve_device
from layover_edge.core.io import write_json
from layover_edge.data.loading import image_loader
from layover_edge.data.synthetic import SyntheticScenes, SyntheticSource
from layover_edge.models import create_timm, resolve_config

from .paper import PaperConfig, run_backbone
from .reports import write_report


@dataclass
class DemoConfig:
    backbone: str = "test_convnext"
    image_size: int = 64
    num_classes: int = 10
    source_classes: int = 21
    source_images: int = 6000
    source_epochs: int = 8
    source_lr: float = 3e-3
    train_images: int = 6000
    val_images: int = 2000
    taps: tuple[int, ...] = (1, 2, 3)
    head_epochs: int = 30
    ft_epochs: int = 10
    batch_size: int = 64
    seed: int = 0

    @classmethod
    def quick(cls) -> "DemoConfig":
        """Seconds instead of minutes: for smoke tests of the whole pipeline."""
        return cls(source_images=256, source_epochs=1, train_images=96, val_images=64, head_epochs=2,
                   ft_epochs=1, image_size=48, batch_size=32)


def rendered(dataset, cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole split through the model's transform once: pre-training then costs no rendering."""
    xs, ys = zip(*((x, y) for x, y, _, _ in image_loader(dataset, cfg.preprocess, 256)))
    return torch.cat(xs), torch.cat(ys)


def pretrain_backbone(dc: DemoConfig, out: Path, device: torch.device, progress: bool) -> dict:
    """Single-label pre-training on the source task; saves a timm-compatible safetensors file."""
    torch.manual_seed(dc.seed)
    model = create_timm(dc.backbone)
    model.reset_classifier(dc.source_classes)
    cfg = resolve_config(ModelConfig(backbone=dc.backbone, num_classes=dc.source_classes, image_size=dc.image_size))
    x, y = rendered(SyntheticSource("train", dc.source_images, dc.image_size, dc.source_classes, dc.seed), cfg)
    xv, yv = rendered(SyntheticSource("val", max(dc.source_images // 6, 32), dc.image_size, dc.source_classes,
                                      dc.seed), cfg)
    steps = (len(x) + dc.batch_size - 1) // dc.batch_size
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=dc.source_lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, dc.source_lr, epochs=dc.source_epochs, steps_per_epoch=steps,
                                                pct_start=0.15)
    g = torch.Generator().manual_seed(dc.seed)
    t0 = time.perf_counter()
    for epoch in range(dc.source_epochs):
        model.train()
        order = torch.randperm(len(x), generator=g)
        for k in tqdm(range(0, len(x), dc.batch_size), desc=f"pre-train epoch {epoch + 1}/{dc.source_epochs}",
                      leave=False, disable=not progress):
            i = order[k:k + dc.batch_size]
            loss = F.cross_entropy(model(x[i].to(device)), y[i].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    seconds = time.perf_counter() - t0
    model.eval()
    with torch.inference_mode():
        pred = torch.cat([model(xv[k:k + 256].to(device)).argmax(1).cpu() for k in range(0, len(xv), 256)])
    path = out / "backbone.safetensors"
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(path))
    return {"weights": str(path), "source_accuracy": 100.0 * (pred == yv).float().mean().item(),
            "seconds": round(seconds, 2)}


def recall_by_size(scores: np.ndarray, dataset: SyntheticScenes) -> dict[str, float]:
    """Recall at 0.5 of the labels whose object is small vs large: where the hard instances are."""
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
    pc = PaperConfig(backbones=[dc.backbone], weights=[source["weights"]], taps=dc.taps, epochs=dc.head_epochs,
                     ft_epochs=dc.ft_epochs, image_size=dc.image_size, batch_size=dc.batch_size, seed=dc.seed,
                     device=str(dev))
    entry, preds = run_backbone(pc, dc.backbone, source["weights"], train_ds, val_ds, out, progress)
    results = {"config": asdict(dc), "source": source,
               "data": {"name": "synthetic", "train_images": len(train_ds), "val_images": len(val_ds),
                        "classes": list(train_ds.classes)},
               **entry,
               "recall_by_size": {name: recall_by_size(p["scores"], val_ds) for name, p in preds.items()},
               "seconds": round(time.perf_counter() - t_start, 1)}
    write_json(out / "results.json", results)
    write_report(results, out)
    return results
