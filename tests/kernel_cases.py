"""fused_mix inputs for the kernel tests: ``make_inputs`` (random tensors in every layout and
memory arrangement) and ``CASES``, the one shape list every implementation runs through
(tests/test_fused_mix_conformance.py)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16
DTYPE_NAMES = {F32: "fp32", F16: "fp16", BF16: "bf16"}


def make_inputs(layout: str, B: int, C: int, H: int, W: int, N: int, dtype=torch.float16,
                weight_dtype=torch.float32, device="cpu", channels_last=False, strided=False,
                spatial_gap=False, seed=0):
    """(h, z, w_rs, w_sl, b_sl) with h in ``layout`` (NLC uses L = H·W).

    ``channels_last`` stores an NCHW h channels-last; ``strided`` makes every tensor a
    non-contiguous view (h sliced along its last axis, z and w_rs transposed copies, w_sl
    every other element), so kernels must honour strides instead of assuming packing;
    ``spatial_gap`` takes every other row of H (NCHW, NHWC), so stride_h != W·stride_w and the
    two spatial axes cannot be walked as one.
    """
    g = torch.Generator().manual_seed(seed)
    shape = {"NCHW": (B, C, H, W), "NHWC": (B, H, W, C), "NLC": (B, H * W, C)}[layout]
    h_axis = {"NCHW": 2, "NHWC": 1}.get(layout)
    if spatial_gap:
        shape = tuple(2 * n if i == h_axis else n for i, n in enumerate(shape))
    if strided:
        shape = shape[:-1] + (2 * shape[-1],)
    h = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
    if channels_last and layout == "NCHW":
        h = h.contiguous(memory_format=torch.channels_last)
    if strided:
        h = h[..., ::2]
    if spatial_gap:
        h = h[(slice(None),) * h_axis + (slice(None, None, 2),)]
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


# Memory arrangements of h: (layout, NCHW stored channels-last).
ARRANGEMENTS = {"nchw": ("NCHW", False), "nchw-cl": ("NCHW", True), "nhwc": ("NHWC", False), "nlc": ("NLC", False)}


@dataclass(frozen=True)
class Case:
    """One fused_mix input: shape (NLC: L = H·W), dtypes and memory arrangement."""
    name: str
    arrangement: str
    B: int
    C: int
    H: int
    W: int
    N: int
    dtype: torch.dtype = F16            # h and z (and so the output)
    weight_dtype: torch.dtype = F32     # w_rs, w_sl, b_sl
    strided: bool = False
    spatial_gap: bool = False
    small_tiles: bool = False           # Triton: 8x8 pooling tiles, so tiny shapes split into chunks with ragged tails
    interpreted: bool = True            # run by the Triton interpreter too (~10,000x slower than a GPU)
    backbone: bool = False              # a real backbone's size: GPU implementations only

    @property
    def layout(self) -> str:
        return ARRANGEMENTS[self.arrangement][0]

    @property
    def id(self) -> str:
        w = "" if self.weight_dtype == F32 else f"-w{DTYPE_NAMES[self.weight_dtype]}"
        return f"{self.name}-{self.arrangement}-{DTYPE_NAMES[self.dtype]}{w}"

    def inputs(self, device="cpu"):
        return make_inputs(self.layout, self.B, self.C, self.H, self.W, self.N, dtype=self.dtype,
                           weight_dtype=self.weight_dtype, device=device,
                           channels_last=ARRANGEMENTS[self.arrangement][1], strided=self.strided,
                           spatial_gap=self.spatial_gap)


def _cases() -> list[Case]:
    cases = []
    # Every arrangement x dtype (fp16/bf16 activations with fp32 weights) on four shapes: a small one;
    # batch 1 with H·W = 1; ragged tiles (C = 13 and S = 35 over several tiles with partial last
    # ones, N = 33 across CUDA's 32-row mix blocks); several batch and output tiles (B = 17 > Triton's
    # 16 and CUDA's 8 images per mix program, N = 70 > 64, C = 70 > 64). The Triton interpreter
    # runs the last two in fp16 only (they launch tens of programs; a GPU runs every dtype).
    shapes = {"small": ((2, 12, 3, 5, 20), False), "b1-hw1": ((1, 7, 1, 1, 24), False),
              "ragged": ((3, 13, 5, 7, 33), True), "tiles": ((17, 70, 3, 3, 70), False)}
    for name, (shape, small_tiles) in shapes.items():
        for arrangement in ARRANGEMENTS:
            for dtype in (F32, F16, BF16):
                cases.append(Case(name, arrangement, *shape, dtype=dtype, small_tiles=small_tiles,
                                  interpreted=name in ("small", "b1-hw1") or dtype == F16))
    # Non-contiguous views of every input; and weights in h's dtype rather than fp32.
    for arrangement in ARRANGEMENTS:
        for dtype in (F32, F16, BF16):
            cases.append(Case("strided", arrangement, 2, 6, 4, 3, 10, dtype=dtype, strided=True, small_tiles=True))
        cases.append(Case("strided", arrangement, 5, 24, 6, 5, 40, dtype=F16, weight_dtype=F16, strided=True))
    # Every other row of H: the spatial axes cannot be walked as one (the div/mod branch).
    for arrangement in ("nchw", "nchw-cl", "nhwc"):
        cases.append(Case("gap", arrangement, 2, 5, 3, 5, 9, dtype=F32, spatial_gap=True, small_tiles=True))
    # bf16 activations with fp32 weights, N across two 64-wide output tiles.
    cases.append(Case("wide-n", "nhwc", 2, 9, 2, 3, 70, dtype=BF16))
    # The paper's taps at batch 1 and 17, fp16: BiT-R50x3 @1 (NCHW and channels-last), Swin-B @1, ViT tokens.
    for B in (1, 17):
        cases += [Case(f"bit1-b{B}", arrangement, B, 768, 112, 112, 6144, interpreted=False, backbone=True)
                  for arrangement in ("nchw-cl", "nchw")]
        cases += [Case(f"swinb1-b{B}", "nhwc", B, 128, 96, 96, 1024, interpreted=False, backbone=True)]
        cases += [Case(f"tokens{C}-b{B}", "nlc", B, C, 12, 12, C, interpreted=False, backbone=True)
                  for C in (1024, 1536)]
    return cases


CASES = _cases()
