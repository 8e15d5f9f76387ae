"""ONNX forms of ``layover::fused_mix`` for ``torch.onnx.export(..., dynamo=True)``.

``translation_table(plugin=False)`` emits the portable standard-op subgraph (ReduceMean, Gemm,
Sigmoid, Mul, Add, Sub, all in float32 like the reference): the reference's four pieces
(``reference.pool``, ``rs``, ``gate``, ``mix``, composed the same way by ``mix_pooled``) spelt
one to one in ONNX ops below, under the same names; ``translation_table(plugin=True)``
emits one ``LayoverFusedMix`` node that TensorRT's ONNX parser maps to the IPluginV3 creator in
``kernels/plugin`` (op_type = plugin name; ``plugin_version`` and ``plugin_namespace``
attributes). The node lives in domain ``ai.onnx.contrib`` because that is the only custom
domain whose Python ops ONNX Runtime (via onnxruntime-extensions) will run, which is how
``ort_plugin.py`` checks the plugin graph without TensorRT.

    torch.onnx.export(model, args, dynamo=True, custom_translation_table=translation_table(plugin))
"""
from __future__ import annotations

import torch
from onnx.defs import OpSchema
from onnxscript import FLOAT
from onnxscript import opset18 as op
from onnxscript.values import Op, Opset

from . import op as _custom_op  # noqa: F401  (registers torch.ops.layover.fused_mix, the table's key)
from .identity import LAYOUT_CODES, PLUGIN_DOMAIN, PLUGIN_NAME, PLUGIN_NAMESPACE, PLUGIN_VERSION
from .reference import POOL_AXES

_F32 = FLOAT.dtype


def _plugin_schema() -> OpSchema:
    """The exporter's tracer needs a schema to tell the node's inputs from its attributes."""
    types = ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"]
    param = OpSchema.FormalParameter
    attr = OpSchema.Attribute
    return OpSchema(
        PLUGIN_NAME, PLUGIN_DOMAIN, 1,
        inputs=[param(n, t) for n, t in (("h", "TH"), ("z", "TZ"), ("w_rs", "TW"), ("w_sl", "TW"),
                                         ("b_sl", "TW"))],
        outputs=[param("z_mixed", "TZ")],
        type_constraints=[(t, types, "") for t in ("TH", "TZ", "TW")],
        attributes=[attr("layout", OpSchema.AttrType.INT, "0 NCHW, 1 NHWC, 2 NLC"),
                    attr("plugin_version", OpSchema.AttrType.STRING, ""),
                    attr("plugin_namespace", OpSchema.AttrType.STRING, "")])


_plugin_op = Op(Opset(PLUGIN_DOMAIN, 1), PLUGIN_NAME, _plugin_schema())


# The reference's pieces (kernels/reference.py), one ONNX function each; F.linear is Gemm(transB=1).
def pool(h, layout: str):
    """reference.pool: ReduceMean over POOL_AXES[layout], in float32."""
    return op.ReduceMean(op.Cast(h, to=_F32), op.Constant(value_ints=list(POOL_AXES[layout])), keepdims=0)


def rs(p, w_rs):
    """reference.rs: sigmoid(p·W_rsᵀ)."""
    return op.Sigmoid(op.Gemm(p, w_rs, transB=1))


def gate(z, w_sl, b_sl):
    """reference.gate: sigmoid(z·w_sl + b_sl), (B, 1)."""
    return op.Sigmoid(op.Gemm(z, op.Reshape(w_sl, op.Constant(value_ints=[1, -1])), b_sl, transB=1))


def mix(h_hat, alpha, z):
    """reference.mix: α·ĥ + (1 − α)·z."""
    return op.Add(op.Mul(alpha, h_hat), op.Mul(op.Sub(op.Constant(value_float=1.0), alpha), z))


def mix_pooled(p, z, w_rs, w_sl, b_sl):
    """reference.mix_pooled (with reference.terms' casts to float32)."""
    zf = op.Cast(z, to=_F32)
    return mix(rs(p, op.Cast(w_rs, to=_F32)), gate(zf, op.Cast(w_sl, to=_F32), op.Cast(b_sl, to=_F32)), zf)


def fused_mix_standard_ops(h, z, w_rs, w_sl, b_sl, layout: str = "NCHW"):
    """reference.fused_mix_reference as opset-18 ops: float32 inside, cast back to z's type."""
    return op.CastLike(mix_pooled(pool(h, layout), z, w_rs, w_sl, b_sl), z)


def fused_mix_plugin_node(h, z, w_rs, w_sl, b_sl, layout: str = "NCHW"):
    """One plugin node; the weights stay node inputs (initializers), the layout an int attribute."""
    return _plugin_op(
        h, z, w_rs, w_sl, b_sl, layout=LAYOUT_CODES[layout],
        plugin_version=PLUGIN_VERSION, plugin_namespace=PLUGIN_NAMESPACE)


def translation_table(plugin: bool = False) -> dict:
    """``custom_translation_table`` for torch.onnx.export: plugin node or standard ops."""
    fn = fused_mix_plugin_node if plugin else fused_mix_standard_ops
    return {torch.ops.layover.fused_mix.default: fn}
