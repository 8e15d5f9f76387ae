"""What only the Triton kernel has: its own launch grid, which merges the two spatial axes where
the strides allow (geometry.merge_spatial; the CUDA launcher does the same in C). Its numbers
against the reference: test_fused_mix_conformance.py (triton); its ahead-of-time compiles for
sm_87/sm_90: test_kernel_triton_compile.py; the op's fallback when it fails: test_kernel_op.py."""
import pytest
import torch

pytest.importorskip("triton")

from kernel_cases import ARRANGEMENTS, make_inputs  # noqa: E402

from layover_edge.kernels.triton_fused_mix import launches  # noqa: E402


@pytest.mark.parametrize("arrangement,spatial_gap", [(a, False) for a in ARRANGEMENTS]
                         + [(a, True) for a in ARRANGEMENTS if a != "nlc"])  # tokens: one spatial axis
def test_launches_merge_the_spatial_axes_where_the_strides_allow(arrangement, spatial_gap):
    layout, channels_last = ARRANGEMENTS[arrangement]
    args = make_inputs(layout, 2, 5, 3, 4, 6, device="meta", channels_last=channels_last, spatial_gap=spatial_gap)
    out, (pool, mix) = launches(*args, layout)
    assert out.shape == (2, 6) and out.dtype == torch.float16
    assert pool.constexprs["MERGED"] == (not spatial_gap)
    S, S2 = pool.args[7], pool.args[8]
    assert S == 12 and S2 == (4 if spatial_gap else 12)
