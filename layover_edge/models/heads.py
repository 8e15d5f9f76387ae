"""Classifier heads on the pre-logits z: the linear probe (LP), the Layover head (RM) and the
one-tap concatenation baseline (concat, Head2Toe's idea).

RM (paper eq. 1-6): ĥ = RS(h), α = sigmoid(w_sl·z + b_sl), then one of two mixes
(``core.config.MIXES``, maths in ``kernels/reference.py``):

* ``residual`` (the default): ĥ = W_rs·std(p) + b_rs, z' = z + α·ĥ, where std(p) = (p − μ)/σ
  standardises the pooled tap with the training split's per-channel statistics (``Standardise``);
* ``paper``: eq. 5-6 and the official code exactly: ĥ = sigmoid(W_rs·p) (no bias),
  z' = α·ĥ + (1−α)·z.

logits = W·z' + b. RS is ``linear`` (mean-pool, Linear C→N; the official BiT code, and our default
everywhere) or ``pool1d`` (the paper's eq. 3 for token backbones: flatten h to (B, L·C) and take a
stride-1 sliding mean of width L·C−N+1; no weights, no sigmoid, as in the official Swin code), whose
ĥ enters either mix as it is.

The fused op takes the raw pooled tap, so a residual head hands it W' = W_rs/σ and
b' = b_rs − W'·μ (``Standardise.fold``); ``fold_standardisation`` writes them into the head once
for deployment (the loaded checkpoint, the exports).
"""
from __future__ import annotations

import torch
from torch import nn

from layover_edge.core.config import MIXES, RS_VARIANTS
from layover_edge.core.errors import LayoverError
from layover_edge.kernels.op import fused_mix
from layover_edge.kernels.reference import gate, mix, mix_pooled, pool


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


class Standardise(nn.Module):
    """std(p) = (p − μ)/σ with per-channel statistics of the training split's pooled tap, set once
    before training (``set_``) and saved with the head. Fresh, it is the identity, and then costs
    nothing; loading statistics from a checkpoint makes it a real standardisation again."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))
        self.identity = True

    @torch.no_grad()
    def set_(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean.copy_(mean)
        self.std.copy_(std)
        self.identity = False

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.identity = False  # whatever was loaded is what the head was trained with

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        return p if self.identity else (p - self.mean) / self.std

    def fold(self, linear: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
        """(W', b') with W'·p + b' = W·std(p) + b, in float32 (as the kernels compute)."""
        if self.identity:
            return linear.weight, linear.bias
        w = linear.weight.float() / self.std.float()
        return w, linear.bias.float() - w @ self.mean.float()


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


class ConcatHead(nn.Module):
    """concat: one Linear on [z, std(p)], the one-tap form of Head2Toe's feature concatenation,
    the baseline a tap-mixing head has to beat (it is the residual mix's function class without the gate)."""

    uses_tap = True

    def __init__(self, tap_channels: int, num_features: int, num_classes: int):
        super().__init__()
        self.standardise = Standardise(tap_channels)
        self.fc = nn.Linear(num_features + tap_channels, num_classes)

    def forward_pooled(self, z: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.cat([z, self.standardise(p.to(z.dtype))], 1))

    def forward(self, z: torch.Tensor, h: torch.Tensor, layout: str) -> torch.Tensor:
        return self.forward_pooled(z, pool(h, layout))


class LayoverHead(nn.Module):
    """RM: representation summarisation (RS) + scale learning (SL) + mix + Linear."""

    uses_tap = True

    def __init__(self, tap_channels: int, num_features: int, num_classes: int, rs: str = "linear",
                 mix: str = MIXES[0]):
        super().__init__()
        if rs not in RS_VARIANTS:
            raise LayoverError(f"unknown RS variant {rs!r}; choose one of {RS_VARIANTS}")
        if mix not in MIXES:
            raise LayoverError(f"unknown mix {mix!r}; choose one of {MIXES}")
        self.rs_kind, self.mix_form = rs, mix
        residual = mix == "residual"
        self.rs = nn.Linear(tap_channels, num_features, bias=residual) if rs == "linear" else None
        self.sl = nn.Linear(num_features, 1)
        self.fc = nn.Linear(num_features, num_classes)
        self.standardise = Standardise(tap_channels) if residual and self.rs is not None else None
        if self.rs is not None and not residual:  # the paper's RS has no bias: the op gets zeros
            self.register_buffer("zero_bias", torch.zeros(num_features), persistent=False)

    def alpha(self, z: torch.Tensor) -> torch.Tensor:
        """The per-image mixing scale α, shape (B,)."""
        return torch.sigmoid(self.sl(z.float())).squeeze(-1)

    def branch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(w_rs, b_rs) as the fused op takes them: on the raw pooled tap, standardisation folded in."""
        if self.standardise is None:
            return self.rs.weight, self.zero_bias
        return self.standardise.fold(self.rs)

    def mix(self, z: torch.Tensor, h: torch.Tensor, layout: str) -> torch.Tensor:
        if self.rs is not None:
            return fused_mix(h, z, *self.branch(), self.sl.weight.view(-1), self.sl.bias, layout, self.mix_form)
        h_hat = pool1d_summary(h, layout, z.shape[1])
        a = gate(z.float(), self.sl.weight.view(-1).float(), self.sl.bias.float())
        return mix(h_hat, a, z.float(), self.mix_form).to(z.dtype)

    def forward(self, z: torch.Tensor, h: torch.Tensor, layout: str) -> torch.Tensor:
        return self.fc(self.mix(z, h, layout))

    def forward_pooled(self, z: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """From cached features: p is the mean-pooled tap (B, C). Only for ``rs=linear``."""
        if self.rs is None:
            raise LayoverError("pool1d RS needs the full feature map: train it from images, not the cache")
        z_mixed = mix_pooled(p, z, *self.branch(), self.sl.weight.view(-1), self.sl.bias, self.mix_form)
        return self.fc(z_mixed.to(z.dtype))


def standardisation(head: nn.Module) -> Standardise | None:
    """The head's tap standardisation, where it has one (residual RM with the linear RS, concat)."""
    return getattr(head, "standardise", None)


@torch.no_grad()
def fold_standardisation(head: nn.Module) -> None:
    """Write a residual RM head's standardisation into W_rs and b_rs (the deployed form: the same
    function, with nothing left to fold per call). Other heads are left as they are."""
    if isinstance(head, LayoverHead) and head.standardise is not None and not head.standardise.identity:
        w, b = head.branch()
        head.rs.weight.copy_(w)
        head.rs.bias.copy_(b)
        head.standardise.set_(torch.zeros_like(head.standardise.mean), torch.ones_like(head.standardise.std))
        head.standardise.identity = True
