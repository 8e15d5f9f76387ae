"""torchrun with 2 gloo processes on CPU gives the 1-process results: the sharded feature cache,
the head trained from it, and DDP fine-tuning from images (global batch split over ranks)."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from layover_edge import cli

COMMON = ["--backbone", "test_convnext", "--weights", "none", "--image-size", "32", "--data", "synthetic",
          "--train-size", "32", "--val-size", "16", "--data-image-size", "32", "--num-classes", "5",
          "--batch-size", "8", "--device", "cpu", "--quiet", "--json"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args, nproc=2):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", "--master-addr=127.0.0.1",
           f"--master-port={free_port()}", "-m", "layover_edge", *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)  # only rank 0 prints


def one_process(args, capsys):
    assert cli.main(args) == 0
    return json.loads(capsys.readouterr().out)


def test_two_gloo_processes_match_one(tmp_path, capsys):
    torch.manual_seed(0)
    # RM from the cache: extraction is sharded over the ranks, the head trains on rank 0
    rm = ["train", *COMMON, "--method", "rm", "--epochs", "3"]
    two = torchrun([*rm, "--out", str(tmp_path / "rm2")])
    one = one_process([*rm, "--out", str(tmp_path / "rm1")], capsys)
    assert two["processes"] == 2 and one["processes"] == 1
    for split in ("train", "val"):
        c1, c2 = tmp_path / "rm1" / "features" / split, tmp_path / "rm2" / "features" / split
        m1, m2 = (json.loads((c / "manifest.json").read_text()) for c in (c1, c2))
        assert {k: v for k, v in m1.items() if k not in ("seconds", "processes")} == \
               {k: v for k, v in m2.items() if k not in ("seconds", "processes")}
        for name in ("targets", "valid"):
            np.testing.assert_array_equal(np.load(c1 / f"{name}.npy"), np.load(c2 / f"{name}.npy"))
        for name in ("z", "tap1", "tap4"):  # fp16 rows; batches of other images differ in float rounding only
            np.testing.assert_allclose(np.load(c1 / f"{name}.npy").astype(np.float32),
                                       np.load(c2 / f"{name}.npy").astype(np.float32), rtol=2e-3, atol=2e-3)
    assert [h["mAP"] for h in two["history"]] == pytest.approx([h["mAP"] for h in one["history"]], abs=0.5)

    # FT from images through DDP: each rank sees half of every global batch of 8
    ft = ["train", *COMMON, "--method", "ft", "--epochs", "2"]
    two = torchrun([*ft, "--out", str(tmp_path / "ft2")])
    one = one_process([*ft, "--out", str(tmp_path / "ft1")], capsys)
    assert [h["loss"] for h in two["history"]] == pytest.approx([h["loss"] for h in one["history"]], rel=1e-4)
    assert [h["mAP"] for h in two["history"]] == pytest.approx([h["mAP"] for h in one["history"]], abs=1e-3)
    w1, w2 = (load_file(str(tmp_path / d / "best" / "backbone.safetensors")) for d in ("ft1", "ft2"))
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], rtol=1e-4, atol=1e-5)
    # the validation predictions were gathered from both ranks: every image counted once
    assert two["best"]["mAP"] == pytest.approx(one["best"]["mAP"], abs=1e-3)
