"""Accuracy parity of an exported model (ONNX or engine) against a reference (the PyTorch FP32
checkpoint, or on a device without torch the FP32 ONNX file), at two levels:

- tensor: per output (logits, probabilities) max/mean absolute and relative error and cosine
  similarity per image (min and mean); Polygraphy's comparator on the logits where installed;
- task: mAP, CF1, OF1 of both and their deltas, tag agreement at the thresholds, mean and max
  |Δprobability|.

The gates depend on the candidate's precision (users override any of them):
FP32 max |Δlogit| ≤ 1e-3; FP16 mAP drop ≤ 0.2 points; INT8 mAP drop ≤ 1.0 point and tag
agreement ≥ 97 %.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from layover_edge.core.errors import LayoverError
from layover_edge.core.io import write_json, write_text
from layover_edge.core.tables import format_table
from layover_edge.export.data import image_arrays
from layover_edge.runtime.base import Backend
from layover_edge.training.metrics import multilabel_metrics

TASK_KEYS = ("mAP", "CF1", "OF1")


@dataclass
class Gates:
    """None: the check does not apply at this precision."""

    max_logit_error: float | None = None
    max_map_drop: float | None = None
    min_agreement: float | None = None  # percent


DEFAULT_GATES = {"fp32": Gates(max_logit_error=1e-3), "fp16": Gates(max_map_drop=0.2),
                 "int8": Gates(max_map_drop=1.0, min_agreement=97.0)}


def gates_for(precision: str, **overrides) -> Gates:
    base = asdict(DEFAULT_GATES.get(precision, Gates()))
    return Gates(**{**base, **{k: v for k, v in overrides.items() if v is not None}})


def tensor_stats(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    diff = np.abs(got.astype(np.float64) - ref)
    rel = diff / np.maximum(np.abs(ref), 1e-6)
    dot = (ref * got).sum(1)
    cos = dot / np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1), 1e-12)
    return {"max_abs": float(diff.max()), "mean_abs": float(diff.mean()), "max_rel": float(rel.max()),
            "mean_rel": float(rel.mean()), "cosine_min": float(cos.min()), "cosine_mean": float(cos.mean())}


def polygraphy_check(ref: np.ndarray, got: np.ndarray, atol: float | None) -> bool | None:
    """Polygraphy's comparator (max absolute error ≤ atol) on the logits; None when not installed or
    when no logit gate applies (FP16/INT8 are judged on the task)."""
    if atol is None:
        return None
    try:
        from polygraphy.comparator import Comparator, RunResults
        from polygraphy.comparator.struct import IterationResult
        from polygraphy.logger import G_LOGGER
    except ImportError:
        return None
    results = RunResults()
    for name, value in (("pytorch", ref), ("candidate", got)):
        results.append((name, [IterationResult(outputs={"logits": value}, runner_name=name)]))
    try:
        from polygraphy.comparator import SimpleCompareFunc
        compare = SimpleCompareFunc(atol=atol, rtol=0.0, check_error_stat="max")
    except ImportError:  # Polygraphy < 0.50
        from polygraphy.comparator import CompareFunc
        compare = CompareFunc.simple(atol=atol, rtol=0.0, check_error_stat="max")
    with G_LOGGER.verbosity(G_LOGGER.CRITICAL):  # its own log would repeat what the report says
        return bool(Comparator.compare_accuracy(results, compare_func=compare))


def compare(reference: Backend, candidate: Backend, dataset, batch_size: int, gates: Gates,
            limit: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Run both backends over ``dataset``; the parity result with ``passed``."""
    if list(dataset.classes) != list(reference.info.labels):
        raise LayoverError("the data set's classes are not the checkpoint's labels")
    if list(candidate.info.labels) != list(reference.info.labels):
        raise LayoverError("the candidate model's labels are not the checkpoint's: exported from another checkpoint?")
    if candidate.info.preprocess.image_size != reference.info.preprocess.image_size:
        raise LayoverError("the candidate model's image size is not the checkpoint's")
    refs: dict[str, list] = {"logits": [], "probabilities": []}
    gots: dict[str, list] = {"logits": [], "probabilities": []}
    targets = []
    for x, y in image_arrays(dataset, reference.info.preprocess, batch_size, limit, "parity", progress):
        r, g = reference.run(x), candidate.run(x)
        for k in refs:
            refs[k].append(r[k])
            gots[k].append(g[k])
        targets.append(y)
    if not targets:
        raise LayoverError("no readable images in the parity data")
    ref = {k: np.concatenate(v) for k, v in refs.items()}
    got = {k: np.concatenate(v) for k, v in gots.items()}
    y = np.concatenate(targets)
    thr = reference.info.threshold_array()
    m_ref, m_got = multilabel_metrics(ref["probabilities"], y, thr), multilabel_metrics(got["probabilities"], y, thr)
    dp = np.abs(got["probabilities"] - ref["probabilities"])
    task = {"reference": {k: m_ref[k] for k in TASK_KEYS}, "candidate": {k: m_got[k] for k in TASK_KEYS},
            "delta": {k: m_got[k] - m_ref[k] for k in TASK_KEYS},
            "tag_agreement": 100.0 * float(((got["probabilities"] >= thr) == (ref["probabilities"] >= thr)).mean()),
            "mean_abs_dprob": float(dp.mean()), "max_abs_dprob": float(dp.max())}
    tensor = {k: tensor_stats(ref[k], got[k]) for k in ref}
    checks = []
    if gates.max_logit_error is not None:
        checks.append(("max abs Δlogit", tensor["logits"]["max_abs"], "≤", gates.max_logit_error))
    if gates.max_map_drop is not None:
        checks.append(("mAP drop (points)", -task["delta"]["mAP"], "≤", gates.max_map_drop))
    if gates.min_agreement is not None:
        checks.append(("tag agreement (%)", task["tag_agreement"], "≥", gates.min_agreement))
    checks_out = [{"check": c, "value": v, "limit": lim,
                   "passed": bool(v <= lim if op == "≤" else v >= lim), "op": op} for c, v, op, lim in checks]
    return {"num_images": int(len(y)), "reference": reference.metadata(), "candidate": candidate.metadata(),
            "precision": candidate.metadata().get("precision"), "gates": asdict(gates), "tensor": tensor,
            "polygraphy_logits_pass": polygraphy_check(ref["logits"], got["logits"], gates.max_logit_error),
            "task": task, "checks": checks_out, "passed": all(c["passed"] for c in checks_out)}


