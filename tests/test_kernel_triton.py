"""The Triton kernel against the reference: on the GPU when there is one, else under the Triton
interpreter on tiny shapes (about 10,000x slower than a GPU)."""
import os

import pytest
import torch

if not torch.cuda.is_available():
    # Triton fixes interpret-vs-compile when the kernel module is imported, so set it first.
    os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton")

from kernel_cases import make_inputs  # noqa: E402

from layover_edge.kernels.reference import fused_mix_reference, tolerance  # noqa: E402
from layover_edge.kernels.triton_fused_mix import fused_mix_triton  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def check(layout, B, C, H, W, N, dtype, pool_blocks=None, **kw):
    h, z, w_rs, w_sl, b_sl = make_inputs(layout, B, C, H, W, N, dtype=dtype, device=DEVICE, **kw)
    out = fused_mix_triton(h, z, w_rs, w_sl, b_sl, layout, pool_blocks=pool_blocks)
    ref = fused_mix_reference(h, z, w_rs, w_sl, b_sl, layout)
    assert out.dtype == z.dtype and out.shape == z.shape
    torch.testing.assert_close(out, ref, **tolerance(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC", "NLC"])
def test_layouts_dtypes(layout, dtype):
    check(layout, 2, 12, 3, 5, 20, dtype)


@pytest.mark.parametrize("layout,channels_last", [("NCHW", False), ("NCHW", True), ("NHWC", False),
                                                  ("NLC", False)])
def test_split_chunks_and_ragged_tails(layout, channels_last):
    # 4x4 tiles over C=13, S=21: several spatial chunks per image, partial last tiles in both axes.
    check(layout, 3, 13, 3, 7, 17, torch.float16, pool_blocks=(4, 4), channels_last=channels_last)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC", "NLC"])
def test_non_contiguous_inputs(layout):
    check(layout, 2, 6, 4, 3, 10, torch.float32, pool_blocks=(4, 4), strided=True)


def test_spatial_axes_that_cannot_merge():
    # Slicing H of an NCHW tensor breaks stride_h == W * stride_w: the kernel's div/mod path.
    h, z, w_rs, w_sl, b_sl = make_inputs("NCHW", 2, 5, 6, 5, 9, dtype=torch.float32, device=DEVICE)
    h = h[:, :, ::2, :]
    out = fused_mix_triton(h, z, w_rs, w_sl, b_sl, "NCHW", pool_blocks=(4, 4))
    torch.testing.assert_close(out, fused_mix_reference(h, z, w_rs, w_sl, b_sl, "NCHW"),
                               **tolerance(torch.float32))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC", "NLC"])
def test_batch1_and_single_position(layout):
    check(layout, 1, 7, 1, 1, 24, torch.float16)


def test_weights_in_other_dtype_and_wide_n():
    # bf16 activations with fp32 weights; N spans two 64-wide output tiles.
    check("NHWC", 2, 9, 2, 3, 70, torch.bfloat16)


@pytest.mark.skipif(DEVICE != "cuda", reason="real backbone shapes need a GPU")
@pytest.mark.parametrize("layout,C,H,W,N,channels_last", [
    ("NCHW", 768, 112, 112, 6144, True), ("NCHW", 768, 112, 112, 6144, False),
    ("NHWC", 128, 96, 96, 1024, False), ("NLC", 1024, 12, 12, 1024, False)])
def test_backbone_shapes_on_gpu(layout, C, H, W, N, channels_last):
    for B in (1, 17):
        check(layout, B, C, H, W, N, torch.float16, channels_last=channels_last)
