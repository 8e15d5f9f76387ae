"""PyTorch reference of the Layover early-exit branch: the ground truth for every kernel.

    p  = pool(h)      = mean of h over its spatial/token axes           (B, C)    POOL_AXES[layout]
    ĥ  = rs(p)        = W_rs·p + b_rs          (mix "residual")         (B, N)
                        sigmoid(W_rs·p + b_rs) (mix "paper")
    α  = gate(z)      = sigmoid(w_sl·z + b_sl)                          (B, 1)
    z' = mix(ĥ, α, z) = z + α·ĥ                (mix "residual")         (B, N)
                        α·ĥ + (1 − α)·z        (mix "paper", eq. 5-6)

Two mixes, one op. "paper" is the paper's eq. 5-6 and the official code exactly when b_rs = 0
(its RS Linear has no bias, so its heads pass zeros). "residual", the default, adds a linear ĥ to
z instead of a sigmoid-squashed one in a convex mix, which closes the gate (α → 0) on backbones
whose pre-logits pass a ReLU: README "The method" has the measurements. A residual head trains
W_rs on the standardised tap and folds the training split's μ, σ into W_rs/σ and b_rs − (W_rs/σ)·μ,
so the kernel sees the raw p in both mixes.

These pieces are the branch's maths, written once: ``mix_pooled`` (the cached-feature path) and
``fused_mix_reference`` compose them, the custom op's float64 forward and analytic backward
(op.py) call them, the benchmark's eager baseline runs them in the activations' dtype, and
onnx_export.py spells the same pieces in ONNX ops one to one.

All arithmetic runs in float32 (``acc``; float64 only for gradcheck); the result takes z's dtype.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from layover_edge.core.config import MIXES

# The axes the pooling averages over, per layout of h: NCHW (B, C, H, W), NHWC (B, H, W, C),
# tokens NLC (B, L, C). The one table every implementation and export reads.
POOL_AXES = {"NCHW": (2, 3), "NHWC": (1, 2), "NLC": (1,)}
LAYOUTS = tuple(POOL_AXES)


def check_layout(h: torch.Tensor, layout: str, channels: int) -> None:
    """Raise ValueError unless ``h`` is a ``layout`` tensor with ``channels`` channels."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    want_dims = 3 if layout == "NLC" else 4
    if h.dim() != want_dims:
        raise ValueError(f"layout {layout} needs a {want_dims}-D tensor, got shape {tuple(h.shape)}")
    c = h.shape[1] if layout == "NCHW" else h.shape[-1]
    if c != channels:
        raise ValueError(f"h has {c} channels in layout {layout}, the weights expect {channels}")


def check_mix(form: str) -> None:
    if form not in MIXES:
        raise ValueError(f"mix must be one of {MIXES}, got {form!r}")


def pool(h: torch.Tensor, layout: str, acc: torch.dtype = torch.float32) -> torch.Tensor:
    """p: the mean over ``POOL_AXES[layout]``, accumulated in ``acc`` -> (B, C)."""
    return h.to(acc).mean(dim=POOL_AXES[layout])


def rs(p: torch.Tensor, w_rs: torch.Tensor, b_rs: torch.Tensor, form: str) -> torch.Tensor:
    """ĥ = p·W_rsᵀ + b_rs, through a sigmoid for the paper's mix -> (B, N)."""
    pre = F.linear(p, w_rs, b_rs)
    return torch.sigmoid(pre) if form == "paper" else pre


def gate(z: torch.Tensor, w_sl: torch.Tensor, b_sl: torch.Tensor) -> torch.Tensor:
    """α = sigmoid(z·w_sl + b_sl), one scalar per image -> (B, 1)."""
    return torch.sigmoid(F.linear(z, w_sl.reshape(1, -1), b_sl.reshape(1)))


def mix(h_hat: torch.Tensor, alpha: torch.Tensor, z: torch.Tensor, form: str) -> torch.Tensor:
    """z' = z + α·ĥ (residual) or α·ĥ + (1 − α)·z (paper) -> (B, N)."""
    if form == "paper":
        return alpha * h_hat + (1.0 - alpha) * z
    return z + alpha * h_hat


def terms(p: torch.Tensor, z: torch.Tensor, w_rs: torch.Tensor, b_rs: torch.Tensor, w_sl: torch.Tensor,
          b_sl: torch.Tensor, form: str, acc: torch.dtype = torch.float32
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ĥ, α, z) in ``acc``: what ``mix`` combines (the backward needs them too)."""
    check_mix(form)
    zf = z.to(acc)
    return rs(p.to(acc), w_rs.to(acc), b_rs.to(acc), form), gate(zf, w_sl.to(acc), b_sl.to(acc)), zf


def mix_pooled(p: torch.Tensor, z: torch.Tensor, w_rs: torch.Tensor, b_rs: torch.Tensor, w_sl: torch.Tensor,
               b_sl: torch.Tensor, form: str = MIXES[0], acc: torch.dtype = torch.float32) -> torch.Tensor:
    """The branch after pooling (RS, gate, mix) in ``acc``: the cached-feature path of the head,
    and exactly what ``fused_mix_reference`` runs after ``pool``."""
    return mix(*terms(p, z, w_rs, b_rs, w_sl, b_sl, form, acc), form)


def fused_mix_reference(h: torch.Tensor, z: torch.Tensor, w_rs: torch.Tensor, b_rs: torch.Tensor,
                        w_sl: torch.Tensor, b_sl: torch.Tensor, layout: str = "NCHW", form: str = MIXES[0],
                        acc: torch.dtype = torch.float32) -> torch.Tensor:
    """z' for one batch. h: NCHW (B,C,H,W), NHWC (B,H,W,C) or NLC (B,L,C); z: (B,N);
    w_rs: (N,C); b_rs: (N,); w_sl: (N,); b_sl: (1,); ``form`` one of MIXES. Returns (B,N) in z.dtype."""
    check_layout(h, layout, w_rs.shape[1])
    return mix_pooled(pool(h, layout, acc), z, w_rs, b_rs, w_sl, b_sl, form, acc).to(z.dtype)


# Tolerances for comparing any kernel's output with the reference: about two output ulps of the
# dtype (both round the same float32 value, but their float32 sums may differ in order).
_TOLERANCES = {torch.float32: (1e-5, 1e-5), torch.float16: (2e-3, 2e-3), torch.bfloat16: (1.6e-2, 1.6e-2)}


def tolerance(dtype: torch.dtype) -> dict:
    """``atol``/``rtol`` keywords for torch.testing.assert_close on outputs of ``dtype``."""
    atol, rtol = _TOLERANCES[dtype]
    return {"atol": atol, "rtol": rtol}
