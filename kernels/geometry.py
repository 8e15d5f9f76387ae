"""How a layout-tagged h maps onto (B, C, S1, S2) with element strides, and how Triton splits the pooling.

Every kernel (Triton, CUDA C++, TensorRT plugin) sees h as a 4-D strided view
(B, C, S1, S2): NCHW and NHWC give S1=H, S2=W (NHWC only permutes the strides), NLC gives
S1=1, S2=L. ``h_view`` gives exactly that, unmerged: it is what cuda_lib passes to the C launcher,
as the TensorRT plugin's describeH does, and the launcher merges the spatial axes itself
(merge_spatial in fused_mix.cu), so both paths run the same kernel branch. ``merge_spatial`` below
is the same rule for the Triton kernel's own launch grid. The split of the pooling depends only
on the shape, not on the GPU, so results and workspace needs are the same on every device.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .reference import check_layout

# Triton: about four programs per SM of an H100/H200 (132 SMs): enough loads in flight to saturate
# memory, few enough that each program streams a long run of h and the atomics stay rare.
TARGET_PROGRAMS = 512


@dataclass(frozen=True)
class HView:
    B: int
    C: int
    S1: int
    S2: int
    stride_b: int
    stride_c: int
    stride_s1: int
    stride_s2: int

    @property
    def S(self) -> int:
        return self.S1 * self.S2

    @property
    def channels_fastest(self) -> bool:
        """True when channels are the unit-stride axis (channels-last / token memory)."""
        return self.stride_c == 1 and self.stride_s2 != 1


def h_view(h: torch.Tensor, layout: str, channels: int) -> HView:
    """h as (B, C, S1=H, S2=W) (NLC: S1=1, S2=L) with its element strides, spatial axes unmerged."""
    check_layout(h, layout, channels)
    if layout == "NCHW":
        (B, C, S1, S2), (sb, sc, s1, s2) = h.shape, h.stride()
    elif layout == "NHWC":
        B, S1, S2, C = h.shape
        sb, s1, s2, sc = h.stride()
    else:
        B, S2, C = h.shape
        sb, s2, sc = h.stride()
        S1, s1 = 1, 0
    return HView(B, C, S1, S2, sb, sc, s1, s2)


def merge_spatial(v: HView) -> HView:
    """When the two spatial axes form one arithmetic progression (stride_s1 == S2*stride_s2, true
    for every contiguous or channels-last tensor, or S1 == 1) they become one axis S1=1,
    S2=S1*S2, so the kernel skips the div/mod per element. The C twin of this rule, which the
    CUDA kernel and the TensorRT plugin go through: merge_spatial in kernels/fused_mix.cu."""
    if v.S1 == 1 or v.stride_s1 == v.S2 * v.stride_s2:
        return replace(v, S1=1, S2=v.S1 * v.S2, stride_s1=0)
    return v


def pool_split(B: int, c_blocks: int, S: int, block_s: int) -> tuple[int, int]:
    """(n_split, chunk): split S into n_split chunks of ``chunk`` (a multiple of block_s) so that
    B * c_blocks * n_split reaches about TARGET_PROGRAMS."""
    s_blocks = -(-S // block_s)
    want = max(1, min(s_blocks, -(-TARGET_PROGRAMS // (B * c_blocks))))
    chunk = -(-s_blocks // want) * block_s
    return -(-S // chunk), chunk
