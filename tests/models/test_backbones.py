import pytest
import torch
import torchvision
from torch import nn

from detkit.models.backbones import CSP_SCALES, CSPArch, CSPDarknet, ResNet
from detkit.models.layers import C3, C2f, DeformConv, Focus, SPPFBlock

SMALL_BACKBONES = {
    "cspdarknet-yolov4": lambda: CSPDarknet("yolov4", deepen_factor=0.33, widen_factor=0.125),
    "cspdarknet-v5": lambda: CSPDarknet("csp-v5", scale="tiny", out_indices=(2, 3, 4, 5)),
    "cspdarknet-yolov5": lambda: CSPDarknet("yolov5", scale="tiny", out_indices=(1, 2, 3, 4, 5)),
    "cspdarknet-yolox": lambda: CSPDarknet("yolox", scale="nano", out_indices=(1, 2, 3, 4, 5)),
    "cspdarknet-yolov8": lambda: CSPDarknet("yolov8", scale="n", out_indices=(2, 3, 4, 5)),
    "resnet18": lambda: ResNet(18),
    "resnet50-dcn-se": lambda: ResNet(50, se=True, dcn_stages=(5,)),
}


@pytest.mark.parametrize("name", sorted(SMALL_BACKBONES))
@pytest.mark.parametrize("hw", [(64, 96), (96, 64)])
def test_backbone_reports_its_outputs(name, hw):
    m = SMALL_BACKBONES[name]()
    outs = m(torch.randn(1, 3, *hw))
    assert len(outs) == len(m.out_channels) == len(m.strides)
    for out, c, s in zip(outs, m.out_channels, m.strides):
        assert out.shape == (1, c, hw[0] // s, hw[1] // s)


def test_cspdarknet53_plan():
    m = CSPDarknet("yolov4")
    assert m.out_channels == [256, 512, 1024] and m.strides == [8, 16, 32]
    assert [len(s[1].blocks) for s in m.stages] == [1, 2, 8, 8, 4]
    assert len(m.darknet_convs()) == 72  # CSPDarknet53's convs in yolov4.cfg (layers 0-104)
    assert sum(p.numel() for p in m.parameters()) == 26_617_184
    assert isinstance(m.stem.act, nn.Module) and type(m.stem.act).__name__ == "Mish"
    # stage 1 keeps 64 channels in its split and uses 32 hidden channels in its block
    assert m.stages[0][1].main.conv.out_channels == 64
    assert m.stages[0][1].blocks[0].conv1.conv.out_channels == 32


def test_cspdarknet_scaling_and_v5_style():
    m = CSPDarknet("csp-v5", scale="s")
    assert CSP_SCALES["s"] == (0.33, 0.5)
    assert m.out_channels == [128, 256, 512]
    assert [len(s[1].blocks) for s in m.stages] == [1, 1, 2, 3, 1]
    assert isinstance(m.stem.act, nn.SiLU)
    assert hasattr(m.stages[2][1], "cv3")


def test_yolov5_layout_matches_ultralytics_yolov5s():
    m = CSPDarknet("yolov5", scale="s")
    # YOLOv5s (v6.0+) layers 0-8 (stem .. last C3, SPPF excluded) in Ultralytics' model summary:
    # 3520 + 18560 + 18816 + 73984 + 115712 + 295424 + 625152 + 1180672 + 1182720
    assert sum(p.numel() for p in m.parameters()) == 3_514_560
    stem = m.stem.conv
    assert (stem.kernel_size, stem.stride, stem.padding, stem.out_channels) == ((6, 6), (2, 2), (2, 2), 32)
    assert isinstance(m.stages[0], nn.Identity)  # stage 1 is the stem's stride-2 output
    assert [len(s[1].blocks) for s in m.stages[1:]] == [1, 2, 3, 1]
    x = torch.randn(1, 3, 64, 64)
    stem_out = m.stem(x)
    m12 = CSPDarknet("yolov5", scale="s", out_indices=(1, 2))
    m12.load_state_dict(m.state_dict(), strict=False)
    m.eval(), m12.eval()
    assert torch.equal(m12(x)[0], m.stem(x)) and stem_out.shape == (1, 32, 32, 32)


def test_cspdarknet_bad_arguments():
    with pytest.raises(ValueError, match="accepted: yolov4, csp-v5"):
        CSPDarknet("darknet19")
    with pytest.raises(ValueError, match="1..5"):
        CSPDarknet(out_indices=(0, 6))
    with pytest.raises(ValueError, match="scale"):
        CSPDarknet(scale="huge")


def test_cspdarknet_frozen_stages_and_norm_eval():
    m = CSPDarknet(widen_factor=0.125, deepen_factor=0.33, frozen_stages=2, norm_eval=False)
    m.train()
    assert not any(p.requires_grad for p in m.stem.parameters())
    assert not any(p.requires_grad for p in m.stages[1].parameters())
    assert all(p.requires_grad for p in m.stages[2].parameters())
    assert not m.stages[1][0].bn.training and m.stages[2][0].bn.training
    m2 = CSPDarknet(widen_factor=0.125, deepen_factor=0.33, norm_eval=True).train()
    assert not any(b.training for b in m2.modules() if isinstance(b, nn.BatchNorm2d))


@pytest.mark.parametrize("depth", [18, 34, 50, 101])
def test_resnet_keys_match_torchvision(depth):
    ours = ResNet(depth).state_dict()
    ref = getattr(torchvision.models, f"resnet{depth}")(weights=None).state_dict()
    ref = {k: v.shape for k, v in ref.items() if not k.startswith("fc.")}
    assert {k: v.shape for k, v in ours.items()} == ref


def test_resnet50_loads_torchvision_state_dict_strictly():
    ref = torchvision.models.resnet50(weights=None).eval()
    sd = {k: v for k, v in ref.state_dict().items() if not k.startswith("fc.")}
    m = ResNet(50, out_indices=(5,)).eval()
    assert not m.load_state_dict(sd, strict=True).missing_keys
    m.load_torchvision(ref.state_dict())
    x = torch.randn(1, 3, 64, 64)
    body = nn.Sequential(*list(ref.children())[:-2])
    assert torch.allclose(m(x)[0], body(x), atol=1e-5)


def test_resnet_load_torchvision_rejects_wrong_depth():
    with pytest.raises(ValueError, match="does not match"):
        ResNet(18).load_torchvision(torchvision.models.resnet34(weights=None).state_dict())


def test_resnet_dilation_keeps_resolution():
    m = ResNet(18, out_indices=(2, 3, 4, 5), dilations=(1, 1, 2, 4))
    assert m.strides == [4, 8, 8, 8]
    assert m.layer4[1].conv2.dilation == (4, 4) and m.layer4[0].conv1.stride == (1, 1)
    outs = m(torch.randn(1, 3, 64, 64))
    assert [o.shape[-1] for o in outs] == [16, 8, 8, 8]


def test_resnet_frozen_stages_and_norm_eval():
    m = ResNet(18, frozen_stages=1, norm_eval=True).train()
    assert not m.conv1.weight.requires_grad and not m.layer1[0].conv1.weight.requires_grad
    assert m.layer2[0].conv1.weight.requires_grad
    assert not any(b.training for b in m.modules() if isinstance(b, nn.BatchNorm2d))
    m.layer1(torch.randn(1, 64, 8, 8))  # eval BN: running stats unchanged
    assert torch.equal(m.bn1.running_mean, torch.zeros(64))


def test_resnet_se_and_dcn_options():
    m = ResNet(50, se=True, dcn_stages=(4, 5))
    assert m.layer1[0].se.fc1.out_channels == 256 // 16
    assert isinstance(m.layer3[0].conv2, DeformConv) and isinstance(m.layer4[2].conv2, DeformConv)
    assert isinstance(m.layer2[0].conv2, nn.Conv2d) and not isinstance(m.layer2[0].conv2, DeformConv)
    with pytest.raises(ValueError, match="dcn_stages"):
        ResNet(50, dcn_stages=(1,))


def test_resnet_dcn_starts_as_plain_resnet():
    torch.manual_seed(0)
    plain = ResNet(18, out_indices=(5,)).eval()
    dcn = ResNet(18, out_indices=(5,), dcn_stages=(4, 5)).eval()
    dcn.load_torchvision(plain.state_dict())
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(dcn(x)[0], plain(x)[0], atol=1e-4)


def test_cspdarknet_depthwise_option_is_lighter():
    plain = CSPDarknet(widen_factor=0.25, deepen_factor=0.33)
    dw = CSPDarknet(widen_factor=0.25, deepen_factor=0.33, depthwise=True)
    n_plain = sum(p.numel() for p in plain.parameters())
    assert sum(p.numel() for p in dw.parameters()) < 0.7 * n_plain
    assert dw.stages[2][1].blocks[0].conv2[0].conv.groups == 32  # 3x3 depthwise on 32 channels
    assert [o.shape[1] for o in dw(torch.randn(1, 3, 64, 64))] == dw.out_channels


# Backbone parameters (layers before the neck, 80 classes irrelevant) measured with ultralytics
# 8.4.190 (yolov8{n,s,m,l,x}.yaml layers 0-9) and yolox 0.3.0 (YOLOPAFPN(depth, width).backbone;
# nano with depthwise=True); benchmarks/parity_yolov8_arch.py loads their weights and compares.
YOLOV8_BACKBONE_PARAMS = {"n": 1_272_656, "s": 5_079_712, "m": 11_855_856, "l": 19_808_576,
                          "x": 30_943_120}
YOLOX_BACKBONE_PARAMS = {"nano": 459_968, "tiny": 2_372_304, "s": 4_212_672, "m": 12_352_992,
                         "l": 27_075_968, "x": 50_301_600}


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("scale", sorted(YOLOV8_BACKBONE_PARAMS))
def test_yolov8_layout_has_ultralytics_parameter_count(scale):
    assert n_params(CSPDarknet("yolov8", scale=scale)) == YOLOV8_BACKBONE_PARAMS[scale]


@pytest.mark.parametrize("scale", sorted(YOLOX_BACKBONE_PARAMS))
def test_yolox_layout_has_yolox_parameter_count(scale):
    m = CSPDarknet("yolox", scale=scale, depthwise=scale == "nano")
    assert n_params(m) == YOLOX_BACKBONE_PARAMS[scale]


def test_yolov8s_plan():
    m = CSPDarknet("yolov8", scale="s", out_indices=(1, 2, 3, 4, 5))
    assert m.out_channels == [32, 64, 128, 256, 512] and m.strides == [2, 4, 8, 16, 32]
    stem = m.stem.conv
    assert (stem.kernel_size, stem.stride, stem.padding) == ((3, 3), (2, 2), (1, 1))
    assert isinstance(m.stages[0], nn.Identity)
    c2fs = [s[1] for s in m.stages[1:]]
    assert all(isinstance(b, C2f) for b in c2fs)
    assert [len(b.blocks) for b in c2fs] == [1, 2, 2, 1]
    assert all(blk.add for b in c2fs for blk in b.blocks)  # backbone C2f blocks add the input
    assert c2fs[0].blocks[0].conv1.conv.kernel_size == (3, 3)
    assert [len(s) for s in m.stages[1:]] == [2, 2, 2, 3]
    assert isinstance(m.stages[4][2], SPPFBlock) and m.stages[4][2].cv1.conv.out_channels == 256
    assert all(b.eps == 1e-3 and b.momentum == 0.03
               for b in m.modules() if isinstance(b, nn.BatchNorm2d))
    outs = m(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape[1:]) for o in outs] == [
        (32, 32, 48), (64, 16, 24), (128, 8, 12), (256, 4, 6), (512, 2, 3)]


