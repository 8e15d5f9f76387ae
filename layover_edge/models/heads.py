"""Classifier heads on the pre-logits z: the linear probe (LP) and the Layover head (RM).

RM (paper eq. 1-4): ĥ = RS(h), α = sigmoid(w_sl·z + b_sl), z' = α·ĥ + (1−α)·z, logits = W·z' + b.
RS is ``linear`` (mean-pool, Linear C→N without bias, sigmoid; the official BiT code, and our
default everywhere) or ``pool1d`` (the paper's eq. 3 for token backbones: flatten h to (B, L·C)
and take a stride-1 sliding mean of width L·C−N+1; no weights, no sigmoid, as in the official
Swin code).
"""
from __future__ import annotations

import torch
from torch import nn

from layover_edge.core.config import RS_VARIANTS
from layover_edge.core.errors import LayoverError
from layover_edge.kernels.op import fused_mix
from layover_edge.kernels.reference import mix_pooled


def tokens_flat(h: torch.Tensor, layout: str) -> torch.Tensor:
    """h flattened token-major to (B, L·C), the order the official pool1d RS slides over."""
    if layout == "NCHW":
        h = h.flatten(2).transpose(1, 2)
    return h.reshape(h.shape[0], -1)


def pool1d_summary(h: torch.Tensor, layout: str, n: int) -> torch.Tensor:
    """AvgPool1d(kernel=L·C−n+1, stride=1) over the flattened map, from edge sums only.

    Window i covers flat[i : M−(n−1−i)], so its sum is total − prefix(i) − suffix(n−1−i): one
    full reduction plus two cumulative sums of n−1 elements, exact and cheap at any L·C.
    """
    flat = tokens_flat(h, layout).float()
    m = flat.shape[1]
    width = m - n + 1
    if width < 1:
        raise LayoverError(f"pool1d RS needs L·C ≥ N, got L·C={m} < N={n}; use --rs linear")
    zero = flat.new_zeros(flat.shape[0], 1)
    prefix = torch.cat([zero, flat[:, : n - 1].cumsum(1)], 1)            # prefix[i] = sum(flat[:i])
    suffix = torch.cat([zero, flat[:, m - n + 1:].flip(1).cumsum(1)], 1)  # suffix[j] = sum of last j
    total = flat.sum(1, keepdim=True)
    return (total - prefix - suffix.flip(1)) / width


class LinearProbe(nn.Module):
    """LP: a new Linear on the frozen pre-logits."""

    uses_tap = False

    def __init__(self, num_features: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(num_features, num_classes)

    def forward(self, z: torch.Tensor, h: torch.Tensor | None = None, layout: str = "NCHW") -> torch.Tensor:
        return self.fc(z)

    def forward_pooled(self, z: torch.Tensor, p: torch.Tensor | None = None) -> torch.Tensor:
        return self.fc(z)


class LayoverHead(nn.Module):
    """RM: representation summarisation (RS) + scale learning (SL) + mix + Linear."""

    uses_tap = True

    def __init__(self, tap_channels: int, num_features: int, num_classes: int, rs: str = "linear"):
        super().__init__()
        if rs not in RS_VARIANTS:
            raise LayoverError(f"unknown RS variant {rs!r}; choose one of {RS_VARIANTS}")
        self.rs_kind = rs
        self.rs = nn.Linear(tap_channels, num_features, bias=False) if rs == "linear" else None
        self.sl = nn.Linear(num_features, 1)
        self.fc = nn.Linear(num_features, num_classes)

    def alpha(self, z: torch.Tensor) -> torch.Tensor:
        """The per-image mixing scale α, shape (B,)."""
        return torch.sigmoid(self.sl(z.float())).squeeze(-1)

    def mix(self, z: torch.Tensor, h: torch.Tensor, layout: str) -> torch.Tensor:
        if self.rs is not None:
            return fused_mix(h, z, self.rs.weight, self.sl.weight.view(-1), self.sl.bias, layout)
        h_hat = pool1d_summary(h, layout, z.shape[1])
        a = self.alpha(z).unsqueeze(-1)
        return (a * h_hat + (1 - a) * z.float()).to(z.dtype)

    def forward(self, z: torch.Tensor, h: torch.Tensor, layout: str) -> torch.Tensor:
        return self.fc(self.mix(z, h, layout))

    def forward_pooled(self, z: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """From cached features: p is the mean-pooled tap (B, C). Only for ``rs=linear``."""
        if self.rs is None:
            raise LayoverError("pool1d RS needs the full feature map: train it from images, not the cache")
        return self.fc(mix_pooled(p, z, self.rs.weight, self.sl.weight.view(-1), self.sl.bias).to(z.dtype))
