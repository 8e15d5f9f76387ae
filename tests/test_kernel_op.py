"""torch.ops.layover.fused_mix: dispatch, fake impl (compile/export), analytic backward, CUDA graphs and the
Triton fallback. Its forward on CPU against the reference: test_fused_mix_conformance.py (op-cpu)."""
import pytest
import torch
from kernel_cases import make_inputs

from layover_edge.kernels.op import fused_mix
from layover_edge.kernels.reference import LAYOUTS, fused_mix_reference, tolerance


@pytest.mark.parametrize("layout", LAYOUTS)
def test_gradcheck_float64(layout):
    args = [t.double().requires_grad_() for t in make_inputs(layout, 2, 5, 3, 2, 7, strided=True)]
    assert torch.autograd.gradcheck(lambda *a: fused_mix(*a, layout), args)


def test_backward_matches_autograd_of_the_reference():
    # float32 with a channels-last h, fp16-free so both sides see the same math.
    args = make_inputs("NCHW", 3, 6, 4, 5, 9, dtype=torch.float32, channels_last=True)
    ours = [t.clone().requires_grad_() for t in args]
    ref = [t.clone().requires_grad_() for t in args]
    g = torch.randn(3, 9)
    torch.autograd.backward(fused_mix(*ours, "NCHW"), g)
    torch.autograd.backward(fused_mix_reference(*ref, "NCHW"), g)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4)


def test_half_inputs_get_half_gradients():
    args = [t.requires_grad_() for t in make_inputs("NHWC", 2, 4, 2, 2, 6, dtype=torch.float16)]
    fused_mix(*args, "NHWC").sum().backward()
    assert [a.grad.dtype for a in args] == [a.dtype for a in args]


def test_opcheck():
    args = make_inputs("NLC", 2, 5, 1, 6, 7, dtype=torch.float32)
    torch.library.opcheck(torch.ops.layover.fused_mix.default, (*args, "NLC"))


def test_bad_layout_is_rejected():
    h, z, w_rs, w_sl, b_sl = make_inputs("NCHW", 1, 4, 2, 2, 3)
    with pytest.raises(ValueError):
        fused_mix(h, z, w_rs, w_sl, b_sl, "NHWC")  # h has 2 "channels" read as NHWC


def test_compile_and_export_trace_through_the_op():
    args = make_inputs("NHWC", 2, 6, 3, 3, 8, dtype=torch.float32)
    ref = fused_mix_reference(*args, "NHWC")
    compiled = torch.compile(lambda *a: fused_mix(*a, "NHWC"), fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(*args), ref)

    class Branch(torch.nn.Module):
        def forward(self, h, z, w_rs, w_sl, b_sl):
            return fused_mix(h, z, w_rs, w_sl, b_sl, "NHWC")

    ep = torch.export.export(Branch(), tuple(args))
    assert any(n.target is torch.ops.layover.fused_mix.default for n in ep.graph.nodes)
    torch.testing.assert_close(ep.module()(*args), ref)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cuda_dispatch_and_cuda_graph(layout):
    args = make_inputs(layout, 4, 64, 7, 9, 96, dtype=torch.float16, device="cuda", channels_last=True)
    ref = fused_mix_reference(*args, layout)
    torch.testing.assert_close(fused_mix(*args, layout), ref, **tolerance(torch.float16))
    fused_mix(*args, layout)  # compile outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fused_mix(*args, layout)
    graph.replay()
    torch.testing.assert_close(out, ref, **tolerance(torch.float16))
    from layover_edge.kernels import op
    assert op.triton_error is None, f"the Triton kernel failed and the op fell back: {op.triton_error}"


def test_cuda_dispatch_falls_back_to_pytorch_once_triton_fails(monkeypatch, caplog):
    # The CUDA registration called directly on CPU tensors: Triton runs in its interpreter here.
    pytest.importorskip("triton")
    from layover_edge.kernels import op, triton_fused_mix
    monkeypatch.setattr(op, "triton_error", None)
    args = make_inputs("NHWC", 2, 6, 3, 4, 10, dtype=torch.float32)
    ref = fused_mix_reference(*args, "NHWC")
    torch.testing.assert_close(op._fused_mix_cuda(*args, "NHWC"), ref)
    assert op.triton_error is None

    with pytest.raises(ValueError):  # a caller's shape error does not switch Triton off
        op._fused_mix_cuda(*args, "NCHW")
    assert op.triton_error is None

    calls = []

    def broken(*a, **k):
        calls.append(1)
        raise RuntimeError("ptxas fatal: unsupported gpu architecture")

    monkeypatch.setattr(triton_fused_mix, "fused_mix_triton", broken)
    torch.testing.assert_close(op._fused_mix_cuda(*args, "NHWC"), ref)
    torch.testing.assert_close(op._fused_mix_cuda(*args, "NHWC"), ref)
    assert len(calls) == 1 and "ptxas fatal" in op.triton_error
    assert "runs as PyTorch ops" in caplog.text
