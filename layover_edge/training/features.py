"""The feature cache: the frozen backbone runs once per image and every head trains from here.

A cache directory holds, per image, the mean-pooled output of every stage tap and the
pre-logits z (float16 ``.npy`` files, memory-mapped), the targets, and a validity mask for
images that could not be read. ``manifest.json`` names what produced it (backbone, weights,
transform, data set fingerprint); a cache whose manifest differs from the request is refused.
Extraction records its progress after every batch, so an interrupted run resumes where it
stopped. The arrays are allocated on disk before any row is written (a full disk is an ENOSPC error
up front, not a SIGBUS in a memory-mapped write), one process at a time extracts into a directory,
and a cache is checked when read: every array readable, of the manifest's shape and dtype, and
finite.
"""
from __future__ import annotations

import os
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from layover_edge.core import distributed
from layover_edge.core.config import ModelConfig
from layover_edge.core.errors import LayoverError
from layover_edge.core.io import exclusive, read_json, sha256, write_json
from layover_edge.data.loading import Skipped, image_loader, skipped_report
from layover_edge.kernels.reference import pool
from layover_edge.models import build_backbone, resolve_config, weights_path

VERSION = 1
# A channel's σ is at least this fraction of the mean σ over channels: a channel that barely varies
# over the training split (a dead ReLU) must not turn W_rs/σ into an amplifier of rounding noise.
STD_FLOOR = 1e-3


def weights_id(cfg: ModelConfig) -> str:
    """What identifies the backbone weights: the timm tag, 'none', or the weights file's sha256."""
    if cfg.weights in ("pretrained", "none"):
        return f"{cfg.weights}:{cfg.backbone}"
    return f"sha256:{sha256(weights_path(cfg.weights))}"


def manifest_for(cfg: ModelConfig, dataset, split: str) -> dict:
    return {
        "version": VERSION,
        "backbone": cfg.backbone,
        "weights": weights_id(cfg),
        "image_size": cfg.image_size,
        "mean": list(cfg.mean),
        "std": list(cfg.std),
        "interpolation": cfg.interpolation,
        "dataset": dataset.fingerprint(),
        "split": split,
        "num_images": len(dataset),
        "classes": list(dataset.classes),
    }


def array_shapes(manifest: dict) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """name -> (shape, dtype) of every array of a cache, from its manifest."""
    n, k, f16 = manifest["num_images"], len(manifest["classes"]), np.dtype(np.float16)
    shapes = {f"tap{t}": ((n, c), f16) for t, c in zip(manifest["taps"], manifest["tap_channels"])}
    return shapes | {"z": ((n, manifest["num_features"]), f16), "targets": ((n, k), np.dtype(np.int8)),
                     "valid": ((n,), np.dtype(bool))}


