"""PyTorch reference of the Layover early-exit branch: the ground truth for every kernel.

    p  = pool(h)  = mean of h over its spatial/token axes  (B, C)    POOL_AXES[layout]
    ĥ  = rs(p)    = sigmoid(W_rs·p)                        (B, N)
    α  = gate(z)  = sigmoid(w_sl·z + b_sl)                 (B, 1)
    z' = mix      = α·ĥ + (1 − α)·z                        (B, N)

These four pieces are the branch's maths, written once: ``mix_pooled`` (the cached-feature
path) and ``fused_mix_reference`` compose them, the custom op's float64 forward and analytic
backward (op.py) call them, the benchmark's eager baseline runs them in the activations' dtype,
and onnx_export.py spells the same four pieces in ONNX ops one to one.

All arithmetic runs in float32 (``acc``; float64 only for gradcheck); the result takes z's dtype.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

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


def pool(h: torch.Tensor, layout: str, acc: torch.dtype = torch.float32) -> torch.Tensor:
    """p: the mean over ``POOL_AXES[layout]``, accumulated in ``acc`` -> (B, C)."""
    return h.to(acc).mean(dim=POOL_AXES[layout])


def rs(p: torch.Tensor, w_rs: torch.Tensor) -> torch.Tensor:
    """ĥ = sigmoid(p·W_rsᵀ), the official code's ``nn.Linear(C, N, bias=False)`` -> (B, N)."""
    return torch.sigmoid(F.linear(p, w_rs))


def gate(z: torch.Tensor, w_sl: torch.Tensor, b_sl: torch.Tensor) -> torch.Tensor:
    """α = sigmoid(z·w_sl + b_sl), one scalar per image -> (B, 1)."""
    return torch.sigmoid(F.linear(z, w_sl.reshape(1, -1), b_sl.reshape(1)))


def mix(h_hat: torch.Tensor, alpha: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """z' = α·ĥ + (1 − α)·z -> (B, N)."""
    return alpha * h_hat + (1.0 - alpha) * z


def terms(p: torch.Tensor, z: torch.Tensor, w_rs: torch.Tensor, w_sl: torch.Tensor, b_sl: torch.Tensor,
          acc: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ĥ, α, z) in ``acc``: what ``mix`` combines (the backward needs them too)."""
    zf = z.to(acc)
    return rs(p.to(acc), w_rs.to(acc)), gate(zf, w_sl.to(acc), b_sl.to(acc)), zf


def mix_pooled(p: torch.Tensor, z: torch.Tensor, w_rs: torch.Tensor, w_sl: torch.Tensor,
               b_sl: torch.Tensor, acc: torch.dtype = torch.float32) -> torch.Tensor:
    """The branch after pooling (RS, gate, mix) in ``acc``: the cached-feature path of the head,
    and exactly what ``fused_mix_reference`` runs after ``pool``."""
    return mix(*terms(p, z, w_rs, w_sl, b_sl, acc))


def fused_mix_reference(h: torch.Tensor, z: torch.Tensor, w_rs: torch.Tensor, w_sl: torch.Tensor,
                        b_sl: torch.Tensor, layout: str = "NCHW", acc: torch.dtype = torch.float32) -> torch.Tensor:
    """z' for one batch. h: NCHW (B,C,H,W), NHWC (B,H,W,C) or NLC (B,L,C); z: (B,N);
    w_rs: (N,C); w_sl: (N,); b_sl: (1,). Returns (B,N) in z.dtype."""
    check_layout(h, layout, w_rs.shape[1])
    return mix_pooled(pool(h, layout, acc), z, w_rs, w_sl, b_sl, acc).to(z.dtype)


# Tolerances for comparing any kernel's output with the reference: about two output ulps of the
# dtype (both round the same float32 value, but their float32 sums may differ in order).
_TOLERANCES = {torch.float32: (1e-5, 1e-5), torch.float16: (2e-3, 2e-3), torch.bfloat16: (1.6e-2, 1.6e-2)}


def tolerance(dtype: torch.dtype) -> dict:
    """``atol``/``rtol`` keywords for torch.testing.assert_close on outputs of ``dtype``."""
    atol, rtol = _TOLERANCES[dtype]
    return {"atol": atol, "rtol": rtol}
