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


@pytest.fixture
def small_fs(tmp_path):
    """``small_fs(size)``: a fresh tmpfs of ``size`` (e.g. "256k") mounted under tmp_path, unmounted
    afterwards; skips where this process may not mount (not root, no CAP_SYS_ADMIN)."""
    import subprocess
    mounted = []

    def mount(size: str, name: str = "fs"):
        where = tmp_path / name
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip() or 'mount failed'}): "
                        "disk-full and read-only cases need root")
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], check=False)



@pytest.fixture(scope="session")
def coco_lite0(tmp_path_factory):
    """(data root, feature cache) of the real coco2017-mini photos under ImageNet EfficientNet-Lite0 at
    224 px, extracted once per session by the CLI as a user would; skips where either is absent."""
    from real_data import need_coco_mini, need_lite0

    from layover_edge.cli import main
    root = need_coco_mini()
    need_lite0()
    cache = tmp_path_factory.mktemp("coco-lite0") / "cache"
    for split in ("train", "val"):
        assert main(["features", *COCO_LITE0_ARGS, "--data-root", str(root), "--split", split, "--cache", str(cache),
                     "--quiet"]) == 0
    return root, cache


COCO_LITE0_ARGS = ("--backbone", "tf_efficientnet_lite0", "--weights", "efficientnet-lite0", "--data", "coco2017")
