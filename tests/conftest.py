import os

import torch

if not torch.cuda.is_available():
    # Triton decides interpret-vs-compile when a kernel module is first imported, and any test
    # may import the kernels first: without a GPU, every Triton kernel runs in the interpreter.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

torch.set_num_threads(2)
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download weights


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(0)
