"""The bottom layer: errors, configuration and defaults, atomic file I/O, devices, torchrun.

Nothing here imports another layover_edge layer; torch is imported only where a function needs it,
so the device path (ONNX Runtime, TensorRT) runs without torch.
"""
