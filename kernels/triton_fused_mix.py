"""The fused branch in Triton: a memset (torch.zeros) and two launches.

1. ``_pool_sum``: the bandwidth-bound part. Programs tile (batch, channel block, spatial
   chunk) and read their part of h exactly once, in tiles whose unit-stride axis is the memory's
   (spatial for NCHW memory, channels for channels-last/NLC), so loads coalesce in either
   format. Each adds its fp32 channel sums into p (B, C) with atomics: one small buffer that
   every mix program reads, instead of per-chunk partials that all ~N/64 mix programs would
   re-reduce (at batch 1 that re-reading outweighed h itself). p is zeroed by a memset first.
   The first program of each image also computes the gate α = sigmoid(z·w_sl + b_sl): a
   reduction over N that needs nothing from the pooling, so it rides along for free.
2. ``_mix``: the pooling must be complete before any output (a grid-wide dependency, hence the
   second launch): ĥ = sigmoid(p·W_rsᵀ) as a tl.dot over batch tiles, so W_rs is read once per
   16 images rather than once per image, then z' = α·ĥ + (1−α)·z.

Atomic float adds make p's rounding order, and so the last bit, vary from run to run.

Triton decides interpret-vs-compile when ``@triton.jit`` runs, so TRITON_INTERPRET=1 must be
set before this module is first imported (the tests do so).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import torch
import triton
import triton.language as tl

from .geometry import h_view, merge_spatial, pool_split

BLOCK_B = 16  # tl.dot needs every block dimension >= 16


@triton.jit
def _pool_sum(h_ptr, p_ptr, alpha_ptr, z_ptr, wsl_ptr, bsl_ptr,
              C, S, S2, N, chunk,
              stride_b, stride_c, stride_s1, stride_s2, stride_zb, stride_zn, stride_wsl,
              MERGED: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr):
    b = tl.program_id(0)
    pid_c = tl.program_id(1)
    pid_s = tl.program_id(2)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    base = h_ptr + b.to(tl.int64) * stride_b + offs_c[None, :].to(tl.int64) * stride_c
    acc = tl.zeros((BLOCK_S, BLOCK_C), dtype=tl.float32)
    start = pid_s * chunk
    for s0 in range(start, tl.minimum(start + chunk, S), BLOCK_S):
        offs_s = s0 + tl.arange(0, BLOCK_S)
        if MERGED:
            off_s = offs_s.to(tl.int64) * stride_s2
        else:
            off_s = (offs_s // S2).to(tl.int64) * stride_s1 + (offs_s % S2).to(tl.int64) * stride_s2
        mask = (offs_s[:, None] < S) & mask_c[None, :]
        acc += tl.load(base + off_s[:, None], mask=mask, other=0.0).to(tl.float32)
    tl.atomic_add(p_ptr + b * C + offs_c, tl.sum(acc, axis=0), mask=mask_c, sem="relaxed")

    if (pid_c == 0) & (pid_s == 0):
        dot = tl.zeros((BLOCK_N,), dtype=tl.float32)
        for n0 in range(0, N, BLOCK_N):
            offs_n = n0 + tl.arange(0, BLOCK_N)
            mask_n = offs_n < N
            zv = tl.load(z_ptr + b * stride_zb + offs_n * stride_zn, mask=mask_n, other=0.0)
            wv = tl.load(wsl_ptr + offs_n * stride_wsl, mask=mask_n, other=0.0)
            dot += zv.to(tl.float32) * wv.to(tl.float32)
        logit = tl.sum(dot, axis=0) + tl.load(bsl_ptr).to(tl.float32)
        tl.store(alpha_ptr + b, tl.sigmoid(logit))


@triton.jit
def _mix(p_ptr, alpha_ptr, z_ptr, w_ptr, out_ptr,
         B, C, N, inv_s,
         stride_zb, stride_zn, stride_wn, stride_wc, stride_ob, stride_on,
         BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    offs_b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_b = offs_b < B
    mask_n = offs_n < N
    acc = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        mask_c = offs_c < C
        p = tl.load(p_ptr + offs_b[:, None] * C + offs_c[None, :],
                    mask=mask_b[:, None] & mask_c[None, :], other=0.0)
        w = tl.load(w_ptr + offs_n[:, None] * stride_wn + offs_c[None, :] * stride_wc,
                    mask=mask_n[:, None] & mask_c[None, :], other=0.0).to(tl.float32)
        acc = tl.dot(p * inv_s, tl.trans(w), acc, input_precision="ieee")
    alpha = tl.load(alpha_ptr + offs_b, mask=mask_b, other=0.0)[:, None]
    mask = mask_b[:, None] & mask_n[None, :]
    z = tl.load(z_ptr + offs_b[:, None] * stride_zb + offs_n[None, :] * stride_zn,
                mask=mask, other=0.0).to(tl.float32)
    out = alpha * tl.sigmoid(acc) + (1.0 - alpha) * z
    tl.store(out_ptr + offs_b[:, None] * stride_ob + offs_n[None, :] * stride_on,
             out.to(out_ptr.dtype.element_ty), mask=mask)


def _pool_blocks(channels_fastest: bool, C: int, S: int) -> tuple[int, int]:
    """(BLOCK_S, BLOCK_C), ~4K elements per tile, long along the unit-stride axis."""
    if channels_fastest:
        block_c = min(triton.next_power_of_2(C), 128)
        return min(triton.next_power_of_2(S), 4096 // block_c), block_c
    block_s = min(triton.next_power_of_2(S), 512)
    return block_s, min(triton.next_power_of_2(C), 4096 // block_s)


class Launch(NamedTuple):
    kernel: Any
    grid: tuple[int, ...]
    args: tuple
    constexprs: dict[str, int]
    num_warps: int


def launches(h: torch.Tensor, z: torch.Tensor, w_rs: torch.Tensor, w_sl: torch.Tensor, b_sl: torch.Tensor,
             layout: str = "NCHW", *, pool_blocks: tuple[int, int] | None = None
             ) -> tuple[torch.Tensor, list[Launch]]:
    """The output buffer and the two launches that fill it; works on meta tensors too, which is
    how the tests compile exactly these launches for sm_87 and sm_90 without a GPU."""
    v = merge_spatial(h_view(h, layout, w_rs.shape[1]))
    N = w_rs.shape[0]
    block_s, block_c = pool_blocks or _pool_blocks(v.channels_fastest, v.C, v.S)
    c_blocks = triton.cdiv(v.C, block_c)
    n_split, chunk = pool_split(v.B, c_blocks, v.S, block_s)
    p = torch.zeros((v.B, v.C), device=h.device, dtype=torch.float32)
    alpha = torch.empty((v.B,), device=h.device, dtype=torch.float32)
    out = torch.empty((v.B, N), device=z.device, dtype=z.dtype)
    pool = Launch(_pool_sum, (v.B, c_blocks, n_split),
                  (h, p, alpha, z, w_sl, b_sl, v.C, v.S, v.S2, N, chunk,
                   v.stride_b, v.stride_c, v.stride_s1, v.stride_s2, z.stride(0), z.stride(1), w_sl.stride(0)),
                  {"MERGED": v.S1 == 1, "BLOCK_S": block_s, "BLOCK_C": block_c, "BLOCK_N": 1024}, 8)
    block_n = 64
    mix = Launch(_mix, (triton.cdiv(v.B, BLOCK_B), triton.cdiv(N, block_n)),
                 (p, alpha, z, w_rs, out, v.B, v.C, N, 1.0 / v.S,
                  z.stride(0), z.stride(1), w_rs.stride(0), w_rs.stride(1), out.stride(0), out.stride(1)),
                 {"BLOCK_B": BLOCK_B, "BLOCK_N": block_n, "BLOCK_C": 64}, 4)
    return out, [pool, mix]


def fused_mix_triton(h: torch.Tensor, z: torch.Tensor, w_rs: torch.Tensor, w_sl: torch.Tensor,
                     b_sl: torch.Tensor, layout: str = "NCHW", *, pool_blocks: tuple[int, int] | None = None
                     ) -> torch.Tensor:
    """Same contract as ``fused_mix_reference``; any strides; h, z and weights may differ in dtype.
    ``pool_blocks`` = (BLOCK_S, BLOCK_C), powers of two, overrides the tile so tests on tiny
    shapes still cover split chunks and ragged tails."""
    out, todo = launches(h, z, w_rs, w_sl, b_sl, layout, pool_blocks=pool_blocks)
    for k in todo:
        k.kernel[k.grid](*k.args, **k.constexprs, num_warps=k.num_warps)
    return out
