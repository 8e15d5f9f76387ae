"""Every backbone family goes through the same checks: taps, layouts, z, and the RM math."""
import pytest
import timm
import torch
from torch import nn

from layover_edge.core.config import MIXES, ModelConfig
from layover_edge.core.errors import LayoverError
from layover_edge.models import (
    Backbone,
    ConcatHead,
    LayoverHead,
    build_model,
    count_params,
    fold_standardisation,
    pool1d_summary,
)

# (name, timm kwargs, layout of the stage outputs): NCHW CNNs, an NHWC stage model, Swin, ViT tokens
FAMILIES = [
    ("test_resnet", {}, "NCHW"),
    ("test_convnext", {}, "NCHW"),
    ("test_mambaout", {}, "NHWC"),
    ("swin_tiny_patch4_window7_224", dict(img_size=64, window_size=4, embed_dim=16, depths=(1, 1, 1, 1),
                                          num_heads=(1, 1, 1, 1)), "NHWC"),
    ("test_vit", {}, "NLC"),
]


def make(name, kwargs, taps=None):
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs).eval()
    size = kwargs.get("img_size", model.pretrained_cfg["input_size"][-1])
    return Backbone(model, taps), torch.randn(2, 3, size, size)


DIMS = {"NCHW": (2, 3), "NHWC": (1, 2), "NLC": (1,)}


def manual_mix(h, layout, z, head: LayoverHead, mean=None, std=None):
    """The equations written out independently of the kernels package: the paper's eq. 5-6, and
    the residual form on the standardised pooled tap."""
    p = h.mean(dim=DIMS[layout])
    alpha = torch.sigmoid(z @ head.sl.weight.T + head.sl.bias)
    if head.mix_form == "paper":
        return head.fc(alpha * torch.sigmoid(p @ head.rs.weight.T) + (1 - alpha) * z)
    return head.fc(z + alpha * ((p - mean) / std @ head.rs.weight.T + head.rs.bias))


