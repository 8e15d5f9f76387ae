"""What only the CUDA C++ path has, checked without a GPU: cuda_lib's ctypes mirror of fused_mix.h (the
argument struct, the dtype codes) and the view it passes (H and W as they are, as the TensorRT
plugin's describeH does: the launcher merges them). The kernel's numbers against the reference:
test_fused_mix_conformance.py (cuda; needs a GPU and LAYOVER_KERNELS_LIB)."""
import ctypes
import re
from pathlib import Path

import pytest
import torch
from kernel_cases import ARRANGEMENTS, make_inputs

from layover_edge.kernels import cuda_lib

HEADER = (Path(__file__).resolve().parents[1] / "kernels" / "fused_mix.h").read_text()
C_TYPES = {"const void*": ctypes.c_void_p, "void*": ctypes.c_void_p, "int32_t": ctypes.c_int32,
           "int64_t": ctypes.c_int64}


def test_ctypes_struct_mirrors_the_header():
    body = re.search(r"typedef struct LayoverFusedMixArgs \{(.*?)\} LayoverFusedMixArgs;", HEADER, re.S).group(1)
    fields = []
    for decl in re.sub(r"/\*.*?\*/", "", body, flags=re.S).split(";"):
        m = re.match(r"\s*((?:const )?\w+\*?)\s+(.+)", decl.strip())
        if m:
            fields += [(name.strip(), C_TYPES[m.group(1)]) for name in m.group(2).split(",")]
    assert [(n, t) for n, t in cuda_lib.FusedMixArgs._fields_] == fields


def test_dtype_codes_mirror_the_header():
    enum = re.search(r"enum LayoverDType \{(.*?)\};", HEADER, re.S).group(1)
    codes = {name: int(value) for name, value in re.findall(r"LAYOVER_(\w+) = (\d+)", enum)}
    assert {str(t): c for t, c in cuda_lib._DTYPES.items()} == {
        "torch.float32": codes["F32"], "torch.float16": codes["F16"], "torch.bfloat16": codes["BF16"]}


@pytest.mark.parametrize("arrangement,want", [
    ("nchw", (3, 4, 4, 1)), ("nchw-cl", (3, 4, 4 * 5, 5)), ("nhwc", (3, 4, 4 * 5, 5)), ("nlc", (1, 12, 0, 5))])
def test_args_pass_the_spatial_axes_unmerged(arrangement, want):
    layout, channels_last = ARRANGEMENTS[arrangement]
    h, z, w_rs, w_sl, b_sl = make_inputs(layout, 2, 5, 3, 4, 6, dtype=torch.float32, channels_last=channels_last)
    a = cuda_lib.make_args(h, z, w_rs, w_sl, b_sl, torch.empty_like(z), layout)
    assert (a.B, a.C, a.S1, a.S2, a.h_stride_s1, a.h_stride_s2) == (2, 5, *want)
