import pytest
import torch
from torch import nn

from detkit.models.layers import (
    SE, SPP, SPPF, ConvBNAct, DeformConv, DepthwiseSeparableConv, Mish, make_activation,
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
