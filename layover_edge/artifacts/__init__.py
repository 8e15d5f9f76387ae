"""Every file format the package writes and reads, owned once: the checkpoint directory, the ONNX
metadata, the engine sidecar, and the model description all three carry (``ModelInfo``).
Training writes checkpoints; export writes ONNX files and engines; the runtime reads all three."""
