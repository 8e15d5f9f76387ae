"""``torch.ops.layover.fused_mix``: the branch as one custom op.

CPU runs the PyTorch reference, CUDA runs the Triton kernel (the reference when Triton is
missing, or after it failed once in this process, with a warning). The fake impl lets
torch.compile and torch.export trace through it; the backward is analytic PyTorch on the
reference's pieces, so fine-tuning gets gradients for h, z, w_rs, w_sl and b_sl without a
backward kernel (training is not the latency path).
"""
from __future__ import annotations

import importlib.util
import logging

import torch

from .reference import POOL_AXES, check_layout, fused_mix_reference, pool, terms

HAS_TRITON = importlib.util.find_spec("triton") is not None
log = logging.getLogger(__name__)


def _acc_dtype(h: torch.Tensor, z: torch.Tensor) -> torch.dtype:
    """float32 as the contract says; float64 inputs stay float64 so gradcheck can run."""
    return torch.float64 if h.dtype == z.dtype == torch.float64 else torch.float32


@torch.library.custom_op("layover::fused_mix", mutates_args=())
def fused_mix(h: torch.Tensor, z: torch.Tensor, w_rs: torch.Tensor, w_sl: torch.Tensor,
              b_sl: torch.Tensor, layout: str = "NCHW") -> torch.Tensor:
    """z' = α·sigmoid(W_rs·pool(h)) + (1−α)·z with α = sigmoid(w_sl·z + b_sl); see reference.py."""
    return fused_mix_reference(h, z, w_rs, w_sl, b_sl, layout, acc=_acc_dtype(h, z))


# Why the Triton kernel stopped being used in this process (None while it works): a Triton
# that cannot compile for this GPU (an old ptxas on a Jetson, say) should cost speed, not the run.
triton_error: str | None = None


@fused_mix.register_kernel("cuda")
def _fused_mix_cuda(h, z, w_rs, w_sl, b_sl, layout="NCHW"):
    global triton_error
    check_layout(h, layout, w_rs.shape[1])  # bad input is the caller's error, not Triton's
    if HAS_TRITON and triton_error is None:
        # Imported here, not at module load: Triton fixes interpret-vs-compile at import time.
        from . import triton_fused_mix
        try:
            return triton_fused_mix.fused_mix_triton(h, z, w_rs, w_sl, b_sl, layout)
        except Exception as e:  # compile and driver errors share no base class
            triton_error = f"{type(e).__name__}: {e}"
            log.warning("the Triton fused_mix kernel failed on this GPU, so the branch runs as PyTorch ops "
                        "from now on: %s", triton_error)
    return fused_mix_reference(h, z, w_rs, w_sl, b_sl, layout)


@fused_mix.register_fake
def _fused_mix_fake(h, z, w_rs, w_sl, b_sl, layout="NCHW"):
    check_layout(h, layout, w_rs.shape[1])
    return z.new_empty(z.shape)


def _setup_context(ctx, inputs, output):
    h, z, w_rs, w_sl, b_sl, layout = inputs
    ctx.layout = layout
    ctx.save_for_backward(h, z, w_rs, w_sl, b_sl)


def _backward(ctx, grad):
    """The reference's pieces (pool, rs, gate) recomputed in the forward's dtype, then their
    derivatives by hand."""
    h, z, w_rs, w_sl, b_sl = ctx.saved_tensors
    axes = POOL_AXES[ctx.layout]
    acc = _acc_dtype(h, z)
    p = pool(h, ctx.layout, acc)                                     # (B, C)
    h_hat, alpha, zf = terms(p, z, w_rs, w_sl, b_sl, acc)            # (B, N), (B, 1), (B, N)
    g, w, wsl = grad.to(acc), w_rs.to(acc), w_sl.to(acc)
    d_pre = alpha * g * h_hat * (1 - h_hat)                          # dL/d(W_rs·p)
    d_logit = (g * (h_hat - zf)).sum(1, keepdim=True) * alpha * (1 - alpha)
    pooled = h.numel() // (h.shape[0] * w.shape[1])                  # H·W or L
    dp = (d_pre @ w / pooled).reshape([1 if i in axes else n for i, n in enumerate(h.shape)])
    return (dp.expand(h.shape).to(h.dtype),
            ((1 - alpha) * g + d_logit * wsl).to(z.dtype),
            (d_pre.t() @ p).to(w_rs.dtype),
            (d_logit * zf).sum(0).reshape(w_sl.shape).to(w_sl.dtype),
            d_logit.sum().reshape(b_sl.shape).to(b_sl.dtype),
            None)


fused_mix.register_autograd(_backward, setup_context=_setup_context)
