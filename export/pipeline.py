"""The export and build jobs as library calls: what ``layover-edge export`` / ``build`` and the
Python API run. ``export_all`` writes every ONNX form a checkpoint allows plus the reduced-precision
graphs; ``build`` turns one ONNX file into an engine (or, without TensorRT, its trtexec command)."""
from __future__ import annotations

import json
import time
from pathlib import Path

from layover_edge.artifacts.checkpoint import checkpoint_id, read_config
from layover_edge.artifacts.model_info import ModelInfo
from layover_edge.artifacts.onnx_metadata import get_metadata
from layover_edge.artifacts.sidecar import read_sidecar, sidecar_path
from layover_edge.core.config import ExportConfig
from layover_edge.core.errors import LayoverError
from layover_edge.core.io import sha256
from layover_edge.core.tables import format_table

FILES = {"portable": "model.onnx", "plugin": "model.plugin.onnx", "int8": "model.int8.onnx",
         "fp16": "model.fp16.onnx"}


def file_row(path: Path, seconds: float) -> dict:
    """What the export table shows for one ONNX file."""
    import onnx
    proto = onnx.load(str(path), load_external_data=False)
    meta = get_metadata(proto, path)
    qdq = sum(n.op_type == "QuantizeLinear" for n in proto.graph.node)
    return {"file": str(path), "form": meta["form"], "precision": meta["precision"], "opset": meta["opset"],
            "nodes": len(proto.graph.node), "qdq": qdq, "MB": f"{path.stat().st_size / 2**20:.2f}",
            "sha256": sha256(path)[:12], "seconds": f"{seconds:.1f}"}


def default_forms(checkpoint: str | Path) -> list[str]:
    """The plugin form exists only where there is a fused branch (RM/FT with the linear RS)."""
    cfg, _ = read_config(checkpoint)
    return ["portable", "plugin"] if cfg.fused_branch else ["portable"]


def export_all(checkpoint: str | Path, out: str | Path, ec: ExportConfig | None = None,
               data_root: str | None = None, progress: bool = True) -> dict[str, dict]:
    """Export ``checkpoint`` into ``out``: model.onnx (portable), model.plugin.onnx and, on request,
    model.int8.onnx (Q/DQ, calibrated on ``ec.calib_data``), model.fp16.onnx and a Triton model repository
    (``ec.triton_repo``). Returns one row per file or repository model."""
    from .onnx import export_onnx
    ec = ec or ExportConfig()
    out = Path(out)
    forms = list(ec.forms or default_forms(checkpoint))
    if (ec.int8 or ec.fp16) and "portable" not in forms:
        raise LayoverError("--int8 and --fp16 convert the portable graph: keep 'portable' in --form")
    if ec.triton_engine and not ec.triton_repo:
        raise LayoverError("--triton-engine adds a model to the Triton repository: give --triton-repo DIR too")
    if ec.triton_repo and "portable" not in forms:
        raise LayoverError("--triton-repo serves the portable graph: keep 'portable' in --form")
    if ec.int8 and not ec.calib_data:
        raise LayoverError("--int8 needs --calib-data (a data set split such as synthetic:train, or a .npy "
                           "of preprocessed images): INT8 is never calibrated on random data")
    _replace_other_export(checkpoint, out, ec)
    rows: dict[str, dict] = {}
    for form in forms:
        t = time.perf_counter()
        export_onnx(checkpoint, out / FILES[form], form=form, opset=ec.opset, batch=ec.static_batch)
        rows[form] = file_row(out / FILES[form], time.perf_counter() - t)
    if ec.int8:
        import onnx

        from .data import calibration_images
        from .quantize import quantize_int8
        t = time.perf_counter()
        portable = out / FILES["portable"]
        info = ModelInfo.from_metadata(get_metadata(onnx.load(str(portable), load_external_data=False), portable))
        try:
            images = calibration_images(ec.calib_data, info, ec.calib_size, data_root, progress)
            quantize_int8(portable, out / FILES["int8"], images, ec.calib_method, not progress, ec.int8_float)
        except LayoverError as e:  # the FP32 graphs are already written and checked: say they stay
            kept = ", ".join(rows[form]["file"] for form in rows)
            raise LayoverError(f"{e} (no {FILES['int8']} written; the FP32 files {kept} are complete and kept)") \
                from None
        rows["int8"] = file_row(out / FILES["int8"], time.perf_counter() - t) | {"calibration_images": len(images)}
    if ec.fp16:
        from .quantize import convert_fp16
        t = time.perf_counter()
        convert_fp16(out / FILES["portable"], out / FILES["fp16"])
        rows["fp16"] = file_row(out / FILES["fp16"], time.perf_counter() - t)
    if ec.triton_repo:
        from .triton_repo import write_repository
        rows |= write_repository(out / FILES["portable"], ec.triton_repo, ec.triton_engine, ec.triton_max_batch)
    return rows


def _exported_from(path: Path) -> str | None:
    """The checkpoint_id an ONNX file of an earlier export records (None: unreadable, or no record)."""
    import onnx
    try:
        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        return json.loads(props.get("checkpoint", "null"))
    except Exception:  # a damaged or foreign file is not this checkpoint's either
        return None


def _replace_other_export(checkpoint: str | Path, out: Path, ec: ExportConfig) -> None:
    """Refuse a folder holding another checkpoint's export (a model.onnx of one checkpoint beside a
    model.int8.onnx of another is a trap ready to copy to a device), unless ``ec.overwrite``: then
    that set is removed first, with the engines built from its files and its parity reports."""
    old = [out / name for name in FILES.values() if (out / name).is_file()]
    if not old:
        return
    ours = checkpoint_id(checkpoint)
    if all(_exported_from(f) == ours for f in old):
        return  # the same model: its files are rewritten in place
    names = ", ".join(f.name for f in old)
    if not ec.overwrite:
        raise LayoverError(f"{out} already holds an export of another checkpoint ({names}): give --overwrite "
                           f"(overwrite=True in the Python API) to replace that set, or another --out")
    digests = {sha256(f) for f in old}
    keep = Path(ec.triton_engine).resolve() if ec.triton_engine else None
    for engine in sorted(out.glob("*.engine")) + sorted(out.glob("*.plan")):
        try:
            built_from = read_sidecar(engine).get("onnx_sha256")
        except LayoverError:
            continue  # not an engine of ours: left alone
        if built_from in digests and engine.resolve() != keep:
            sidecar_path(engine).unlink(missing_ok=True)
            engine.unlink()
    for f in old:
        report = out / f"parity-{f.stem}"
        for name in ("parity.json", "parity.md"):
            (report / name).unlink(missing_ok=True)
        if report.is_dir() and not any(report.iterdir()):
            report.rmdir()
        f.unlink()


def export_text(checkpoint: str | Path, rows: dict[str, dict]) -> str:
    table = format_table(rows, columns=("file", "precision", "opset", "nodes", "qdq", "MB", "sha256", "seconds"),
                         first="graph")
    return f"exported {checkpoint}\n\n{table}"
