import pytest
import torch
from torch import nn

from detkit.models.layers import (
    C3,
    SE,
    SPP,
    SPPF,
    C2f,
    ConvBNAct,
    DarknetBottleneck,
    DeformConv,
    DepthwiseSeparableConv,
    Focus,
    Mish,
    SPPFBlock,
    make_activation,
    set_batchnorm,
)


def test_activations_by_name():
    x = torch.tensor([-1.0, 0.0, 2.0])
    assert torch.allclose(make_activation("leaky")(x.clone()), torch.tensor([-0.1, 0.0, 2.0]))
    assert torch.allclose(make_activation("silu")(x.clone()), x * torch.sigmoid(x))
    assert torch.allclose(Mish()(x), x * torch.tanh(torch.log1p(torch.exp(x))))
    with pytest.raises(ValueError, match="accepted"):
        make_activation("gelu2")


def test_conv_bn_act_groups_and_dilation_keep_size():
    m = ConvBNAct(8, 16, 3, groups=4, dilation=2)
    assert m.conv.weight.shape == (16, 2, 3, 3)
    assert m(torch.randn(1, 8, 10, 12)).shape == (1, 16, 10, 12)
    with pytest.raises(ValueError, match="groups=3"):
        ConvBNAct(8, 16, 3, groups=3)


def test_conv_without_bn_has_bias():
    m = ConvBNAct(4, 4, 1, bn=False, act="none")
    assert m.conv.bias is not None and isinstance(m.bn, nn.Identity)


def test_depthwise_separable_parameter_count():
    m = DepthwiseSeparableConv(16, 32, 3, stride=2)
    # depthwise 16*9 + BN 32, pointwise 16*32 + BN 64
    assert sum(p.numel() for p in m.parameters()) == 16 * 9 + 32 + 16 * 32 + 64
    assert m(torch.randn(2, 16, 8, 8)).shape == (2, 32, 4, 4)


def test_se_gate_is_half_with_zero_weights():
    se = SE(32, reduction=16)
    assert se.fc1.out_channels == 2
    for p in se.parameters():
        nn.init.zeros_(p)
    x = torch.randn(2, 32, 4, 4)
    assert torch.allclose(se(x), x * 0.5)


def test_spp_order_is_darknet_route_order():
    x = torch.zeros(1, 1, 7, 7)
    x[0, 0, 3, 3] = 1.0
    out = SPP((5, 9, 13))(x)
    assert out.shape == (1, 4, 7, 7)
    assert torch.equal(out[0, 3], x[0, 0])  # input last
    assert out[0, 2].sum() == 25  # 5x5 pool spreads the peak over 5x5
    assert out[0, 0].sum() == 49  # 13x13 pool covers the whole map
    with pytest.raises(ValueError, match="odd"):
        SPP((4,))


def test_sppf_equals_spp_with_reversed_order():
    x = torch.randn(2, 3, 13, 11)
    spp, sppf = SPP((5, 9, 13))(x), SPPF(5)(x)
    assert torch.allclose(sppf, torch.cat([spp[:, 9:], spp[:, 6:9], spp[:, 3:6], spp[:, :3]], 1))


@pytest.mark.parametrize("stride,dilation", [(1, 1), (2, 1), (1, 2)])
def test_deform_conv_starts_as_plain_conv(stride, dilation):
    torch.manual_seed(0)
    dcn = DeformConv(4, 6, 3, stride, padding=dilation, dilation=dilation)
    conv = nn.Conv2d(4, 6, 3, stride, padding=dilation, dilation=dilation, bias=False)
    conv.weight.data.copy_(dcn.weight.data)
    x = torch.randn(2, 4, 9, 10)
    assert torch.count_nonzero(dcn.conv_offset.weight) == 0
    assert torch.allclose(dcn(x), conv(x), atol=1e-5)


def _ref_conv(unit: ConvBNAct, x: torch.Tensor) -> torch.Tensor:
    """ConvBNAct (SiLU) in eval mode written with functional ops, as the reference."""
    conv, bn = unit.conv, unit.bn
    y = nn.functional.conv2d(x, conv.weight, None, conv.stride, conv.padding, conv.dilation,
                             conv.groups)
    y = nn.functional.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                                 False, 0.0, bn.eps)
    return y * torch.sigmoid(y)


