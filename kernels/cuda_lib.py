"""Call the CUDA C++ kernel (liblayover_kernels.so, built by the root CMakeLists.txt) from torch.

The library is found through ``LAYOVER_KERNELS_LIB`` (a path to the .so) or passed explicitly.
The struct below mirrors ``LayoverFusedMixArgs`` in fused_mix.h field for field, ``_DTYPES`` its
``LayoverDType`` (tests/test_kernel_cuda.py checks both against the header). h goes in as
``geometry.h_view`` gives it, H and W unmerged like the TensorRT plugin's describeH: the launcher
merges the spatial axes itself.
"""
from __future__ import annotations

import ctypes
import os

import torch

from .geometry import h_view

_DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
_I64 = ctypes.c_int64


class FusedMixArgs(ctypes.Structure):
    _fields_ = [("h", ctypes.c_void_p), ("h_dtype", ctypes.c_int32),
                ("B", _I64), ("C", _I64), ("S1", _I64), ("S2", _I64),
                ("h_stride_b", _I64), ("h_stride_c", _I64), ("h_stride_s1", _I64), ("h_stride_s2", _I64),
                ("z", ctypes.c_void_p), ("z_dtype", ctypes.c_int32), ("N", _I64),
                ("z_stride_b", _I64), ("z_stride_n", _I64),
                ("w_rs", ctypes.c_void_p), ("w_sl", ctypes.c_void_p), ("b_sl", ctypes.c_void_p),
                ("w_dtype", ctypes.c_int32),
                ("w_rs_stride_n", _I64), ("w_rs_stride_c", _I64), ("w_sl_stride", _I64),
                ("out", ctypes.c_void_p), ("out_stride_b", _I64), ("out_stride_n", _I64)]


def load(path: str | None = None) -> ctypes.CDLL:
    path = path or os.environ.get("LAYOVER_KERNELS_LIB")
    if not path:
        raise FileNotFoundError("set LAYOVER_KERNELS_LIB to liblayover_kernels.so (cmake -S . -B build)")
    lib = ctypes.CDLL(path)
    lib.layover_fused_mix_workspace_size.restype = ctypes.c_size_t
    lib.layover_fused_mix_workspace_size.argtypes = [ctypes.POINTER(FusedMixArgs)]
    lib.layover_fused_mix.restype = ctypes.c_int
    lib.layover_fused_mix.argtypes = [ctypes.POINTER(FusedMixArgs), ctypes.c_void_p, ctypes.c_size_t,
                                      ctypes.c_void_p]
    return lib


def make_args(h, z, w_rs, w_sl, b_sl, out, layout: str) -> FusedMixArgs:
    """The launcher's argument struct for these tensors (any strides; weights share one dtype)."""
    v = h_view(h, layout, w_rs.shape[1])
    if not (w_rs.dtype == w_sl.dtype == b_sl.dtype):
        raise TypeError("the CUDA kernel takes w_rs, w_sl and b_sl in one dtype")
    return FusedMixArgs(h.data_ptr(), _DTYPES[h.dtype], v.B, v.C, v.S1, v.S2,
                        v.stride_b, v.stride_c, v.stride_s1, v.stride_s2,
                        z.data_ptr(), _DTYPES[z.dtype], w_rs.shape[0], *z.stride(),
                        w_rs.data_ptr(), w_sl.data_ptr(), b_sl.data_ptr(), _DTYPES[w_rs.dtype],
                        *w_rs.stride(), w_sl.stride(0), out.data_ptr(), *out.stride())


def fused_mix_cuda(lib: ctypes.CDLL, h, z, w_rs, w_sl, b_sl, layout: str = "NCHW") -> torch.Tensor:
    """Same contract as ``fused_mix_reference``, on the current CUDA stream."""
    out = torch.empty(z.shape, device=z.device, dtype=z.dtype)
    args = make_args(h, z, w_rs, w_sl, b_sl, out, layout)
    ws = torch.empty(lib.layover_fused_mix_workspace_size(ctypes.byref(args)), device=h.device,
                     dtype=torch.uint8)
    rc = lib.layover_fused_mix(ctypes.byref(args), ws.data_ptr(), ws.numel(),
                               torch.cuda.current_stream(h.device).cuda_stream)
    if rc != 0:
        raise RuntimeError(f"layover_fused_mix failed with code {rc}")
    return out
