"""Activation maps at every stage of the backbone (the paper's Figure 2): EigenCAM through the
grad-cam package, saved as a PNG grid (one row per image, one column per stage).

EigenCAM projects a layer's activations on their first principal component, so it needs no
gradient and no class: the map shows what the stage responds to most. The class only picks the
images (ones that contain it) and is printed with the model's score for it, as in the paper.
Stage outputs are NCHW for CNNs, NHWC for Swin (permuted to NCHW) and tokens (B, L, C) for
ViTs (the class token dropped and the rest laid out on the square patch grid).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from layover_edge.core.config import ModelConfig
from layover_edge.core.errors import LayoverError
from layover_edge.core.images import open_rgb
from layover_edge.core.io import save_figure
from layover_edge.data.loading import build_transform
from layover_edge.models import LayoverModel, resolve_config, stage_modules, tap_layout


def to_nchw(timm_model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """grad-cam's ``reshape_transform``: a stage output in its native layout -> (B, C, H, W)."""
    def reshape(t: torch.Tensor) -> torch.Tensor:
        layout = tap_layout(timm_model, t.dim())
        if layout == "NHWC":
            return t.permute(0, 3, 1, 2)
        if layout == "NLC":
            side = math.isqrt(t.shape[1])
            t = t[:, t.shape[1] - side * side:]  # drop class / register tokens in front
            return t.reshape(t.shape[0], side, side, t.shape[2]).permute(0, 3, 1, 2)
        return t
    return reshape


def stage_maps(model: LayoverModel, cfg: ModelConfig, image: Image.Image) -> tuple[list[np.ndarray], torch.Tensor]:
    """EigenCAM map (H, W in [0, 1], at the input resolution) of every stage, and the class probabilities."""
    from pytorch_grad_cam import EigenCAM
    x = build_transform(resolve_config(cfg).preprocess)(image.convert("RGB")).unsqueeze(0).to(next(model.parameters()).device)
    model.eval()
    with torch.no_grad():
        probs = torch.sigmoid(model(x).float())[0].cpu()
    timm_model = model.backbone.model
    layers = dict(timm_model.named_modules())
    maps = []
    for stage in stage_modules(timm_model):
        with EigenCAM(model=model, target_layers=[layers[stage["module"]]], reshape_transform=to_nchw(timm_model)) as cam:
            maps.append(cam(input_tensor=x, targets=None)[0])
    return maps, probs


def save_cam_grid(model: LayoverModel, cfg: ModelConfig, images: list[Image.Image], class_index: int,
                  path: str | Path, titles: list[str] | None = None) -> Path:
    """One row per image: the image, then the EigenCAM overlay of each stage @1..@n."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from pytorch_grad_cam.utils.image import show_cam_on_image
    cfg = resolve_config(cfg)
    if not 0 <= class_index < cfg.num_classes:
        raise LayoverError(f"class index {class_index} out of range for {cfg.num_classes} classes")
    rows = [stage_maps(model, cfg, im) for im in images]
    cols = 1 + len(rows[0][0])
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.2 * cols, 2.3 * len(rows)), squeeze=False)
    for r, (im, (maps, probs)) in enumerate(zip(images, rows)):
        rgb = np.asarray(im.convert("RGB").resize((cfg.image_size, cfg.image_size)), np.float32) / 255
        panels = [rgb] + [show_cam_on_image(rgb, m, use_rgb=True) for m in maps]
        for c, panel in enumerate(panels):
            ax = axes[r][c]
            ax.imshow(panel)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0 and c > 0:
                ax.set_title(f"@{c}", fontsize=9)
        label = titles[r] if titles else ""
        axes[r][0].set_ylabel(f"{cfg.labels[class_index]}\np={probs[class_index]:.2f}" + (f"\n{label}" if label else ""),
                              fontsize=8)
    fig.suptitle(f"EigenCAM per stage, {cfg.backbone} {cfg.method.upper()}", fontsize=9)
    return save_figure(fig, path)


def cam_figure(checkpoint: str | Path, images: list[str], class_name: str, out: str | Path,
               device: str = "auto") -> dict:
    """The EigenCAM grid of ``images`` for a checkpoint, captioned with ``class_name``'s score."""
    from layover_edge.core.device import resolve_device
    from layover_edge.models import load_checkpoint
    model, cfg = load_checkpoint(checkpoint, resolve_device(device))
    if class_name not in cfg.labels:
        raise LayoverError(f"class {class_name!r} is not among the checkpoint's {len(cfg.labels)} labels")
    loaded = []
    for path in images:
        try:
            loaded.append(open_rgb(path))
        except (OSError, ValueError) as e:
            raise LayoverError(f"cannot read image {path}: {e}") from None
    png = save_cam_grid(model, cfg, loaded, cfg.labels.index(class_name), out, titles=[Path(p).name for p in images])
    return {"png": str(png), "class": class_name, "images": list(images),
            "stages": len(stage_modules(model.backbone.model))}
