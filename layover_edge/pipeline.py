"""One training run end to end: features from the cache where the method allows it (LP, RM
with the linear RS), images otherwise (FT, pool1d RS), then fit and reload the best epoch."""
from __future__ import annotations

from pathlib import Path

import torch

from .checkpoint import load_checkpoint
from .config import ModelConfig, TrainConfig
from .data import image_loader
from .features import FeatureCache, extract_features
from .models import LayoverModel, build_model
from .train import CachedBatches, FitResult, ImageBatches, fit, resolve_device


def trains_from_cache(cfg: ModelConfig) -> bool:
    return cfg.method == "lp" or (cfg.method == "rm" and cfg.rs == "linear")


def cached_split(cfg: ModelConfig, dataset, split: str, cache_root: Path, tcfg: TrainConfig,
                 progress: bool) -> FeatureCache:
    return extract_features(cfg, dataset, split, cache_root / split, tcfg.batch_size,
                            str(resolve_device(tcfg.device)), tcfg.num_workers, progress)


def batches(cfg: ModelConfig, tcfg: TrainConfig, dataset, split: str, cache_root: Path | None,
            shuffle: bool, progress: bool):
    """The split as training/validation batches: cached features or images."""
    if cache_root is not None and trains_from_cache(cfg):
        cache = cached_split(cfg, dataset, split, cache_root, tcfg, progress)
        p, z, y = cache.tensors(cfg.tap if cfg.method == "rm" else None)
        return CachedBatches(p, z, y, tcfg.batch_size, shuffle, tcfg.seed)
    return ImageBatches(image_loader(dataset, cfg, tcfg.batch_size, shuffle, tcfg.num_workers, seed=tcfg.seed))


def train_run(cfg: ModelConfig, tcfg: TrainConfig, train_ds, val_ds, out: Path, cache_root: Path | None,
              resume: bool = False, progress: bool = True) -> tuple[FitResult, LayoverModel]:
    """Build, train and return the fit result with the best epoch's model loaded."""
    torch.manual_seed(tcfg.seed)
    model = build_model(cfg)
    train = batches(cfg, tcfg, train_ds, "train", cache_root, True, progress)
    val = batches(cfg, tcfg, val_ds, "val", cache_root, False, progress)
    result = fit(model, cfg, tcfg, train, val, out, resume=resume, progress=progress)
    best, _ = load_checkpoint(result.checkpoint)
    return result, best