@pytest.mark.parametrize("name,kwargs,layout", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_backbone_taps_and_prelogits(name, kwargs, layout):
    backbone, x = make(name, kwargs)
    with torch.no_grad():
        taps, z = backbone(x)
        ref = backbone.model.forward_head(backbone.model.forward_features(x), pre_logits=True)
    torch.testing.assert_close(z, ref)
    assert z.shape == (2, backbone.num_features)
    for h, c in zip(taps, backbone.tap_channels):
        assert backbone.layout(h) == layout
        assert (h.shape[1] if layout == "NCHW" else h.shape[-1]) == c


@pytest.mark.parametrize("mix", MIXES)
@pytest.mark.parametrize("name,kwargs,layout", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_rm_head_matches_the_written_out_equations(name, kwargs, layout, mix):
    backbone, x = make(name, kwargs, taps=[1])
    c = backbone.tap_channels[0]
    head = LayoverHead(c, backbone.num_features, 5, mix=mix)
    mean, std = torch.randn(c), torch.rand(c) + 0.5
    if mix == "residual":
        head.standardise.set_(mean, std)
    with torch.no_grad():
        (h,), z = backbone(x)
        got = head(z, h, backbone.layout(h))
        torch.testing.assert_close(got, manual_mix(h, layout, z, head, mean, std), rtol=1e-5, atol=1e-5)
        pooled = head.forward_pooled(z, h.mean(dim=DIMS[layout]))
        torch.testing.assert_close(pooled, got, rtol=1e-5, atol=1e-5)
        fold_standardisation(head)  # the deployed form: the same function, nothing folded per call
        assert head.standardise is None or head.standardise.identity
        torch.testing.assert_close(head(z, h, backbone.layout(h)), got, rtol=1e-5, atol=1e-5)


def test_paper_head_keeps_the_official_parameters_and_residual_adds_b_rs():
    paper, residual = LayoverHead(8, 16, 4, mix="paper"), LayoverHead(8, 16, 4, mix="residual")
    assert sorted(paper.state_dict()) == ["fc.bias", "fc.weight", "rs.weight", "sl.bias", "sl.weight"]
    assert sorted(residual.state_dict()) == ["fc.bias", "fc.weight", "rs.bias", "rs.weight", "sl.bias", "sl.weight",
                                             "standardise.mean", "standardise.std"]
    count = {m: count_params(ModelConfig(backbone="test_convnext", num_classes=4, method="rm", mix=m))["trainable"]
             for m in MIXES}
    assert count["residual"] - count["paper"] == 64  # b_rs: one bias per pre-logit channel (test_convnext: N = 64)


def test_concat_head_is_a_linear_head_on_z_and_the_standardised_tap():
    head = ConcatHead(6, 10, 3)
    head.standardise.set_(torch.randn(6), torch.rand(6) + 0.5)
    h, z = torch.randn(4, 6, 3, 3), torch.randn(4, 10)
    p = h.mean(dim=(2, 3))
    want = z @ head.fc.weight[:, :10].T + ((p - head.standardise.mean) / head.standardise.std) @ head.fc.weight[:, 10:].T
    torch.testing.assert_close(head(z, h, "NCHW"), want + head.fc.bias)


@pytest.mark.parametrize("layout,shape", [("NCHW", (2, 3, 4, 5)), ("NHWC", (2, 4, 5, 3)), ("NLC", (2, 7, 3))])
def test_pool1d_equals_avgpool1d_on_flattened_tokens(layout, shape):
    h = torch.randn(*shape, dtype=torch.float64)
    n = 16
    tokens = h.flatten(2).transpose(1, 2) if layout == "NCHW" else h.reshape(h.shape[0], -1, h.shape[-1])
    flat = tokens.reshape(h.shape[0], 1, -1)
    ref = nn.AvgPool1d(flat.shape[-1] - n + 1, stride=1)(flat).squeeze(1)
    torch.testing.assert_close(pool1d_summary(h, layout, n).double(), ref, rtol=1e-5, atol=1e-6)


def test_pool1d_rejects_too_small_maps():
    with pytest.raises(LayoverError, match="pool1d"):
        pool1d_summary(torch.randn(1, 2, 2, 2), "NCHW", 16)


# The paper's Table 1 Params column (millions): LP < 1 and RM ~ 5 for BiT x3, RM << 1 (< 0.5) for
# Swin, FT = 216 / 387 / 87 / 195. The official Swin RS is pool1d (no weights).
PAPER = [("resnetv2_50x3_bit", "linear", 216), ("resnetv2_101x3_bit", "linear", 387),
         ("swin_base_patch4_window12_384", "pool1d", 87), ("swin_large_patch4_window12_384", "pool1d", 195)]


@pytest.mark.parametrize("backbone,rs,ft", PAPER, ids=[p[0] for p in PAPER])
def test_parameter_counts_reproduce_table_1(backbone, rs, ft):
    count = {m: count_params(ModelConfig(backbone=backbone, num_classes=80, method=m, tap=1, rs=rs))["trainable"] / 1e6
             for m in ("lp", "rm", "ft")}
    assert round(count["ft"]) == ft
    assert count["lp"] < 1
    if backbone.startswith("resnet"):
        assert round(count["rm"]) == 5
    else:
        assert count["rm"] < 0.5
    assert count["lp"] < count["rm"] < count["ft"]


def test_frozen_backbone_gets_no_gradients_and_stays_in_eval():
    model = build_model(ModelConfig(backbone="test_convnext", num_classes=4, weights="none", method="rm"))
    model.train()
    assert not model.backbone.training and model.head.training
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.head.rs.weight.grad is not None and model.head.sl.weight.grad is not None


def test_ft_trains_everything():
    model = build_model(ModelConfig(backbone="test_convnext", num_classes=4, weights="none", method="ft"))
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert all(p.requires_grad for p in model.parameters())


def test_bad_names_get_clear_errors():
    with pytest.raises(LayoverError, match="unknown backbone"):
        build_model(ModelConfig(backbone="no_such_net", num_classes=3, weights="none"))
    with pytest.raises(LayoverError, match="out of range"):
        build_model(ModelConfig(backbone="test_convnext", num_classes=3, weights="none", tap=9))
    with pytest.raises(LayoverError, match="unknown method"):
        ModelConfig(backbone="test_convnext", num_classes=3, method="xx")
    with pytest.raises(LayoverError, match="unknown mix"):
        ModelConfig(backbone="test_convnext", num_classes=3, mix="convex")
