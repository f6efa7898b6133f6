import pytest
import torch
from torch import nn

from detkit.models.backbones import CSPDarknet, ResNet
from detkit.models.necks import ASFF, FPN, PAN

BACKBONES = {
    "cspdarknet": lambda: CSPDarknet(deepen_factor=0.33, widen_factor=0.125),
    "resnet18": lambda: ResNet(18),
}
NECKS = {
    "fpn": lambda: FPN(out_channels=32),
    "pan-spp": lambda: PAN(spp=True),
    "pan": lambda: PAN(spp=False),
    "asff": lambda: ASFF(),
    "pan-asff": lambda: ASFF(base=PAN()),
}


@pytest.mark.parametrize("neck_name", sorted(NECKS))
@pytest.mark.parametrize("backbone_name", sorted(BACKBONES))
def test_neck_reads_backbone_channels(backbone_name, neck_name):
    backbone, neck = BACKBONES[backbone_name](), NECKS[neck_name]()
    assert not neck.is_bound
    neck.bind(backbone.out_channels)
    x = torch.randn(2, 3, 64, 96, requires_grad=True)
    outs = neck(backbone(x))
    assert len(outs) == 3
    for out, c, s in zip(outs, neck.out_channels, backbone.strides):
        assert out.shape == (2, c, 64 // s, 96 // s)
    sum(o.mean() for o in outs).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_pan_yolov4_channel_plan():
    neck = PAN([256, 512, 1024])
    assert neck.out_channels == [128, 256, 512]
    convs = [m for m in neck.top if isinstance(m, nn.Module) and hasattr(m, "conv")]
    assert [c.conv.out_channels for c in convs] == [512, 1024, 512, 512, 1024, 512]
    assert neck.top[4].conv.in_channels == 2048  # SPP: 4 x 512
    assert neck.lateral[0].conv.in_channels == 512 and neck.lateral[1].conv.in_channels == 256
    assert neck.down[1].conv.stride == (2, 2) and neck.down[1].conv.out_channels == 512
    assert sum(p.numel() for p in neck.parameters()) == 31_091_456


def test_bind_checks_explicit_channels():
    neck = PAN([16, 32, 64])
    neck.bind([16, 32, 64])  # agrees: nothing happens
    with pytest.raises(ValueError, match="built for in_channels"):
        neck.bind([32, 64, 128])


def test_unbound_neck_says_what_to_do():
    with pytest.raises(RuntimeError, match="bind"):
        FPN()([torch.zeros(1, 4, 2, 2)])


def test_fpn_top_down_sums_upsampled_laterals():
    neck = FPN([1, 1], out_channels=1)
    for conv in neck.lateral:
        nn.init.ones_(conv.weight), nn.init.zeros_(conv.bias)
    # output conv = identity (centre tap 1)
    for conv in neck.output:
        nn.init.zeros_(conv.weight), nn.init.zeros_(conv.bias)
        conv.weight.data[0, 0, 1, 1] = 1.0
    low = torch.zeros(1, 1, 4, 4)
    high = torch.arange(4.0).view(1, 1, 2, 2)
    out_low, out_high = neck([low, high])
    assert torch.equal(out_high, high)
    expected = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3.0]])
    assert torch.equal(out_low[0, 0], expected)


def test_asff_with_equal_logits_averages_resized_levels():
    torch.manual_seed(0)
    neck = ASFF([8, 16, 32]).eval()
    level = neck.levels[1]
    nn.init.zeros_(level.weight_levels.weight), nn.init.zeros_(level.weight_levels.bias)
    feats = [torch.randn(1, 8, 8, 8), torch.randn(1, 16, 4, 4), torch.randn(1, 32, 2, 2)]
    seen = {}
    level.expand.register_forward_hook(lambda m, inp, out: seen.setdefault("fused", inp[0]))
    neck(feats)
    down = level.resize[0](feats[0])
    up = nn.functional.interpolate(level.resize[2](feats[2]), size=(4, 4), mode="nearest")
    assert torch.allclose(seen["fused"], (down + feats[1] + up) / 3, atol=1e-6)


def test_asff_resizers():
    neck = ASFF([8, 16, 32])
    top = neck.levels[2]
    assert isinstance(top.resize[0][0], nn.MaxPool2d) and top.resize[0][1].conv.stride == (2, 2)
    assert neck.levels[0].resize[2].conv.kernel_size == (1, 1)
    assert isinstance(neck.levels[1].resize[1], nn.Identity)


@pytest.mark.parametrize("channels", [[16, 32], [8, 16, 32, 64]])
def test_pan_and_asff_take_any_number_of_levels(channels):
    feats = [torch.randn(1, c, 32 >> i, 48 >> i) for i, c in enumerate(channels)]
    for neck in (PAN(channels, spp=False), ASFF(channels)):
        outs = neck(feats)
        assert [tuple(o.shape[1:]) for o in outs] == [
            (c, f.shape[2], f.shape[3]) for c, f in zip(neck.out_channels, feats)
        ]
    with pytest.raises(ValueError, match="at least 2"):
        PAN([16])