def _randomise(module: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5), m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1), m.running_var.uniform_(0.5, 1.5)
    return module.eval()


@pytest.mark.parametrize("shortcut", [True, False])
def test_c2f_equals_hand_written_reference(shortcut):
    m = _randomise(C2f(12, 16, num_blocks=2, shortcut=shortcut))
    x = torch.randn(2, 12, 9, 7)
    h = 8  # hidden = int(16 * 0.5)
    y = _ref_conv(m.cv1, x)
    parts = [y[:, :h], y[:, h:]]
    for blk in m.blocks:
        z = _ref_conv(blk.conv2, _ref_conv(blk.conv1, parts[-1]))
        parts.append(parts[-1] + z if shortcut else z)
    expected = _ref_conv(m.cv2, torch.cat(parts, 1))
    assert m.cv2.conv.in_channels == (2 + 2) * h
    assert [c.conv.kernel_size for c in (m.blocks[0].conv1, m.blocks[0].conv2)] == [(3, 3), (3, 3)]
    assert torch.allclose(m(x), expected, atol=1e-5)


def test_c3_equals_hand_written_reference():
    m = _randomise(C3(12, 16, num_blocks=2, shortcut=False))
    x = torch.randn(2, 12, 9, 7)
    a = _ref_conv(m.cv1, x)
    for blk in m.blocks:
        a = _ref_conv(blk.conv2, _ref_conv(blk.conv1, a))  # no shortcut
    expected = _ref_conv(m.cv3, torch.cat([a, _ref_conv(m.cv2, x)], 1))
    assert m.blocks[0].conv1.conv.kernel_size == (1, 1)
    assert torch.allclose(m(x), expected, atol=1e-5)


def test_bottleneck_shortcut_only_when_channels_match():
    x = torch.randn(1, 4, 5, 5)
    blk = DarknetBottleneck(4, 4, shortcut=True).eval()
    nn.init.zeros_(blk.conv2.bn.weight), nn.init.zeros_(blk.conv2.bn.bias)  # branch: silu(0) = 0
    assert torch.equal(blk(x), x)
    blk.add = False
    assert torch.equal(blk(x), torch.zeros_like(x))
    assert not DarknetBottleneck(4, 8, shortcut=True).add
    dw = DarknetBottleneck(8, 8, kernel_sizes=(3, 3), depthwise=True)
    assert dw.conv1[0].conv.groups == 8 and dw.conv2[0].conv.groups == 8


def test_sppf_block_is_yolox_spp_bottleneck():
    m = _randomise(SPPFBlock(8, 6))
    x = torch.randn(1, 8, 11, 13)
    h = _ref_conv(m.cv1, x)
    pools = [nn.functional.max_pool2d(h, k, 1, k // 2) for k in (5, 9, 13)]
    assert torch.allclose(m(x), _ref_conv(m.cv2, torch.cat([h, *pools], 1)), atol=1e-5)


def test_focus_space_to_depth_order():
    m = Focus(1, 4, kernel_size=1)
    seen = {}
    m.conv.register_forward_hook(lambda mod, inp, out: seen.setdefault("x", inp[0]))
    m(torch.arange(16.0).view(1, 1, 4, 4))
    # [top-left, bottom-left, top-right, bottom-right] pixels of each 2x2 patch
    expected = torch.tensor([[[0, 2], [8, 10]], [[4, 6], [12, 14]], [[1, 3], [9, 11]],
                             [[5, 7], [13, 15.0]]])
    assert torch.equal(seen["x"][0], expected)


def test_set_batchnorm():
    m = nn.Sequential(ConvBNAct(3, 4, 3), nn.BatchNorm1d(2))
    set_batchnorm(m, 1e-3, 0.03)
    assert (m[0].bn.eps, m[0].bn.momentum, m[1].eps, m[1].momentum) == (1e-3, 0.03, 1e-3, 0.03)
