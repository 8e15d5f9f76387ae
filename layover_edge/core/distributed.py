"""Many processes under ``torchrun``: process group, rank helpers, sharding and gathering.

``torchrun --nproc-per-node N layover-edge train|features|eval ...`` sets WORLD_SIZE, RANK and
LOCAL_RANK; ``session()`` then joins the group (env:// init; NCCL on GPUs, gloo on CPU) and
pins each process to GPU LOCAL_RANK. Without WORLD_SIZE > 1 everything here is a no-op, so
the same code runs as one process.

What runs where, and why the result equals one process:
* Feature extraction: image i goes to rank i mod N; every rank writes its own rows of the one
  memory-mapped cache (the cache directory must be on a file system all ranks see), and rank 0
  merges the skipped-image lists and finalises the manifest after a barrier.
* Heads from the cache (LP, RM): rank 0 trains alone while the others wait. The job takes
  seconds, so DDP would add communication for nothing, and one process is the 1-process run.
* Training from images (FT, pool1d RS): DistributedDataParallel. ``--batch-size`` is the
  global batch, split evenly over ranks; every run (one process included) draws its order
  from ``DistributedSampler`` with the same seed, so N ranks see exactly the images of the
  1-process batch and the averaged gradient is the same (up to float summation order).
  Exact when the image count is a multiple of N; otherwise the sampler repeats a few images
  to even out the shards. Normalisation layers keep per-rank statistics (the paper's
  backbones use GroupNorm / LayerNorm, which have none).
* Validation / evaluation: each rank predicts its shard, the predictions are gathered and
  put back in data set order, so metrics are computed on exactly the 1-process rows.
"""
from __future__ import annotations

import datetime
import os
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.distributed as dist

from .errors import LayoverError

# Rank 0 trains cached heads while the others wait in a barrier: allow long waits.
TIMEOUT = datetime.timedelta(hours=6)


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


@contextmanager
def session() -> Iterator[None]:
    """Join the torchrun process group for the duration of a command (no-op for one process)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        yield
        return
    if not dist.is_available():
        raise LayoverError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo", init_method="env://", timeout=TIMEOUT)
    try:
        yield
    finally:
        dist.destroy_process_group()


def shard(indices: list[int]) -> list[int]:
    """This rank's share of ``indices``: every N-th, starting at the rank."""
    return indices[rank()::world_size()]


def per_rank_batch(batch_size: int) -> int:
    n = world_size()
    if batch_size % n:
        raise LayoverError(f"--batch-size {batch_size} is the global batch: it must be a multiple of the "
                           f"{n} processes")
    return batch_size // n


def all_gather_objects(obj) -> list:
    if world_size() == 1:
        return [obj]
    out: list = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_rows(tensors: dict[str, torch.Tensor], order: torch.Tensor) -> dict[str, torch.Tensor]:
    """Rows predicted on every rank, back in data set order; rows a padding sampler repeated
    are kept once. ``order`` holds the data set index of each local row."""
    if world_size() == 1:
        return tensors
    parts = all_gather_objects(({k: v.cpu() for k, v in tensors.items()}, order.cpu()))
    index = torch.cat([o for _, o in parts])
    unique, inverse = torch.unique(index, sorted=True, return_inverse=True)
    first = torch.full((len(unique),), len(index), dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(len(index)), reduce="amin")  # first copy of each row
    return {k: torch.cat([p[k] for p, _ in parts])[first] for k in tensors}


def gather_skipped(items: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Every rank's unreadable images, once each, by index."""
    merged = {int(i): r for part in all_gather_objects(list(items)) for i, r in part}
    return sorted(merged.items())
