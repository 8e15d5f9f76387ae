"""PyTorch reference of the Layover early-exit branch: the ground truth for every kernel.

    p  = mean of h over its spatial/token axes        (B, C)
    ĥ  = sigmoid(p @ w_rs.T)                          (B, N)
    α  = sigmoid(z @ w_sl + b_sl)                     (B, 1)
    z' = α·ĥ + (1 − α)·z                              (B, N)

All arithmetic runs in float32; the result takes z's dtype.
"""
from __future__ import annotations

import torch

LAYOUTS = ("NCHW", "NHWC", "NLC")


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


def pool(h: torch.Tensor, layout: str) -> torch.Tensor:
    """Mean over every axis but batch and channel, accumulated in float32 -> (B, C)."""
    dims = {"NCHW": (2, 3), "NHWC": (1, 2), "NLC": (1,)}[layout]
    return h.float().mean(dim=dims)


def mix_pooled(p: torch.Tensor, z: torch.Tensor, w_rs: torch.Tensor, w_sl: torch.Tensor,
               b_sl: torch.Tensor) -> torch.Tensor:
    """The branch after pooling: RS (linear + sigmoid), the α gate and the mix, in float32."""
    zf = z.float()
    h_hat = torch.sigmoid(p.float() @ w_rs.float().t())
    alpha = torch.sigmoid(zf @ w_sl.float().reshape(-1, 1) + b_sl.float().reshape(1, 1))
    return alpha * h_hat + (1.0 - alpha) * zf


def fused_mix_reference(h: torch.Tensor, z: torch.Tensor, w_rs: torch.Tensor, w_sl: torch.Tensor,
                        b_sl: torch.Tensor, layout: str = "NCHW") -> torch.Tensor:
    """z' for one batch. h: NCHW (B,C,H,W), NHWC (B,H,W,C) or NLC (B,L,C); z: (B,N);
    w_rs: (N,C); w_sl: (N,); b_sl: (1,). Returns (B,N) in z.dtype."""
    check_layout(h, layout, w_rs.shape[1])
    return mix_pooled(pool(h, layout), z, w_rs, w_sl, b_sl).to(z.dtype)


# Tolerances for comparing any kernel's output with the reference: about two output ulps of the
# dtype (both round the same float32 value, but their float32 sums may differ in order).
_TOLERANCES = {torch.float32: (1e-5, 1e-5), torch.float16: (2e-3, 2e-3), torch.bfloat16: (1.6e-2, 1.6e-2)}


def tolerance(dtype: torch.dtype) -> dict:
    """``atol``/``rtol`` keywords for torch.testing.assert_close on outputs of ``dtype``."""
    atol, rtol = _TOLERANCES[dtype]
    return {"atol": atol, "rtol": rtol}
