"""The device install, for real: a fresh virtual environment with ``pip install -e ".[device]"`` (what
the README tells a Jetson user) gets no torch, torchvision or timm, and ``doctor``, ``tag``,
``build --trtexec-only``, ``parity`` and ``bench`` of an ONNX file run there. On a Jetson this is what keeps
NVIDIA's JetPack torch: nothing in the install resolves a torch from the package index.

It installs from the package index (the CI machine reaches it; pip's own cache makes reruns faster)."""
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx_fixtures import tiny_onnx
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def device_venv(tmp_path_factory):
    venv = tmp_path_factory.mktemp("device-venv") / "venv"
    made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"python -m venv does not work here: {made.stderr.strip().splitlines()[-1:]}")
    install = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-e", f"{ROOT}[device]"],
                             capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]
    return venv


def run(venv, *args, cwd):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(venv / "bin" / args[0]), *map(str, args[1:])], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def test_device_install_has_no_torch_and_tags(device_venv, tmp_path):
    listed = {line.split("==")[0].lower() for line in run(device_venv, "python", "-m", "pip", "freeze",
                                                           cwd=tmp_path).stdout.splitlines()}
    assert not listed & {"torch", "torchvision", "timm"} and "onnxruntime" in listed
    assert run(device_venv, "python", "-c", "import torch", cwd=tmp_path).returncode != 0

    doctor = run(device_venv, "layover-edge", "doctor", "--json", cwd=tmp_path)
    assert doctor.returncode == 0, doctor.stderr
    checks = {c["component"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert not checks["PyTorch"]["ok"] and checks["ONNX Runtime"]["ok"]
    # the JetPack pin on aarch64; elsewhere the version that sits beside the user's torch (13.x for torch 2.14)
    want = "cuda-python 12." if platform.machine() == "aarch64" else "cuda-python 1"
    assert want in checks["CUDA Python binding"]["detail"]
    assert checks["numpy"]["ok"]

    model = tiny_onnx(tmp_path / "m.onnx")
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (20 + i, 30, 3), dtype=np.uint8)).save(images / f"{i}.png")
    tagged = run(device_venv, "layover-edge", "tag", images, "--model", model, "--jsonl", tmp_path / "t.jsonl",
                 "--threshold", "0", "--quiet", cwd=tmp_path)
    assert tagged.returncode == 0, tagged.stderr
    lines = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    # the tiny model's probabilities are sigmoid(sum of the normalised channel means): check them here
    from layover_edge.core.config import Preprocess
    from layover_edge.data.pixels import to_array
    pre = Preprocess(8, (0.5,) * 3, (0.5,) * 3, "bilinear")
    for line in lines:
        x = to_array(Image.open(line["source"]), pre)
        want = 1 / (1 + np.exp(-x.mean((1, 2)).sum()))
        assert [t["score"] for t in line["labels"]] == pytest.approx([want, want], abs=1e-4)
    assert len(lines) == 4

    trtexec = run(device_venv, "layover-edge", "build", model, "--precision", "fp16", "--target", "orin-agx",
                  "--trtexec-only", cwd=tmp_path)
    assert trtexec.returncode == 0 and trtexec.stdout.startswith("trtexec --onnx="), trtexec.stderr

    (images / "labels.csv").write_text("path,labels,split\n0.png,a,val\n1.png,b,val\n2.png,a;b,val\n3.png,,val\n")
    parity = run(device_venv, "layover-edge", "parity", model, "--against", model, "--data", "folder:val",
                 "--data-root", images, "--out", tmp_path / "parity", "--json", "--quiet", cwd=tmp_path)
    assert parity.returncode == 0, parity.stderr
    assert json.loads(parity.stdout)["passed"]

    bench = run(device_venv, "layover-edge", "bench", model, "--batches", "1", "2", "--warmup", "1", "--iters", "2",
                "--rounds", "1", "--out", tmp_path / "bench", "--json", "--quiet", cwd=tmp_path)
    assert bench.returncode == 0, bench.stderr
    timed = json.loads(bench.stdout)
    assert [r["status"] for r in timed["rows"]] == ["ok", "ok"] and "torch" not in timed["environment"]
