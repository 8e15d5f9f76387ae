"""What ``last.pt`` holds beyond weights, optimizer and schedule, so an interrupted run resumes to
the same bits: every random generator a step draws from (torch CPU and CUDA, numpy, Python, and the
batches' own shuffling generator, which a resumed LP/RM run used to restart from its seed), and
what the run was (model config, recipe, data fingerprints), so a ``--resume`` with other options is
refused, naming what differs, before any work.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch

from layover_edge.core.config import ModelConfig, TrainConfig
from layover_edge.core.errors import LayoverError

STATE_KEYS = ("model", "optimizer", "scheduler", "history", "best", "best_epoch", "epoch", "seconds", "run", "rng")


def run_identity(cfg: ModelConfig, tcfg: TrainConfig, data: dict | None = None) -> dict:
    """What a resumed run must share with the run it continues: the model, the recipe (not the device
    or the worker count, which do not change the arithmetic's plan) and, where known, the data."""
    recipe = {k: v for k, v in tcfg.to_dict().items() if k not in ("device", "num_workers")}
    return json.loads(json.dumps({"model": cfg.to_dict(), "train": recipe, "data": data or {}}))


def read_state(path: Path, map_location="cpu", mmap: bool = False) -> dict:
    """The resume state in ``path`` (``weights_only``: tensors and plain containers, never code);
    ``mmap`` reads only what is looked at (the check before a run starts)."""
    if not path.is_file():
        raise LayoverError(f"--resume: no {path} to resume from")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:  # UnpicklingError for code, RuntimeError/EOFError for truncated or foreign files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LayoverError(f"--resume: {path} is not a resume state layover-edge can read ({first[:200]}); "
                           f"start over with --overwrite") from None
    missing = [k for k in STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise LayoverError(f"--resume: {path} is not a layover-edge resume state, or one written by an older "
                           f"version (it lacks {missing}); start over with --overwrite")
    return state


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out |= _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out


def check_resume(state: dict, identity: dict, path: Path, total_steps: int | None = None) -> None:
    """LayoverError unless ``state`` continues the run ``identity`` describes (and, when given, its
    schedule has ``total_steps``)."""
    saved, now = _flat(state["run"]), _flat(identity)
    if not identity["data"]:  # a caller that does not know the data cannot compare it
        saved = {k: v for k, v in saved.items() if not k.startswith("data.")}
    diff = [f"{k} {str(saved.get(k))[:60]} -> {str(now.get(k))[:60]}" for k in sorted(set(saved) | set(now))
            if saved.get(k) != now.get(k)]
    if total_steps is not None and state["scheduler"].get("total_steps") != total_steps:
        diff.append(f"steps {state['scheduler'].get('total_steps')} -> {total_steps} (the training split changed)")
    if diff:
        raise LayoverError(f"--resume: {path} is the state of a run with other options ({'; '.join(diff)}); "
                           f"its learning-rate schedule and data order belong to those: resume with the original "
                           f"options, or start over with --overwrite")


def rng_state(train) -> dict:
    """Every generator a training step can draw from: torch's (CPU, CUDA), numpy's, Python's, and the
    batches' own shuffling generator."""
    np_state = np.random.get_state(legacy=False)
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                       "pos": np_state["state"]["pos"], "has_gauss": np_state["has_gauss"],
                       "gauss": np_state["gauss"]}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    gen = getattr(train, "generator", None)
    if gen is not None:
        state["batches"] = gen.get_state()
    return state


def set_rng_state(train, state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937", "state": {"key": n["key"].numpy().astype(np.uint32),
                                                              "pos": n["pos"]},
                         "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    gen = getattr(train, "generator", None)
    if gen is not None and "batches" in state:
        gen.set_state(state["batches"].cpu())
