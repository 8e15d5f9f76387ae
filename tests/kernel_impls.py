"""Every implementation of the ``fused_mix`` contract behind one call, for the conformance suite
(tests/test_fused_mix_conformance.py): ``run(case, args)`` returns z', ``missing(case)`` says what
this machine lacks to run it (None when it can).

    op-cpu         torch.ops.layover.fused_mix on CPU (the custom op's dispatch)
    triton         the Triton kernels: on the GPU, else the interpreter (tiny shapes only)
    cuda           the CUDA C++ kernel through ctypes (kernels/cuda_lib.py): GPU + LAYOVER_KERNELS_LIB
    onnx-standard  the standard-op ONNX export, run in ONNX Runtime (CPU)
    onnx-plugin    the LayoverFusedMix plugin-node export, run in ONNX Runtime through
                   onnxruntime-extensions (float32 only: a Python op has one signature)

The ONNX exports take the weights as graph inputs with every dimension dynamic, so one export
per (layout, form) serves every shape and dtype pair; ``onnx_model`` caches them for the session.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from dataclasses import dataclass
from typing import Callable

import torch
from kernel_cases import BF16, F16, F32, Case

from layover_edge.kernels.reference import LAYOUTS

GPU = torch.cuda.is_available()
HAS = {m: importlib.util.find_spec(m) is not None
       for m in ("triton", "onnx", "onnxruntime", "onnxscript", "onnxruntime_extensions")}


@dataclass(frozen=True)
class Implementation:
    device: str
    run: Callable[[Case, tuple], torch.Tensor]
    missing: Callable[[Case], str | None]


def _no_backbone(case: Case, what: str) -> str | None:
    return f"backbone shapes run on the GPU implementations only ({what})" if case.backbone else None


# --- the custom op on CPU ---------------------------------------------------------------------------

def _op_cpu(case, args):
    from layover_edge.kernels.op import fused_mix
    return fused_mix(*args, case.layout)


# --- Triton -------------------------------------------------------------------------------------------

def _triton(case, args):
    # conftest.py sets TRITON_INTERPRET=1 without a GPU, before Triton is first imported.
    from layover_edge.kernels.triton_fused_mix import fused_mix_triton
    return fused_mix_triton(*args, case.layout, pool_blocks=(8, 8) if case.small_tiles else None)


def _triton_missing(case):
    if not HAS["triton"]:
        return "needs triton (pip install triton)"
    if not (GPU or case.interpreted):
        return ("needs a GPU: the Triton interpreter (~10,000x slower) runs backbone shapes not at all and the "
                "multi-tile ones in fp16 only")
    return None


# --- CUDA C++ through ctypes ------------------------------------------------------------------------

@functools.cache
def _cuda_library():
    from layover_edge.kernels import cuda_lib
    return cuda_lib.load(os.environ["LAYOVER_KERNELS_LIB"])


def _cuda(case, args):
    from layover_edge.kernels import cuda_lib
    return cuda_lib.fused_mix_cuda(_cuda_library(), *args, case.layout)


def _cuda_missing(case):
    if not GPU:
        return "needs a CUDA GPU"
    if not os.environ.get("LAYOVER_KERNELS_LIB"):
        return ("needs LAYOVER_KERNELS_LIB=path/to/liblayover_kernels.so (cmake -S . -B build; "
                "benchmarks/gpu_check.sh sets it)")
    return None


# --- ONNX, in ONNX Runtime ----------------------------------------------------------------------------

class Branches(torch.nn.Module):
    """One fused_mix per (activation, weight) dtype pair, each on its own five inputs (weights
    included, so one export serves every C and N) and giving its own output."""

    def __init__(self, layout: str, pairs: int):
        super().__init__()
        self.layout, self.pairs = layout, pairs

    def forward(self, *args):
        from layover_edge.kernels.op import fused_mix
        return tuple(fused_mix(*args[5 * i:5 * i + 5], self.layout) for i in range(self.pairs))


@contextlib.contextmanager
def torchlib_registry_cached():
    """torch.onnx.export rebuilds its registry of torchlib functions on every call (about half of a
    small export's time); inside this context it starts from one built once. Test speed only, on
    private names: where they moved, exports just run at their usual speed."""
    try:
        from torch.onnx._internal.exporter import _registration
        registry_class = _registration.ONNXRegistry
        original = registry_class.__dict__["from_torchlib"]
    except (ImportError, AttributeError, KeyError):
        yield
        return

    def from_torchlib(cls, *args, **kwargs):
        key = (args, tuple(sorted(kwargs.items())))
        if key not in _registries:
            _registries[key] = original.__get__(None, cls)(*args, **kwargs)
        base = _registries[key]
        copy = cls()
        copy.__dict__.update(base.__dict__)
        copy.functions = {k: list(v) for k, v in base.functions.items()}
        return copy

    registry_class.from_torchlib = classmethod(from_torchlib)
    try:
        yield
    finally:
        registry_class.from_torchlib = original


_registries: dict = {}


def export_onnx(model, args, plugin: bool, dynamic_shapes=None):
    """``torch.onnx.export(dynamo=True)`` with the op's translation table; the ONNX ModelProto."""
    import onnx
    from layover_edge.kernels.onnx_export import translation_table

    with torchlib_registry_cached():
        program = torch.onnx.export(model, args, dynamo=True, custom_translation_table=translation_table(plugin),
                                    dynamic_shapes=dynamic_shapes, verbose=False)
    onnx.checker.check_model(program.model_proto)
    return program.model_proto


# The (h and z, weights) dtype pairs of CASES each form exports: the plugin op of ONNX Runtime is float32 only.
ONNX_DTYPES = {False: ((F32, F32), (F16, F32), (BF16, F32), (F16, F16)), True: ((F32, F32),)}


@functools.cache
def onnx_model(layout: str, *, plugin: bool):  # keyword-only: functools.cache keys on the spelling
    """(ModelProto, InferenceSession) of ``Branches(layout)`` over ``ONNX_DTYPES[plugin]``, every
    dimension dynamic: one export per layout and form (an export costs far more than a run), in
    which each fused_mix node is translated exactly as in a model of its own."""
    import onnxruntime as ort
    from kernel_cases import make_inputs
    from layover_edge.kernels.ort_plugin import session_options

    assert layout in LAYOUTS
    args, dims = [], []
    for i, (dtype, weight_dtype) in enumerate(ONNX_DTYPES[plugin]):
        B, C, H, W, N, L = (torch.export.Dim(f"{n}{i}", min=1) for n in ("B", "C", "H", "W", "N", "L"))
        h_dims = {"NCHW": {0: B, 1: C, 2: H, 3: W}, "NHWC": {0: B, 1: H, 2: W, 3: C}, "NLC": {0: B, 1: L, 2: C}}
        dims += [h_dims[layout], {0: B, 1: N}, {0: N, 1: C}, {0: N}, None]
        # Sizes >= 2 and all different, so the exporter neither specialises nor unifies a dimension.
        args += make_inputs(layout, *(n + 10 * i for n in (2, 3, 4, 5, 6)), dtype=dtype, weight_dtype=weight_dtype)
    proto = export_onnx(Branches(layout, len(ONNX_DTYPES[plugin])), tuple(args), plugin,
                        dynamic_shapes=(tuple(dims),))  # one entry: forward(*args)
    session = ort.InferenceSession(proto.SerializeToString(), session_options(), providers=["CPUExecutionProvider"])
    return proto, session


def _ort_value(t: torch.Tensor):
    """An OrtValue over ``t``'s memory (contiguous); bfloat16 through its bits, numpy has no such type."""
    import onnx
    import onnxruntime as ort
    if t.dtype == torch.bfloat16:
        return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(t.view(torch.int16).numpy(), onnx.TensorProto.BFLOAT16)
    return ort.OrtValue.ortvalue_from_numpy(t.numpy())


def run_onnx(case: Case, args, plugin: bool) -> torch.Tensor:
    """z' of ``args`` from the export's fused_mix for the case's dtypes (the other ones get 1-element
    inputs); the output lands in a torch tensor of z's dtype."""
    from kernel_cases import make_inputs

    _, session = onnx_model(case.layout, plugin=plugin)
    pairs = ONNX_DTYPES[plugin]
    mine = pairs.index((case.dtype, case.weight_dtype))
    feeds = [t for i, (dtype, weight_dtype) in enumerate(pairs) for t in
             (args if i == mine else make_inputs(case.layout, 1, 1, 1, 1, 1, dtype=dtype, weight_dtype=weight_dtype))]
    binding = session.io_binding()
    for meta, t in zip(session.get_inputs(), feeds, strict=True):
        binding.bind_ortvalue_input(meta.name, _ort_value(t.contiguous()))
    out = torch.empty(args[1].shape, dtype=args[1].dtype)
    for i, meta in enumerate(session.get_outputs()):
        if i == mine:
            binding.bind_ortvalue_output(meta.name, _ort_value(out))
        else:
            binding.bind_output(meta.name, "cpu")
    session.run_with_iobinding(binding)
    return out


def _onnx(plugin: bool):
    return lambda case, args: run_onnx(case, args, plugin)


def _onnx_missing(plugin: bool):
    needs = ("onnx", "onnxruntime", "onnxscript") + (("onnxruntime_extensions",) if plugin else ())

    def missing(case):
        absent = [m for m in needs if not HAS[m]]
        if absent:
            return f"needs {', '.join(absent)} (pip install -e .[export])"
        if (case.dtype, case.weight_dtype) not in ONNX_DTYPES[plugin]:
            if plugin:
                return "the ONNX Runtime plugin op is float32 only (a Python custom op has one signature)"
            return "no export for this pair of dtypes (add it to kernel_impls.ONNX_DTYPES)"
        return _no_backbone(case, "ONNX Runtime runs on the CPU")
    return missing


IMPLEMENTATIONS = {
    "op-cpu": Implementation("cpu", _op_cpu, lambda case: _no_backbone(case, "this one runs on the CPU")),
    "triton": Implementation("cuda" if GPU else "cpu", _triton, _triton_missing),
    "cuda": Implementation("cuda", _cuda, _cuda_missing),
    "onnx-standard": Implementation("cpu", _onnx(plugin=False), _onnx_missing(plugin=False)),
    "onnx-plugin": Implementation("cpu", _onnx(plugin=True), _onnx_missing(plugin=True)),
}