def test_yolov8_max_channels_cap_before_widening():
    # m: min(1024, 768) * 0.75 = 576; l and x cap at 512 (x: 512 * 1.25 = 640)
    assert CSPDarknet("yolov8", scale="m").out_channels == [192, 384, 576]
    assert CSPDarknet("yolov8", scale="l").out_channels == [256, 512, 512]
    assert CSPDarknet("yolov8", scale="x").out_channels == [320, 640, 640]
    custom = CSPDarknet("yolov8", deepen_factor=0.33, widen_factor=0.25, max_channels=256)
    assert custom.out_channels == [64, 64, 64]
    uncapped = CSPDarknet("yolov8", deepen_factor=0.33, widen_factor=0.25)
    assert uncapped.out_channels == [64, 128, 256]


def test_yolox_s_plan():
    m = CSPDarknet("yolox", scale="s")
    assert m.out_channels == [128, 256, 512] and m.strides == [8, 16, 32]
    assert isinstance(m.stem, Focus) and m.stem.conv.conv.in_channels == 12
    assert m.stem.conv.conv.kernel_size == (3, 3) and m.stem.conv.conv.stride == (1, 1)
    assert [len(s[-1].blocks) for s in m.stages[1:]] == [1, 3, 3, 1]
    last = m.stages[4]
    assert isinstance(last[1], SPPFBlock) and isinstance(last[2], C3)  # SPP before the CSP block
    assert not any(b.add for b in last[2].blocks)  # the last CSP block has no shortcut
    assert all(b.add for s in m.stages[1:4] for b in s[1].blocks)
    assert all(b.eps == 1e-3 for b in m.modules() if isinstance(b, nn.BatchNorm2d))
    # Focus has the parameter count of YOLOv5's 6x6 stride-2 stem
    assert n_params(m.stem) == n_params(CSPDarknet("yolov5", scale="s").stem) == 3520


