"""Training and validation batches: cached features (pooled tap, z) where the method allows it
(LP, concat, RM with the linear RS), images otherwise (FT, pool1d RS).

Under torchrun (see ``core.distributed``): image batches are sharded by a DistributedSampler and
the one-process run draws its order from the same sampler, so both see the same images per step.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

import torch
from torch.utils.data import DistributedSampler

from layover_edge.core import distributed
from layover_edge.core.config import ModelConfig, TrainConfig
from layover_edge.core.device import resolve_device
from layover_edge.core.errors import LayoverError
from layover_edge.data.loading import image_loader

from .features import FeatureCache, extract_features

Batch = tuple[tuple[torch.Tensor, ...], torch.Tensor]


class CachedBatches:
    """Mini-batches of cached features (pooled tap, z) with their targets; reshuffled every pass.
    ``skipped`` lists the images extraction could not read, as (index, reason)."""

    def __init__(self, p: torch.Tensor | None, z: torch.Tensor, y: torch.Tensor, batch_size: int,
                 shuffle: bool, seed: int = 0, skipped: list[tuple[int, str]] | None = None):
        if len(z) == 0:
            raise LayoverError("no usable images in this split of the feature cache")
        self.p, self.z, self.y = p, z, y
        self.skipped = list(skipped or [])
        self.batch_size, self.shuffle = batch_size, shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.z) / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.z)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for start in range(0, n, self.batch_size):
            i = order[start:start + self.batch_size]
            yield (self.z[i], self.p[i] if self.p is not None else None), self.y[i]


class ImageBatches:
    """Adapts an ``image_loader`` to (inputs, targets) batches, counting unreadable images.

    ``order`` holds the data set indices of the last pass's rows (to gather sharded
    predictions); ``set_epoch`` reseeds a DistributedSampler, so a resumed run draws the
    same order as an uninterrupted one."""

    def __init__(self, loader):
        self.loader, self.order = loader, []
        self.generator = loader.generator  # seeds the workers each pass: part of the resume state
        self._skipped: dict[int, str] = {}

    @property
    def skipped(self) -> list[tuple[int, str]]:
        return sorted(self._skipped.items())

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.loader.sampler, "set_epoch"):
            self.loader.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        self.order = []
        for x, y, idx, bad in self.loader:
            self._skipped.update(bad)
            if x is not None:
                self.order.append(idx)
                yield (x,), y


def trains_from_cache(cfg: ModelConfig) -> bool:
    return cfg.method in ("lp", "concat") or (cfg.method == "rm" and cfg.rs == "linear")


def cached_split(cfg: ModelConfig, dataset, split: str, cache_root: Path, tcfg: TrainConfig,
                 progress: bool) -> FeatureCache:
    """The cache of ``dataset`` under CACHE/<its split name> (VOC: trainval, test), extracted if needed:
    the same directory ``layover-edge features --split`` writes."""
    split = getattr(dataset, "split", split)
    return extract_features(cfg, dataset, split, cache_root / split, tcfg.batch_size,
                            str(resolve_device(tcfg.device)), tcfg.num_workers, progress)


def image_batches(cfg: ModelConfig, dataset, batch_size: int, shuffle: bool, num_workers: int = 0,
                  seed: int = 0) -> ImageBatches:
    """Images in batches of ``batch_size`` (global: split over torchrun ranks). One process
    draws its order from the same sampler as N, so both see the same images per step."""
    sampler = DistributedSampler(range(len(dataset)), num_replicas=distributed.world_size(),
                                 rank=distributed.rank(), shuffle=shuffle, seed=seed)
    return ImageBatches(image_loader(dataset, cfg.preprocess, distributed.per_rank_batch(batch_size),
                                     num_workers=num_workers, sampler=sampler))


def split_batches(cfg: ModelConfig, tcfg: TrainConfig, dataset, split: str, cache_root: Path | None,
            shuffle: bool, progress: bool):
    """The split as training/validation batches: cached features or images."""
    if cache_root is not None and trains_from_cache(cfg):
        cache = cached_split(cfg, dataset, split, cache_root, tcfg, progress)
        p, z, y = cache.tensors(None if cfg.method == "lp" else cfg.tap)
        return CachedBatches(p, z, y, tcfg.batch_size, shuffle, tcfg.seed,
                             skipped=[(s["index"], s["reason"]) for s in cache.skipped])
    return image_batches(cfg, dataset, tcfg.batch_size, shuffle, tcfg.num_workers, tcfg.seed)
