"""One training run end to end: features from the cache where the method allows it (LP, RM
with the linear RS), images otherwise (FT, pool1d RS), then fit and reload the best epoch.

Under torchrun (see ``distributed``): extraction is sharded over ranks, image batches are
sharded by a DistributedSampler and trained with DDP, cached heads train on rank 0 alone.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DistributedSampler

from . import distributed
from .checkpoint import load_checkpoint
from .config import ModelConfig, TrainConfig
from .data import image_loader, skipped_report
from .features import FeatureCache, extract_features
from .models import LayoverModel, build_model
from .train import CachedBatches, FitResult, ImageBatches, fit, resolve_device


def trains_from_cache(cfg: ModelConfig) -> bool:
    return cfg.method == "lp" or (cfg.method == "rm" and cfg.rs == "linear")


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
    return ImageBatches(image_loader(dataset, cfg, distributed.per_rank_batch(batch_size),
                                     num_workers=num_workers, sampler=sampler))


def batches(cfg: ModelConfig, tcfg: TrainConfig, dataset, split: str, cache_root: Path | None,
            shuffle: bool, progress: bool):
    """The split as training/validation batches: cached features or images."""
    if cache_root is not None and trains_from_cache(cfg):
        cache = cached_split(cfg, dataset, split, cache_root, tcfg, progress)
        p, z, y = cache.tensors(cfg.tap if cfg.method == "rm" else None)
        return CachedBatches(p, z, y, tcfg.batch_size, shuffle, tcfg.seed,
                             skipped=[(s["index"], s["reason"]) for s in cache.skipped])
    return image_batches(cfg, dataset, tcfg.batch_size, shuffle, tcfg.num_workers, tcfg.seed)


def train_run(cfg: ModelConfig, tcfg: TrainConfig, train_ds, val_ds, out: Path, cache_root: Path | None,
              resume: bool = False, progress: bool = True) -> tuple[FitResult, LayoverModel]:
    """Build, train and return the fit result (with the unreadable images of each split) and
    the best epoch's model."""
    torch.manual_seed(tcfg.seed)
    progress = progress and distributed.is_main()
    model = build_model(cfg)
    train = batches(cfg, tcfg, train_ds, "train", cache_root, True, progress)
    val = batches(cfg, tcfg, val_ds, "val", cache_root, False, progress)
    if isinstance(train, CachedBatches) and distributed.world_size() > 1:
        result = fit(model, cfg, tcfg, train, val, out, resume=resume, progress=progress) \
            if distributed.is_main() else None
        result = distributed.all_gather_objects(result)[0]  # rank 0's result, after it finished
    else:
        result = fit(model, cfg, tcfg, train, val, out, resume=resume, progress=progress)
    result.skipped = {split: skipped_report(ds, distributed.gather_skipped(b.skipped))
                      for split, ds, b in (("train", train_ds, train), ("val", val_ds, val))}
    best, _ = load_checkpoint(result.checkpoint)
    return result, best
