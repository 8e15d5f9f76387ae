"""From data set items to model batches: the per-backbone transform, and loading that skips
unreadable images (counted and listed) instead of stopping a long run."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2 as T

from layover_edge.core.config import Preprocess

log = logging.getLogger(__name__)

# BiT-M checkpoints (timm ``resnetv2_*_bit.goog_in21k`` and the old ``*_bitm_in21k`` names) say 224 px
# in timm's pretrained config; the paper and the official code feed them 448. Swin *_384 says 384.
_BIT = re.compile(r"resnetv2_\d+x\d+_bitm?(_in21k)?")


def paper_image_size(backbone: str) -> int | None:
    """The paper's input size for ``backbone`` (448 for BiT), or None: timm's pretrained config."""
    return 448 if _BIT.fullmatch(backbone.split(".")[0]) else None


def build_transform(pre: Preprocess):
    """Resize to a square (the official code's ``Warp``), to float, normalise. Training adds no
    augmentation: the paper found cutout/RandAugment made no difference in 30 epochs."""
    mode = T.InterpolationMode(pre.interpolation)
    return T.Compose([
        T.ToImage(),
        T.Resize((pre.image_size, pre.image_size), interpolation=mode, antialias=True),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(mean=list(pre.mean), std=list(pre.std)),
    ])


class Transformed(Dataset):
    """(image, target) items -> (tensor, target, index); an unreadable image yields None."""

    def __init__(self, dataset, transform):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        try:
            image, target = self.dataset[i]
            if not isinstance(image, Image.Image):
                raise ValueError(f"expected a PIL image, got {type(image).__name__}")
            x = self.transform(image.convert("RGB"))
        except (OSError, ValueError) as e:
            return None, i, str(e)
        return x, torch.as_tensor(target), i


@dataclass
class Skipped:
    """Images that could not be read, with the reason, reported at the end of a run."""

    items: list[tuple[int, str]] = field(default_factory=list)

    def add(self, index: int, reason: str) -> None:
        log.warning("skipping image %d: %s", index, reason)
        self.items.append((index, reason))


def skipped_report(dataset, items: list[tuple[int, str]]) -> list[dict]:
    """Skipped images as ``{index, path, reason}`` rows (path where the data set has files)."""
    path = getattr(dataset, "path", None)
    return [{"index": int(i), **({"path": path(int(i))} if path else {}), "reason": r} for i, r in items]


def skipped_text(skipped: dict[str, list[dict]], where: str = "") -> str:
    """The unreadable images of each split, listed (never silently dropped)."""
    lines = []
    for split, items in skipped.items():
        if items:
            lines.append(f"\n{len(items)} unreadable image(s) skipped in {split}:")
            lines += [f"  {s.get('path', '#' + str(s['index']))}: {s['reason']}" for s in items[:50]]
            if len(items) > 50:
                lines.append(f"  ... and {len(items) - 50} more{where}")
    return "\n".join(lines)


def collate(batch):
    good = [b for b in batch if b[0] is not None]
    bad = [(b[1], b[2]) for b in batch if b[0] is None]
    if not good:
        return None, None, torch.empty(0, dtype=torch.long), bad
    xs, ys, idx = zip(*good)
    return torch.stack(xs), torch.stack(ys), torch.tensor(idx), bad


def image_loader(dataset, pre: Preprocess, batch_size: int, shuffle: bool = False,
                 num_workers: int = 0, sampler=None, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(Transformed(dataset, build_transform(pre)), batch_size=batch_size,
                      shuffle=shuffle and sampler is None, sampler=sampler, num_workers=num_workers,
                      collate_fn=collate, generator=g, persistent_workers=num_workers > 0)
