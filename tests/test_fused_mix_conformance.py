"""The ``fused_mix`` contract, one suite for every implementation: each runs through the same
shape list (tests/kernel_cases.py CASES: NCHW, channels-last NCHW, NHWC and NLC; fp32, fp16 and
bf16; batch 1, H·W = 1, ragged tiles, several batch/output tiles, non-contiguous inputs, spatial
axes that cannot merge, weights in another dtype than h; the paper's tap shapes on a GPU) and
must match the PyTorch reference within ``reference.tolerance`` of the output's dtype, in z's
dtype and shape. Implementations: tests/kernel_impls.py. A skip names what this machine lacks.

What only one implementation has (gradcheck/opcheck, compile/export tracing, CUDA graphs, the
Triton fallback, ahead-of-time compiles, ptxas reports, the plugin's build) stays in its own
test_kernel_*.py file.
"""
import pytest
import torch
from kernel_cases import CASES
from kernel_impls import IMPLEMENTATIONS

from layover_edge.kernels.reference import fused_mix_reference, tolerance


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_matches_the_reference(impl, case):
    implementation = IMPLEMENTATIONS[impl]
    reason = implementation.missing(case)
    if reason:
        pytest.skip(f"{impl}: {reason}")
    args = case.inputs(implementation.device)
    out = implementation.run(case, args)
    ref = fused_mix_reference(*args, case.layout)
    torch.testing.assert_close(out, ref, **tolerance(case.dtype))  # also checks dtype, shape and device
