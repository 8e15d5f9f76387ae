"""Random fused_mix inputs in every layout and memory arrangement, for tests and benchmarks."""
from __future__ import annotations

import torch


def make_inputs(layout: str, B: int, C: int, H: int, W: int, N: int, dtype=torch.float16,
                weight_dtype=torch.float32, device="cpu", channels_last=False, strided=False,
                seed=0):
    """(h, z, w_rs, w_sl, b_sl) with h in ``layout`` (NLC uses L = H·W).

    ``channels_last`` stores an NCHW h channels-last; ``strided`` makes every tensor a
    non-contiguous view (h sliced along its last axis, z and w_rs transposed copies, w_sl
    every other element), so kernels must honour strides instead of assuming packing.
    """
    g = torch.Generator().manual_seed(seed)
    shape = {"NCHW": (B, C, H, W), "NHWC": (B, H, W, C), "NLC": (B, H * W, C)}[layout]
    if strided:
        shape = shape[:-1] + (2 * shape[-1],)
    h = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
    if channels_last and layout == "NCHW":
        h = h.contiguous(memory_format=torch.channels_last)
    if strided:
        h = h[..., ::2]
    z = torch.randn(B, N, generator=g).to(device=device, dtype=dtype)
    w_rs = (torch.randn(N, C, generator=g) / C ** 0.5).to(device=device, dtype=weight_dtype)
    w_sl = (torch.randn(2 * N, generator=g) / N ** 0.5).to(device=device, dtype=weight_dtype)
    b_sl = torch.randn(1, generator=g).to(device=device, dtype=weight_dtype)
    if strided:
        z, w_rs = z.t().contiguous().t(), w_rs.t().contiguous().t()
        w_sl = w_sl[::2]
    else:
        w_sl = w_sl[:N]
    return h, z, w_rs, w_sl, b_sl