def _num(v: float) -> str:
    v += 0.0  # -0.0 prints as "-0": a drop of nothing is 0
    return f"{v:.3g}" if abs(v) < 1e-2 or abs(v) >= 1e4 else f"{v:.4f}"


def _signed(v: float) -> str:
    return f"{round(v, 2) + 0.0:+.2f}"


def polygraphy_text(result: dict) -> str:
    verdict = result["polygraphy_logits_pass"]
    if verdict is not None:
        return "pass" if verdict else "FAIL"
    if result["gates"]["max_logit_error"] is None:
        return f"not run ({(result.get('precision') or '').upper()} is judged on the task, below)"
    return "not run (Polygraphy is not installed: pip install polygraphy)"


BACKEND_NAMES = {"torch": "PyTorch", "onnxruntime": "ONNX Runtime", "tensorrt": "TensorRT"}


def label(meta: dict) -> str:
    """"PyTorch FP32", "TensorRT INT8", ... for a backend's metadata."""
    return f"{BACKEND_NAMES.get(meta['backend'], meta['backend'])} {(meta.get('precision') or '').upper()}".strip()


def markdown(result: dict, title: str) -> str:
    c = result["candidate"]
    name = label(c)
    tensor_rows = {k: {col: _num(v) for col, v in s.items()} for k, s in result["tensor"].items()}
    task = result["task"]
    rows = {label(result["reference"]): {k: f"{v:.2f}" for k, v in task["reference"].items()},
            name: {k: f"{v:.2f}" for k, v in task["candidate"].items()},
            "Δ": {k: _signed(v) for k, v in task["delta"].items()}}
    checks = {ch["check"]: {"value": _num(ch["value"]), "limit": f"{ch['op']} {ch['limit']:g}",
                            "result": "pass" if ch["passed"] else "FAIL"} for ch in result["checks"]}
    r = result["reference"]
    lines = [f"# Parity: {title}", "",
             f"{result['num_images']} images; reference {label(r)} on {str(r.get('device', 'cpu')).upper()}; "
             f"candidate {name} "
             f"({c.get('model', '')}). Verdict: **{'PASS' if result['passed'] else 'FAIL'}**", "",
             "## Tensor level", "", format_table(tensor_rows, columns=tuple(next(iter(tensor_rows.values()))),
                                                 first="output"), "",
             f"Polygraphy comparator on logits: {polygraphy_text(result)}", "",
             "## Task level", "", format_table(rows, columns=TASK_KEYS, first="model"), "",
             f"Tag agreement at the thresholds: {task['tag_agreement']:.2f} %; mean abs Δprobability "
             f"{_num(task['mean_abs_dprob'])}, max {_num(task['max_abs_dprob'])}", "",
             "## Gates", "", format_table(checks, columns=("value", "limit", "result"), first="check"), ""]
    return "\n".join(lines)


def write_reports(result: dict, out_dir: str | Path, title: str) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    write_json(out_dir / "parity.json", result)
    write_text(out_dir / "parity.md", markdown(result, title))
    return out_dir / "parity.json", out_dir / "parity.md"


def run_parity(reference: str | Path, candidate: str | Path, data: str, data_root: str | None = None,
               size: int | None = None, batch_size: int = 32, out: str | Path | None = None,
               cuda_graph: bool = False, progress: bool = True, **gate_overrides) -> dict:
    """Parity of the ``candidate`` model file against the ``reference`` (a checkpoint or an FP32
    ONNX file) on a data split (``NAME:SPLIT[:key=value,...]``); writes parity.json and parity.md
    into ``out`` (default: beside the candidate) and returns the result with ``passed``."""
    from layover_edge.export.data import open_split
    from layover_edge.runtime.factory import kind_of, open_backend
    if cuda_graph and kind_of(candidate) != "tensorrt":
        raise LayoverError("--cuda-graph applies to TensorRT engines only")
    ref = open_backend(reference)
    if (ref.metadata().get("precision") or "fp32") != "fp32":
        raise LayoverError(f"the reference {reference} is not an FP32 model: compare against the checkpoint or "
                           f"model.onnx")
    cand = open_backend(candidate, **({"cuda_graph": True} if cuda_graph else {}))
    gates = gates_for(cand.metadata().get("precision") or "fp32", **gate_overrides)
    ds = open_split(data, ref.info, size, data_root)
    result = compare(ref, cand, ds, batch_size, gates, size, progress)
    title = f"{Path(candidate).name} vs {reference} on {data}"
    out = Path(out) if out else Path(candidate).parent / f"parity-{Path(candidate).stem}"
    json_path, md_path = write_reports(result, out, title)
    result["reports"] = [str(json_path), str(md_path)]
    result["title"] = title
    return result
