"""The fused Layover branch: reference, kernels and the op the models call.

``fused_mix`` is the ``torch.ops.layover.fused_mix`` custom op (CPU: reference, CUDA: Triton,
with autograd, a fake impl for torch.compile/export and ONNX translations in ``onnx_export``).
"""
from .op import fused_mix
from .reference import LAYOUTS, fused_mix_reference, mix_pooled, pool

__all__ = ["LAYOUTS", "fused_mix", "fused_mix_reference", "mix_pooled", "pool"]
