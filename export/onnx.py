"""Checkpoint -> ONNX: the whole model (backbone + head) with a dynamic batch axis, in two forms.

- ``portable``: standard ops only (the fused branch as ReduceMean/Gemm/Sigmoid/Mul/Add), runs in
  ONNX Runtime and TensorRT without a plugin.
- ``plugin``: the portable graph after ``surgery.replace_branch``: onnx-graphsurgeon swaps the
  branch for one ``LayoverFusedMix`` node (the TensorRT plugin; in ONNX Runtime the
  onnxruntime-extensions op backed by the reference).

Both graphs output ``logits`` and ``probabilities`` (sigmoid of the logits): the runtime reads
probabilities, parity compares logits. The metadata (``metadata.py``) makes the file taggable alone.
"""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import torch
from torch import nn

from layover_edge.artifacts.checkpoint import checkpoint_id
from layover_edge.artifacts.onnx_metadata import INPUT, OUTPUTS, check_onnx, checkpoint_metadata, set_metadata
from layover_edge.core.config import ExportConfig
from layover_edge.core.errors import LayoverError
from layover_edge.core.io import atomic_path
from layover_edge.models import load_checkpoint

from .head import split_biased_gemms

FORMS = ("portable", "plugin")
MIN_OPSET = ExportConfig.opset  # the dynamo exporter writes 18; down-conversion to 17 fails
EXPORT_TOLERANCE = 1e-3  # max |Δlogit| of the export's own check, the FP32 parity gate


class Deployed(nn.Module):
    """The model as deployed: logits and probabilities from a normalised image batch."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(image)
        return logits, torch.sigmoid(logits)


def name_scopes(node) -> list[str]:
    """The torch module path the dynamo exporter records on each node (empty if absent)."""
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            return list(ast.literal_eval(p.value))
    return []


def high_precision_nodes(proto) -> list[str]:
    """The head (RS sigmoid, α gate, mix, classifier) and everything after it (the output sigmoid):
    kept out of INT8/FP16. INT8 sigmoids compress confidences, the known failure."""
    names: set[str] = set()
    tainted: set[str] = set()
    for node in proto.graph.node:  # nodes are topologically sorted
        if "model.head" in name_scopes(node) or tainted.intersection(node.input):
            names.add(node.name)
            tainted.update(node.output)
    if not names:
        raise LayoverError("the exported graph has no nodes under model.head: cannot tell the head apart")
    return sorted(names)


def branch_nodes(proto) -> list[str]:
    """Nodes the exporter emitted for ``layover::fused_mix`` (the RM branch)."""
    return [n.name for n in proto.graph.node if "fused_mix" in name_scopes(n)]


def _trace(model: nn.Module, example: torch.Tensor, opset: int, dynamic: bool):
    from layover_edge.kernels.onnx_export import translation_table
    shapes = {"image": {0: torch.export.Dim("batch", min=1, max=4096)}} if dynamic else None
    try:
        program = torch.onnx.export(Deployed(model).eval(), (example,), dynamo=True, opset_version=opset,
                                    input_names=[INPUT], output_names=list(OUTPUTS), dynamic_shapes=shapes,
                                    custom_translation_table=translation_table(plugin=False), verbose=False)
    except Exception as e:  # the exporter raises many types; the first line says what failed
        raise LayoverError(f"ONNX export failed: {str(e).strip().splitlines()[0]}") from None
    return program.model_proto


def export_onnx(checkpoint: str | Path, out_path: str | Path, form: str = "portable", opset: int = MIN_OPSET,
                batch: int | None = None, verify: bool = True) -> Path:
    """Export ``checkpoint`` to ``out_path``; returns the path.

    form: ``portable`` or ``plugin``. batch: None for a dynamic batch axis, an int to fix it
    (e.g. for DLA). With ``verify`` the file is checked by onnx.checker and run in ONNX Runtime
    against PyTorch on a small batch (max |Δlogit| ≤ 1e-3).
    """
    import onnx
    if form not in FORMS:
        raise LayoverError(f"unknown ONNX form {form!r}; choose one of {FORMS}")
    if opset < MIN_OPSET:
        raise LayoverError(f"opset {opset} is too old: the exporter writes opset ≥ {MIN_OPSET}")
    model, cfg = load_checkpoint(checkpoint)
    if form == "plugin" and not cfg.fused_branch:
        raise LayoverError(f"the plugin form needs the fused RM branch (method rm/ft, rs=linear); "
                           f"this checkpoint is method={cfg.method}, rs={cfg.rs}: export --form portable")
    s = cfg.image_size
    example = torch.randn(batch or 2, 3, s, s, generator=torch.Generator().manual_seed(0))
    proto = _trace(model, example, opset, dynamic=batch is None)
    keep_high = high_precision_nodes(proto)
    if form == "plugin":
        from .surgery import replace_branch
        with torch.inference_mode():
            h, _ = model.features(example[:1])
        proto, plugin_node = replace_branch(proto, branch_nodes(proto), model.head, model.backbone.layout(h))
        keep_high = sorted(set(keep_high) & {n.name for n in proto.graph.node} | {plugin_node})
    # TensorRT gives a Gemm's bias add no name: split the head's into MatMul + Add (export/head.py)
    keep_high = split_biased_gemms(proto, keep_high)
    for node in proto.graph.node:  # stack traces and module paths: local file paths, a third of the file
        del node.metadata_props[:]
    set_metadata(proto, checkpoint_metadata(cfg, form, opset, keep_high, checkpoint_id(checkpoint)))
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        onnx.save(proto, str(tmp))
        if verify:
            check_onnx(tmp)
            _verify(model, tmp, example)
    return out_path


def _verify(model: nn.Module, path: Path, example: torch.Tensor) -> None:
    import onnx
    import onnxruntime as ort

    from layover_edge.kernels.identity import PLUGIN_DOMAIN
    from layover_edge.kernels.ort_plugin import session_options
    with torch.inference_mode():
        ref = model(example).numpy()
    proto = onnx.load(str(path), load_external_data=False)
    options = session_options() if any(n.domain == PLUGIN_DOMAIN for n in proto.graph.node) else None
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    got = session.run([OUTPUTS[0]], {INPUT: example.numpy()})[0]
    err = float(np.abs(got - ref).max())
    if not err <= EXPORT_TOLERANCE:
        raise LayoverError(f"the exported graph does not match PyTorch: max |Δlogit| = {err:.3g} > {EXPORT_TOLERANCE}")
