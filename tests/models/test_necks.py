import pytest
import torch
from torch import nn

from detkit.models.backbones import CSPDarknet, ResNet
from detkit.models.layers import C3, C2f
from detkit.models.necks import ASFF, CSPPAN, FPN, PAN

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
    "csppan-yolov8": lambda: CSPPAN(),
    "csppan-yolox": lambda: CSPPAN(layout="yolox", depthwise=True),
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


# Neck parameters measured with ultralytics 8.4.190 (yolov8{n,s,m,l,x}.yaml layers 10-21) and yolox
# 0.3.0 (YOLOPAFPN minus its backbone; nano with depthwise=True): (num_blocks, params).
YOLOV8_NECKS = {"n": (1, 986_880), "s": (1, 3_939_840), "m": (2, 10_224_768),
                "l": (3, 18_238_464), "x": (3, 28_491_520)}
YOLOX_NECKS = {"nano": (1, 347_424), "tiny": (1, 1_596_096), "s": (1, 2_834_688),
               "m": (2, 8_679_168), "l": (3, 19_523_072), "x": (4, 36_902_400)}


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("scale", sorted(YOLOV8_NECKS))
def test_csppan_yolov8_has_ultralytics_parameter_count(scale):
    backbone = CSPDarknet("yolov8", scale=scale)
    num_blocks, params = YOLOV8_NECKS[scale]
    neck = CSPPAN(backbone.out_channels, layout="yolov8", num_blocks=num_blocks)
    assert n_params(neck) == params
    assert neck.out_channels == backbone.out_channels


@pytest.mark.parametrize("scale", sorted(YOLOX_NECKS))
def test_csppan_yolox_has_yolox_parameter_count(scale):
    dw = scale == "nano"
    backbone = CSPDarknet("yolox", scale=scale, depthwise=dw)
    num_blocks, params = YOLOX_NECKS[scale]
    assert n_params(CSPPAN(backbone.out_channels, layout="yolox", num_blocks=num_blocks,
                           depthwise=dw)) == params


def test_csppan_yolov8s_plan():
    neck = CSPPAN([128, 256, 512])
    assert neck.out_channels == [128, 256, 512] and len(neck.reduce) == 0
    td0, td1, bu0, bu1 = neck.td_blocks[0], neck.td_blocks[1], neck.bu_blocks[0], neck.bu_blocks[1]
    assert all(isinstance(b, C2f) for b in (td0, td1, bu0, bu1))
    # Ultralytics' layers 12, 15, 18, 21: C2f(in, out) after each concat
    assert [(b.cv1.conv.in_channels, b.cv2.conv.out_channels) for b in (td0, td1, bu0, bu1)] == [
        (512 + 256, 256), (256 + 128, 128), (128 + 256, 256), (256 + 512, 512)]
    assert not any(blk.add for b in (td0, td1, bu0, bu1) for blk in b.blocks)
    assert [(d.conv.in_channels, d.conv.out_channels, d.conv.stride) for d in neck.down] == [
        (128, 128, (2, 2)), (256, 256, (2, 2))]
    assert all(b.eps == 1e-3 and b.momentum == 0.03
               for b in neck.modules() if isinstance(b, nn.BatchNorm2d))


def test_csppan_yolox_s_plan():
    neck = CSPPAN([128, 256, 512], layout="yolox")
    reduce = [(r.conv.in_channels, r.conv.out_channels) for r in neck.reduce]
    assert reduce == [(512, 256), (256, 128)]
    blocks = [*neck.td_blocks, *neck.bu_blocks]
    assert all(isinstance(b, C3) and not any(blk.add for blk in b.blocks) for b in blocks)
    # YOLOX's C3_p4, C3_p3, C3_n3, C3_n4
    assert [(b.cv1.conv.in_channels, b.cv3.conv.out_channels) for b in blocks] == [
        (512, 256), (256, 128), (256, 256), (512, 512)]


def _up(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")


def test_csppan_yolov8_routing_is_ultralytics_graph():
    torch.manual_seed(0)
    neck = CSPPAN([8, 16, 32]).eval()
    p3, p4, p5 = (torch.randn(1, c, s, s) for c, s in ((8, 16), (16, 8), (32, 4)))
    h12 = neck.td_blocks[0](torch.cat([_up(p5), p4], 1))
    h15 = neck.td_blocks[1](torch.cat([_up(h12), p3], 1))
    h18 = neck.bu_blocks[0](torch.cat([neck.down[0](h15), h12], 1))
    h21 = neck.bu_blocks[1](torch.cat([neck.down[1](h18), p5], 1))
    outs = neck([p3, p4, p5])
    assert all(torch.equal(a, b) for a, b in zip(outs, (h15, h18, h21)))


def test_csppan_yolox_routing_is_yolox_pafpn_graph():
    torch.manual_seed(0)
    neck = CSPPAN([8, 16, 32], layout="yolox").eval()
    x2, x1, x0 = (torch.randn(1, c, s, s) for c, s in ((8, 16), (16, 8), (32, 4)))
    fpn_out0 = neck.reduce[0](x0)
    f_out0 = neck.td_blocks[0](torch.cat([_up(fpn_out0), x1], 1))
    fpn_out1 = neck.reduce[1](f_out0)
    pan_out2 = neck.td_blocks[1](torch.cat([_up(fpn_out1), x2], 1))
    pan_out1 = neck.bu_blocks[0](torch.cat([neck.down[0](pan_out2), fpn_out1], 1))
    pan_out0 = neck.bu_blocks[1](torch.cat([neck.down[1](pan_out1), fpn_out0], 1))
    outs = neck([x2, x1, x0])
    assert all(torch.equal(a, b) for a, b in zip(outs, (pan_out2, pan_out1, pan_out0)))


@pytest.mark.parametrize("layout", ["yolov8", "yolox"])
@pytest.mark.parametrize("channels", [[16, 32], [8, 16, 32, 64]])
def test_csppan_takes_any_number_of_levels(layout, channels):
    feats = [torch.randn(1, c, 32 >> i, 48 >> i) for i, c in enumerate(channels)]
    outs = CSPPAN(channels, layout=layout)(feats)
    assert [tuple(o.shape) for o in outs] == [tuple(f.shape) for f in feats]


def test_csppan_options_and_errors():
    plain, dw = CSPPAN([64, 128, 256]), CSPPAN([64, 128, 256], depthwise=True)
    assert n_params(dw) < 0.5 * n_params(plain)
    assert dw.down[0][0].conv.groups == 64 and dw.td_blocks[0].blocks[0].conv1[0].conv.groups == 64
    assert len(CSPPAN([64, 128, 256], num_blocks=3).bu_blocks[1].blocks) == 3
    with pytest.raises(ValueError, match="accepted: yolov8, yolox"):
        CSPPAN(layout="yolov5-head")
    with pytest.raises(ValueError, match="num_blocks"):
        CSPPAN(num_blocks=0)
    with pytest.raises(ValueError, match="at least 2"):
        CSPPAN([16])
    with pytest.raises(ValueError, match="built for 3 levels"):
        CSPPAN([8, 16, 32])([torch.zeros(1, 8, 4, 4), torch.zeros(1, 16, 2, 2)])
