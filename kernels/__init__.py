"""The fused Layover branch in every form: the PyTorch reference (ground truth), the Triton kernel,
the ``torch.ops.layover.fused_mix`` custom op the models call, its ONNX forms, the CUDA C++ kernel
and the TensorRT IPluginV3 plugin (C++ sources beside this file, built by the root CMakeLists.txt).

This folder is installed as ``layover_edge.kernels`` (pyproject's package-dir); it imports the
rest of the package by absolute name. Modules are imported by name (``layover_edge.kernels.op``),
so the torch-free ones (``identity``) load without torch.
"""
if __name__ != "layover_edge.kernels":  # e.g. ``import kernels`` from the repository root
    raise ImportError(f"this folder is the package layover_edge.kernels; import it by that name, not {__name__!r} "
                      "(a second copy would register the layover::fused_mix op twice)")