def test_yolox_nano_depthwise_keeps_stem_and_spp_dense():
    m = CSPDarknet("yolox", scale="nano", depthwise=True)
    assert m.stem.conv.conv.groups == 1
    assert m.stages[2][0][0].conv.groups == 32  # stride-2 3x3 depthwise, then pointwise
    assert m.stages[2][1].blocks[0].conv2[0].conv.groups == 32
    assert m.stages[4][1].cv1.conv.groups == 1


def test_scales_are_per_arch():
    with pytest.raises(ValueError, match="accepted: n, s, m, l, x"):
        CSPDarknet("yolov8", scale="tiny")
    with pytest.raises(ValueError, match="accepted: nano, tiny, s, m, l, x"):
        CSPDarknet("yolox", scale="n")
    assert CSPDarknet("yolov8", scale="x").stages[4][1].cv2.conv.out_channels == 640
    with pytest.raises(ValueError, match="spp='middle'; accepted: none, before, after"):
        CSPArch(64, (128,), (1,), "c3", "silu", spp="middle")


@pytest.mark.parametrize("arch", ["yolov8", "yolox"])
def test_new_layouts_freeze_and_depthwise(arch):
    m = CSPDarknet(arch, scale="s", frozen_stages=2).train()
    assert not any(p.requires_grad for p in m.stem.parameters())
    assert not any(p.requires_grad for p in m.stages[1].parameters())
    assert all(p.requires_grad for p in m.stages[2].parameters())
    dw = CSPDarknet(arch, scale="s", depthwise=True)
    assert n_params(dw) < 0.5 * n_params(CSPDarknet(arch, scale="s"))
    assert [o.shape[1] for o in dw(torch.randn(1, 3, 64, 64))] == dw.out_channels