def _load_array(root: Path, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A cache array, memory-mapped; LayoverError naming the file unless it is readable and of the
    manifest's shape and dtype (a truncated, foreign or pickled file is never used)."""
    path = root / f"{name}.npy"
    try:
        a = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise LayoverError(f"feature cache {root} lacks {path.name}; delete the directory and extract again") from None
    except (ValueError, OSError, EOFError) as e:
        raise LayoverError(f"feature cache file {path} is unreadable (truncated or not written by layover-edge: "
                           f"{e}); delete {root} and extract again") from None
    if a.shape != shape or a.dtype != dtype:
        raise LayoverError(f"feature cache file {path} holds {a.dtype} {a.shape}, its manifest says {dtype} "
                           f"{shape}; delete {root} and extract again")
    return a


class FeatureCache:
    """Read side of a finished cache: ``tensors(tap)`` gives (pooled tap, z, targets) rows."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.manifest = read_json(self.root / "manifest.json")
        if not self.manifest.get("complete"):
            raise LayoverError(f"feature cache {self.root} is incomplete; run extraction again to resume")
        try:
            self.shapes = array_shapes(self.manifest)
        except (KeyError, TypeError) as e:
            raise LayoverError(f"feature cache manifest {self.root / 'manifest.json'} is malformed ({e!r})") from None
        self.valid = np.asarray(self._array("valid"))
        self.skipped = read_json(self.root / "skipped.json")

    @property
    def taps(self) -> list[int]:
        return list(self.manifest["taps"])

    def _array(self, name: str) -> np.ndarray:
        return _load_array(self.root, name, *self.shapes[name])

    def _rows(self, name: str, keep: np.ndarray) -> torch.Tensor:
        """float32 rows ``keep`` of an array; LayoverError if any is NaN or infinite."""
        t = torch.from_numpy(np.asarray(self._array(name)[keep], dtype=np.float32))
        bad = (~torch.isfinite(t)).any(dim=1).nonzero().flatten()
        if len(bad):
            raise LayoverError(f"feature cache file {self.root / f'{name}.npy'} holds NaN or infinite values in "
                               f"{len(bad)} image row(s), e.g. row {int(keep[bad[0]])}: the cache is corrupt (or the "
                               f"backbone overflows float16); delete {self.root} and extract again")
        return t

    def tensors(self, tap: int | None) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        if tap is not None and tap not in self.taps:
            raise LayoverError(f"tap @{tap} is not in cache {self.root} (has {self.taps})")
        keep = np.flatnonzero(self.valid)
        z = self._rows("z", keep)
        y = torch.from_numpy(np.asarray(self._array("targets")[keep], dtype=np.float32))
        p = None if tap is None else self._rows(f"tap{tap}", keep)
        return p, z, y

    def tap_statistics(self, tap: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std of the pooled tap over the readable images: the standardisation
        a residual RM or concat head trains with (σ floored at STD_FLOOR of the mean σ)."""
        return column_statistics(self.tensors(tap)[0])


def column_statistics(x: torch.Tensor, floor: float = STD_FLOOR) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-column mean and std of ``x`` (rows: images), each std floored at ``floor`` of their mean."""
    x = x.double()
    std = x.std(0) if len(x) > 1 else torch.ones(x.shape[1], dtype=torch.float64)
    return x.mean(0).float(), std.clamp_min(max(floor * float(std.mean()), 1e-12)).float()


def _open_arrays(root: Path, shapes: dict[str, tuple[tuple[int, ...], np.dtype]], fresh: bool) -> dict:
    """The arrays memory-mapped for writing, every block allocated on disk first: a write into a hole
    of a sparse file on a full disk kills the process with SIGBUS, a failed allocation is ENOSPC."""
    mode = "w+" if fresh else "r+"
    arrays = {}
    for name, (shape, dt) in shapes.items():
        path = root / f"{name}.npy"
        try:
            arrays[name] = np.lib.format.open_memmap(path, mode=mode, dtype=dt, shape=shape)
            fd = os.open(path, os.O_RDWR)
            try:
                os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
            finally:
                os.close(fd)
        except OSError as e:
            raise OSError(e.errno, e.strerror or str(e), str(path)) from None
    return arrays


def _progress_name(rank: int, world: int) -> str:
    return "progress.json" if world == 1 else f"progress.{rank}of{world}.json"


def _read_progress(root: Path, world: int) -> dict[int, dict]:
    """Per-rank progress of an interrupted extraction; refuses one left by another process count."""
    states = {}
    for f in sorted(root.glob("progress*.json")):
        state = read_json(f)
        names = {_progress_name(r, world): r for r in range(world)}
        if f.name in names:
            states[names[f.name]] = state
        elif state.get("done", 0) > 0:
            raise LayoverError(f"feature cache {root} was partly extracted by a different number of processes "
                               f"({f.name}); resume with that many, or delete the directory")
    return states


def extract_features(cfg: ModelConfig, dataset, split: str, root: str | Path, batch_size: int = 64,
                     device: str = "cpu", num_workers: int = 0, progress: bool = True) -> FeatureCache:
    """Run the backbone over ``dataset`` once and store every stage tap; resumes if interrupted.

    Under torchrun every rank extracts every N-th image into the shared arrays (one machine:
    the ranks' writes meet in its page cache) and rank 0 finalises the cache after a barrier.
    Rank 0 holds the directory's lock while it extracts: a second job extracting into it is refused
    (reading a complete cache needs no lock; it is never written again).
    """
    root = Path(root)
    manifest = root / "manifest.json"
    complete = manifest.is_file() and read_json(manifest).get("complete")
    with exclusive(root, "feature cache") if distributed.is_main() and not complete else nullcontext():
        return _extract(cfg, dataset, split, root, batch_size, device, num_workers, progress)


@torch.inference_mode()
def _extract(cfg: ModelConfig, dataset, split: str, root: Path, batch_size: int, device: str, num_workers: int,
             progress: bool) -> FeatureCache:
    cfg = resolve_config(cfg)
    with torch.device("meta"):  # stage shapes without loading any weights
        meta = build_backbone(cfg, taps=None, load_weights=False)
    taps = meta.taps
    want = manifest_for(cfg, dataset, split) | {"taps": taps, "tap_channels": meta.tap_channels,
                                                 "num_features": meta.num_features}
    n = len(dataset)
    if n == 0:
        raise LayoverError(f"split {split!r} of the data set is empty")
    world, me = distributed.world_size(), distributed.rank()
    states: dict[int, dict] = {}
    have_file = root / "manifest.json"
    if have_file.is_file():
        have = read_json(have_file)
        diff = sorted(key for key in want if have.get(key) != want[key])
        if diff:
            raise LayoverError(f"feature cache {root} was made for something else (differs in: "
                               f"{', '.join(diff)}); choose another --cache directory or delete it")
        if have.get("complete"):
            return FeatureCache(root)
        states = _read_progress(root, world)
    fresh = not any(s.get("done", 0) for s in states.values())
    done = int(states.get(me, {}).get("done", 0))
    skipped = Skipped([tuple(s) for s in states.get(me, {}).get("skipped", [])])
    backbone = build_backbone(cfg, taps=None).to(device).eval()
    f16 = np.dtype(np.float16)
    shapes = array_shapes(want)
    distributed.barrier()  # every rank has read the old state before rank 0 replaces it
    if distributed.is_main():
        root.mkdir(parents=True, exist_ok=True)
        if fresh:
            _open_arrays(root, shapes, fresh=True)
            write_json(have_file, want | {"complete": False})
    distributed.barrier()
    arrays = _open_arrays(root, shapes, fresh=False)

    indices = distributed.shard(list(range(n)))[done:]
    mine = len(indices) + done
    loader = image_loader(torch.utils.data.Subset(dataset, indices), cfg.preprocess, batch_size,
                          num_workers=num_workers)
    bar = tqdm(total=mine, initial=done, desc=f"features {split}" + (f" (rank 0 of {world})" if world > 1 else ""),
               unit="img", disable=not progress or me != 0)
    t0 = time.perf_counter()
    progress_file = root / _progress_name(me, world)
    for x, y, idx, bad in loader:
        for i, reason in bad:
            skipped.add(indices[i], reason)
        count = len(idx) + len(bad)
        if x is not None:
            rows = np.array([indices[i] for i in idx.tolist()])
            outs, z = backbone(x.to(device))
            for t, h in zip(taps, outs):
                arrays[f"tap{t}"][rows] = pool(h, backbone.layout(h)).cpu().numpy().astype(f16)
            arrays["z"][rows] = z.float().cpu().numpy().astype(f16)
            arrays["targets"][rows] = y.numpy().astype(np.int8)
            arrays["valid"][rows] = True
        done += count
        for a in arrays.values():
            a.flush()
        write_json(progress_file, {"done": done, "skipped": skipped.items})
        bar.update(count)
    bar.close()
    distributed.barrier()
    if distributed.is_main():
        merged = sorted(tuple(s) for state in _read_progress(root, world).values() for s in state.get("skipped", []))
        write_json(root / "skipped.json", skipped_report(dataset, merged))
        write_json(have_file, want | {"complete": True, "seconds": round(time.perf_counter() - t0, 3),
                                      "skipped": len(merged), "processes": world})
    distributed.barrier()
    return FeatureCache(root)
