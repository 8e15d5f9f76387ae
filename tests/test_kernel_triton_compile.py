"""The Triton kernels compiled ahead of time for Jetson Orin (sm_87) and H100/H200 (sm_90) on
the paper's shapes, with no GPU: Triton's own code generator and the ptxas it ships, on exactly
the launches ``fused_mix_triton`` makes (``launches()`` on meta tensors). The interpreter tests check
the arithmetic; this catches what only compilation sees (types, layouts, tl.dot shapes, shared
memory) and checks that h is read with 16-byte vector loads in every layout.

Triton picks interpreter or compiler when it is imported, and its interpreter patches the
language as it runs, so the compiling happens in a child process started without
TRITON_INTERPRET: this file run as a script prints one JSON result per launch.
"""
import json
import os
import re
import subprocess
import sys

import pytest
import torch

pytest.importorskip("triton")

TYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
CAPABILITIES = {"sm87-orin": 87, "sm90-hopper": 90}


def compile_launch(launch, capability: int):
    """Compile one launch the way a kernel call specialises it: pointers 16-byte aligned (every
    torch allocation is), integers divisible by 16 marked so, integers equal to 1 folded in."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = launch.kernel
    signature, constexprs, attrs = {}, dict(launch.constexprs), {}
    for i, (name, value) in enumerate(zip(fn.arg_names, launch.args)):
        if isinstance(value, torch.Tensor):
            signature[name] = "*" + TYPES[value.dtype]
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(value, float):
            signature[name] = "fp32"
        elif value == 1:
            signature[name], constexprs[name] = "constexpr", 1
        else:
            signature[name] = "i32" if abs(value) < 2 ** 31 else "i64"
            if value % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    signature |= {name: "constexpr" for name in launch.constexprs}
    return triton.compile(ASTSource(fn, signature, constexprs, attrs), target=GPUTarget("cuda", capability, 32),
                          options={"num_warps": launch.num_warps})


def meta_inputs(layout, B, C, H, W, N, dtype, channels_last=False):
    shape = {"NCHW": (B, C, H, W), "NHWC": (B, H, W, C), "NLC": (B, H * W, C)}[layout]
    h = torch.empty(shape, device="meta", dtype=dtype)
    if channels_last:
        h = h.contiguous(memory_format=torch.channels_last)
    return (h, torch.empty(B, N, device="meta", dtype=dtype), torch.empty(N, C, device="meta", dtype=dtype),
            torch.empty(N, device="meta", dtype=dtype), torch.empty(1, device="meta", dtype=dtype))


# (layout, C, H, W, N, channels_last): BiT-R50x3 @1/@3 at 448 px, Swin-B @1 at 384, ViT-B/16 tokens.
SHAPES = {"bit1-nchw": ("NCHW", 768, 112, 112, 6144, False), "bit1-channels-last": ("NCHW", 768, 112, 112, 6144, True),
          "bit3-nchw": ("NCHW", 3072, 28, 28, 6144, False), "swinb1-nhwc": ("NHWC", 128, 96, 96, 1024, False),
          "vitb-tokens": ("NLC", 768, 14, 14, 768, False)}
BATCH_DTYPES = ((1, torch.float16), (32, torch.bfloat16), (3, torch.float32))


def compile_all() -> dict:
    """{case: {launch name: result}} for every shape x architecture x (batch, dtype)."""
    from layover_edge.kernels.triton_fused_mix import launches
    cases = {f"{shape}/{arch}/b{B}-{str(dtype)[6:]}": (SHAPES[shape], cap, B, dtype)
             for shape in SHAPES for arch, cap in CAPABILITIES.items() for B, dtype in BATCH_DTYPES}
    results = {}
    for case, ((layout, C, H, W, N, channels_last), cap, B, dtype) in cases.items():
        out, todo = launches(*meta_inputs(layout, B, C, H, W, N, dtype, channels_last), layout)
        results[case] = {"out": [list(out.shape), str(out.dtype)]}
        for launch in todo:
            r = {"grid": list(launch.grid)}
            try:
                k = compile_launch(launch, cap)
                r |= {"ok": bool(k.asm["cubin"]), "shared": k.metadata.shared,
                      "vector_loads": bool(re.search(r"ld\.global(\.\w+)*\.v4\.b32", k.asm["ptx"]))}
            except Exception as e:  # reported by the test that reads it
                r |= {"ok": False, "error": f"{type(e).__name__}: {e}"[-3000:]}
            results[case][launch.kernel.__name__] = r
    return results


@pytest.fixture(scope="module")
def compiled() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.mark.parametrize("capability", CAPABILITIES)
@pytest.mark.parametrize("shape", SHAPES)
def test_launches_compile_and_read_h_with_vector_loads(compiled, shape, capability):
    for B, dtype in BATCH_DTYPES:
        case = compiled[f"{shape}/{capability}/b{B}-{str(dtype)[6:]}"]
        assert case["out"] == [[B, SHAPES[shape][4]], str(dtype)]
        for name in ("_pool_sum", "_mix"):
            r = case[name]
            assert r["ok"], r.get("error")
            assert r["shared"] <= 48 * 1024  # the default per-block limit, on every architecture
            assert max(r["grid"][1:]) < 65536  # CUDA's limit on grid y and z
        # h in 16-byte vectors (8 fp16/bf16 or 4 fp32 elements): the tile walks the unit-stride axis.
        assert case["_pool_sum"]["vector_loads"], "h is not read with vector loads"


if __name__ == "__main__":
    print(json.dumps(compile_all()))
