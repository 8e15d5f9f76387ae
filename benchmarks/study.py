"""The mix study in one command: backbone × tap × method on the synthetic hard-instance task.

    python benchmarks/study.py --out runs/study              # about 30-40 minutes on 2 CPU cores
    python benchmarks/study.py --out runs/study --backbones test_resnet --seeds 0   # a slice

For each backbone: its weights (``test_resnet`` and ``test_convnext`` pre-trained on the synthetic
source task exactly as ``layover-edge demo --toy`` does, 64 px; ``tf_efficientnet_lite0`` with the
ImageNet weights of the efficientnet-lite0 package, 160 px), one feature cache of 3000 training,
1000 validation and 1000 test images (10 classes), then with the paper's recipe (30 epochs, best
epoch by validation mAP) LP, RM in the paper's mix (eq. 5-6), RM in the default residual mix and
the one-tap concat baseline at taps @1-@3 for every seed, and FT (the default RM branch at @1 with
every weight trained; one seed, a few epochs: the expensive column). Every number is measured on
the test split at the best validation epoch: mAP, AP on small and on large objects, the mAP of the
hard instances (images holding both a small and a large object: every synthetic scene, so it equals
mAP here), the mean gate α, trainable parameters, seconds of training (the training loop alone,
validation excluded).

Writes OUT/runs.jsonl (one line per run; a rerun skips the runs it has), OUT/study.md and
OUT/study.json (the tables), and prints the tables. Not run in CI.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from layover_edge.apps.demo import DemoConfig, pretrain_backbone
from layover_edge.core.config import RECIPES, ModelConfig, TrainConfig
from layover_edge.core.device import resolve_device
from layover_edge.core.io import write_json, write_text
from layover_edge.core.tables import format_table
from layover_edge.data.synthetic import SyntheticScenes
from layover_edge.models import count_params, resolve_config
from layover_edge.training.batches import split_batches
from layover_edge.training.evaluate import readable_rows, size_metrics
from layover_edge.training.loop import predict
from layover_edge.training.metrics import multilabel_metrics
from layover_edge.training.run import train_run

# name -> weights ("source": pre-trained on the synthetic source task), image size, FT epochs
BACKBONES = {
    "test_resnet": ("source", 64, 10),
    "test_convnext": ("source", 64, 10),
    "tf_efficientnet_lite0": ("efficientnet-lite0", 160, 2),
}
SPLITS = {"train": 3000, "val": 1000, "test": 1000}
NUM_CLASSES, DATA_SEED = 10, 0
# (method label, ModelConfig fields); taps are added per run
FORMS = {"RM paper": {"method": "rm", "mix": "paper"}, "RM default": {"method": "rm", "mix": "residual"},
         "concat": {"method": "concat"}}
COLUMNS = ("mAP", "small AP", "large AP", "hard mAP", "mean α", "params", "train s")


def backbone_weights(name: str, weights: str, out: Path, device: str) -> str:
    """The weights to use: pre-trained here once for "source" (the demo's recipe), else as given."""
    if weights != "source":
        return weights
    path = out / "backbones" / name
    if not (path / "backbone.safetensors").is_file():
        path.mkdir(parents=True, exist_ok=True)
        info = pretrain_backbone(replace(DemoConfig.toy(), backbone=name), path, resolve_device(device), True)
        print(f"{name}: pre-trained on the source task in {info['seconds']} s, accuracy {info['source_accuracy']:.1f}%",
              file=sys.stderr)
    return str(path / "backbone.safetensors")


def run_one(cfg: ModelConfig, tcfg: TrainConfig, data: dict, out: Path, cache: Path) -> dict:
    """Train on train (best epoch by val), then that epoch's model on test."""
    result, model = train_run(cfg, tcfg, data["train"], data["val"], out, cache, progress=False)
    device = resolve_device(tcfg.device)
    test = split_batches(cfg, tcfg, data["test"], "test", cache, False, False)
    pred = {k: v.numpy() for k, v in predict(model.to(device), test, device).items()}
    m = multilabel_metrics(pred["scores"], pred["targets"])
    rows = readable_rows(data["test"], [{"index": i} for i, _ in test.skipped])
    sizes = size_metrics(data["test"], pred["scores"], rows, pred["targets"])
    return {"mAP": m["mAP"], "small AP": sizes["AP_small"], "large AP": sizes["AP_large"],
            "hard mAP": sizes["mAP_hard"],
            "mean α": float(pred["alpha"].mean()) if "alpha" in pred else None,
            "params": count_params(cfg)["trainable"], "train s": round(result.seconds, 2),
            "best_epoch": result.best_epoch, "val_mAP": result.best["mAP"]}


def planned(backbones: list[str], taps: list[int], seeds: list[int], ft: bool) -> list[tuple]:
    """(backbone, tap or None, method label, seed) of every run, in order."""
    runs = []
    for bb in backbones:
        runs += [(bb, None, "LP", s) for s in seeds]
        runs += [(bb, t, label, s) for t in taps for label in FORMS for s in seeds]
        if ft:
            runs.append((bb, taps[0], "FT", seeds[0]))
    return runs


def summary(rows: list[dict]) -> dict:
    """Mean (± std over seeds where there are several) of each column."""
    out = {}
    for c in COLUMNS:
        values = [r[c] for r in rows if r.get(c) is not None]  # runs logged before a column existed lack it
        if not values:
            out[c] = None
        elif c == "mean α":
            out[c] = f"{statistics.mean(values):.2g}"
        elif c in ("params",):
            out[c] = f"{int(values[0]):,}"
        elif len(values) > 1 and c != "train s":
            out[c] = f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"
        else:
            out[c] = f"{statistics.mean(values):.1f}"
    return out


def tables(results: dict[tuple, dict], backbones: list[str], taps: list[int]) -> tuple[str, str, dict]:
    """(the study table, the residual-minus-baselines table, both as JSON-ready rows)."""
    groups: dict[tuple, list[dict]] = {}
    for (bb, tap, label, _), r in results.items():
        groups.setdefault((bb, tap, label), []).append(r)
    main, order = {}, []
    for bb in backbones:
        order += [(bb, None, "LP"), (bb, taps[0], "FT")]
        order += [(bb, t, label) for t in taps for label in FORMS]
    for key in order:
        if key in groups:
            bb, tap, label = key
            n = len(groups[key])
            runs = f"{n} seeds" if n > 1 else "1 run" + (f", {BACKBONES[bb][2]} epochs" if label == "FT" else "")
            main[f"{bb} | {'–' if tap is None or label == 'FT' else f'@{tap}'} | {label} ({runs})"] = summary(groups[key])
    mean = {k: {c: np.mean([r[c] for r in v]) for c in ("mAP", "small AP")} for k, v in groups.items()}
    wins = {}
    for bb in backbones:
        for t in taps:
            res = mean.get((bb, t, "RM default"))
            if res is None:
                continue
            base = {"− LP": mean.get((bb, None, "LP")), "− RM paper": mean.get((bb, t, "RM paper")),
                    "− concat": mean.get((bb, t, "concat"))}
            wins[f"{bb} @{t}"] = {k: f"{res['mAP'] - b['mAP']:+.1f} / {res['small AP'] - b['small AP']:+.1f}"
                                  for k, b in base.items() if b is not None}
    main_md = format_table(main, COLUMNS, first="backbone | tap | method")
    wins_md = format_table(wins, ("− LP", "− RM paper", "− concat"), first="RM default minus (mAP / small AP)")
    return main_md, wins_md, {"main": main, "residual_minus": wins}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output directory: runs.jsonl, study.md, study.json, caches, runs")
    p.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    p.add_argument("--taps", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--no-ft", action="store_true", help="skip FT")
    p.add_argument("--recipe", choices=RECIPES, default="paper",
                   help="paper: appendix A.2 (30 epochs), as the README's study table; sweep: the default recipe "
                        "(default: %(default)s)")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "runs.jsonl"
    results = {}
    if log.is_file():
        for line in log.read_text().splitlines():
            r = json.loads(line)
            results[tuple(r["key"])] = r["result"]
    t_start = time.perf_counter()
    prepared: dict[str, tuple] = {}
    for key in planned(args.backbones, args.taps, args.seeds, not args.no_ft):
        if tuple(key) in results:
            continue
        bb, tap, label, seed = key
        weights, size, ft_epochs = BACKBONES[bb]
        if bb not in prepared:
            data = {s: SyntheticScenes(s, n, size, NUM_CLASSES, DATA_SEED) for s, n in SPLITS.items()}
            base = resolve_config(ModelConfig(backbone=bb, num_classes=NUM_CLASSES, labels=list(data["train"].classes),
                                              weights=backbone_weights(bb, weights, out, args.device), image_size=size))
            prepared[bb] = (data, base)
        data, base = prepared[bb]
        fields = {"LP": {"method": "lp"}, "FT": {"method": "ft", "mix": "residual"}}.get(label) or FORMS[label]
        cfg = replace(base, **fields, **({"tap": tap} if tap else {}))
        tcfg = TrainConfig(recipe=args.recipe, epochs=ft_epochs if label == "FT" else 30, seed=seed,
                           device=args.device)
        name = f"{label.replace(' ', '-').lower()}{tap or ''}-s{seed}"
        t0 = time.perf_counter()
        r = run_one(cfg, tcfg, data, out / "runs" / bb / name, out / "features" / bb)
        print(f"{bb} {label} @{tap} seed {seed}: test mAP {r['mAP']:.2f}, small {r['small AP']:.2f}, "
              f"large {r['large AP']:.2f}, hard {r['hard mAP']:.2f}, α {r['mean α']}, "
              f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
        results[tuple(key)] = r
        with log.open("a") as f:
            f.write(json.dumps({"key": list(key), "result": r}) + "\n")
    main_md, wins_md, doc = tables(results, args.backbones, args.taps)
    text = (f"# The mix study ({', '.join(args.backbones)}; taps {args.taps}; seeds {args.seeds})\n\n"
            f"Test split, best validation epoch; mean ± std over seeds.\n\n{main_md}\n\n{wins_md}\n")
    write_text(out / "study.md", text)
    write_json(out / "study.json", doc | {"seconds_this_run": round(time.perf_counter() - t_start, 1)})
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
