"""The CUDA C++ kernel (through ctypes) against the reference. Needs a GPU.

Uses LAYOVER_KERNELS_LIB when set (benchmarks/gpu_check.sh sets it), else builds the library
with CMake for the local GPU's architecture.
"""
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from kernel_cases import make_inputs

from layover_edge.kernels import cuda_lib
from layover_edge.kernels.reference import fused_mix_reference, tolerance

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    path = os.environ.get("LAYOVER_KERNELS_LIB")
    if not path:
        if not shutil.which("cmake"):
            pytest.skip("set LAYOVER_KERNELS_LIB or put cmake on PATH")
        build = tmp_path_factory.mktemp("cmake-build")
        root = Path(__file__).resolve().parents[1]
        subprocess.run(["cmake", "-S", str(root), "-B", str(build), "-DCMAKE_CUDA_ARCHITECTURES=native"],
                       check=True, capture_output=True)
        subprocess.run(["cmake", "--build", str(build), "--target", "layover_kernels", "-j"], check=True,
                       capture_output=True)
        path = str(build / "liblayover_kernels.so")
    return cuda_lib.load(path)


def check(lib, layout, B, C, H, W, N, dtype, weight_dtype=torch.float32, **kw):
    args = make_inputs(layout, B, C, H, W, N, dtype=dtype, weight_dtype=weight_dtype, device="cuda", **kw)
    out = cuda_lib.fused_mix_cuda(lib, *args, layout)
    torch.testing.assert_close(out, fused_mix_reference(*args, layout), **tolerance(dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout,channels_last", [("NCHW", False), ("NCHW", True), ("NHWC", False),
                                                  ("NLC", False)])
def test_small_shapes(lib, layout, channels_last, dtype):
    for B, C, H, W, N in ((1, 7, 1, 1, 5), (3, 13, 5, 7, 33), (9, 70, 9, 11, 300)):
        check(lib, layout, B, C, H, W, N, dtype, channels_last=channels_last)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC", "NLC"])
def test_non_contiguous_and_half_weights(lib, layout):
    check(lib, layout, 5, 24, 6, 5, 40, torch.float16, weight_dtype=torch.float16, strided=True)
    h, z, w_rs, w_sl, b_sl = make_inputs(layout, 2, 5, 6, 5, 9, dtype=torch.float32, device="cuda")
    if layout == "NCHW":  # H sliced: spatial axes that cannot merge
        h = h[:, :, ::2, :]
        torch.testing.assert_close(cuda_lib.fused_mix_cuda(lib, h, z, w_rs, w_sl, b_sl, layout),
                                   fused_mix_reference(h, z, w_rs, w_sl, b_sl, layout), **tolerance(torch.float32))


@pytest.mark.parametrize("layout,C,H,W,N,channels_last", [
    ("NCHW", 768, 112, 112, 6144, True), ("NCHW", 768, 112, 112, 6144, False),
    ("NHWC", 128, 96, 96, 1024, False), ("NLC", 1536, 12, 12, 1536, False)])
def test_backbone_shapes(lib, layout, C, H, W, N, channels_last):
    for B in (1, 17):
        check(lib, layout, B, C, H, W, N, torch.float16, channels_last=channels_last)
