"""YOLO11 and YOLO26 layouts: parameter counts against Ultralytics 8.4.190, the new blocks against slow
references written here, and the refusals of settings these layouts do not have."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detkit.anchors import PointGenerator
from detkit.coders import DFLCoder, DistanceCoder
from detkit.config import instantiate, load_config
from detkit.models import CSPPAN, CSPDarknet, DecoupledHead
from detkit.models.attention import C2PSA, Attention, PSABlock, psa_heads
from detkit.models.backbones import YOLO11_SCALES, YOLO26_SCALES
from detkit.models.c3k2 import C3k2
from detkit.models.layers import SPPF, C3k, ConvBNAct, DarknetBottleneck, SPPFBlock

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

# Ultralytics 8.4.190, DetectionModel("yolo11{s}.yaml") / ("yolo26{s}.yaml"), 80 classes: sum of numel of
# every parameter (YOLO11's 16 fixed DFL projection weights included; detkit's DFLCoder holds them as a constant).
ULTRALYTICS_TOTALS = {
    "yolo11n": 2_624_080, "yolo11s": 9_458_752, "yolo11m": 20_114_688, "yolo11l": 25_372_160, "yolo11x": 56_966_176,
    "yolo26n": 2_572_280, "yolo26s": 10_009_784, "yolo26m": 21_896_248, "yolo26l": 26_299_704, "yolo26x": 58_993_368,
}
DFL_PROJECTION = {"yolo11": 16, "yolo26": 0}  # reg_max=16 / reg_max=1 (no DFL layer)
CONFIG_FILES = {"yolo11": "yolo11{}_tal.py", "yolo26": "yolo26{}.py"}

# Per-layer parameter counts of the n models (Ultralytics' model summary; layers 11, 12, 14, 15, 18, 21 are
# upsample / concat; layer 23 is Detect, YOLO11's with its 16 DFL weights).
ULTRALYTICS_N_LAYERS = {
    "yolo11": [464, 4672, 6640, 36992, 26080, 147712, 87040, 295424, 346112, 164608, 249728, 0, 0, 111296, 0, 0,
               32096, 36992, 0, 86720, 147712, 0, 378880, 464912],
    "yolo26": [464, 4672, 6640, 36992, 26080, 147712, 87040, 295424, 346112, 164608, 249728, 0, 0, 119808, 0, 0,
               34304, 36992, 0, 95232, 147712, 0, 463104, 309656],
}
# Ultralytics layer -> detkit module (the converter's layer map).
LAYER_MODULES = {0: "backbone.stem", 9: "backbone.stages.4.2", 10: "backbone.stages.4.3",
                 13: "neck.td_blocks.0", 16: "neck.td_blocks.1", 17: "neck.down.0", 19: "neck.bu_blocks.0",
                 20: "neck.down.1", 22: "neck.bu_blocks.1", 23: "head",
                 **{2 * k - 1: f"backbone.stages.{k}.0" for k in range(1, 5)},
                 **{2 * k: f"backbone.stages.{k}.1" for k in range(1, 5)}}


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _build(family: str, scale: str) -> nn.Module:
    with torch.device("meta"):  # counts only: no memory, no init
        return instantiate(load_config(CONFIGS / CONFIG_FILES[family].format(scale)).model)


@pytest.mark.parametrize("family", ["yolo11", "yolo26"])
@pytest.mark.parametrize("scale", ["n", "s", "m", "l", "x"])
def test_config_parameter_count_is_ultralytics(family, scale):
    model = _build(family, scale)
    assert _count(model) == ULTRALYTICS_TOTALS[family + scale] - DFL_PROJECTION[family]


@pytest.mark.parametrize("family", ["yolo11", "yolo26"])
def test_n_model_per_layer_counts_are_ultralytics(family):
    model = _build(family, "n")
    counts = {layer: _count(model.get_submodule(path)) for layer, path in LAYER_MODULES.items()}
    expected = {layer: n for layer, n in enumerate(ULTRALYTICS_N_LAYERS[family]) if n}
    expected[23] -= DFL_PROJECTION[family]
    assert counts == expected
    assert _count(model) == sum(counts.values())  # nothing outside the mapped layers


def test_scale_tables_are_ultralytics_and_the_c3k_rule_follows_the_scale():
    assert YOLO11_SCALES == YOLO26_SCALES
    assert {k: tuple(v) for k, v in YOLO11_SCALES.items()} == {
        "n": (0.5, 0.25, 1024, False), "s": (0.5, 0.5, 1024, False), "m": (0.5, 1.0, 512, True),
        "l": (1.0, 1.0, 512, True), "x": (1.0, 1.5, 512, True)}
    with torch.device("meta"):
        small, medium = CSPDarknet("yolo11", scale="s"), CSPDarknet("yolo11", scale="m")
        forced_off = CSPDarknet("yolo11", scale="m", c3k=False)
    inner = [[type(b).__name__ for b in stage[1].blocks] for stage in list(small.stages)[1:]]
    assert inner == [["DarknetBottleneck"], ["DarknetBottleneck"], ["C3k"], ["C3k"]]
    assert all(isinstance(b, C3k) for stage in list(medium.stages)[1:] for b in stage[1].blocks)
    assert [type(stage[1].blocks[0]).__name__ for stage in list(forced_off.stages)[1:]] == [
        "DarknetBottleneck", "DarknetBottleneck", "C3k", "C3k"]
    # YOLO11's stages: the stride-2 conv and the block differ in width (128 -> 256, 256 -> 512 at width 1)
    assert [(stage[0].conv.out_channels, stage[1].cv2.conv.out_channels) for stage in list(medium.stages)[1:]] \
        == [(128, 256), (256, 512), (512, 512), (512, 512)]


def test_yolo11_neck_halves_the_lowest_level_and_keeps_the_others():
    neck = CSPPAN([128, 128, 256], layout="yolo11")
    assert neck.out_channels == [64, 128, 256]
    feats = [torch.rand(1, 128, 8, 8), torch.rand(1, 128, 4, 4), torch.rand(1, 256, 2, 2)]
    assert [tuple(o.shape) for o in neck.eval()(feats)] == [(1, 64, 8, 8), (1, 128, 4, 4), (1, 256, 2, 2)]
    # C3k only in the top bottom-up block (n/s), everywhere with c3k=True (m/l/x)
    kinds = [type(b.blocks[0]).__name__ for b in [*neck.td_blocks, *neck.bu_blocks]]
    assert kinds == ["DarknetBottleneck", "DarknetBottleneck", "DarknetBottleneck", "C3k"]
    forced = CSPPAN([128, 128, 256], layout="yolo11", c3k=True, num_blocks=2)
    assert all(isinstance(m, C3k) for b in [*forced.td_blocks, *forced.bu_blocks] for m in b.blocks)
    assert CSPPAN([32, 64, 128], layout="yolov8").out_channels == [32, 64, 128]  # unchanged


def test_yolo26_neck_top_block_is_one_attention_block_at_every_depth():
    neck = CSPPAN([128, 128, 256], layout="yolo26", num_blocks=2)
    assert all(len(b.blocks) == 2 and isinstance(b.blocks[0], C3k) for b in [*neck.td_blocks, neck.bu_blocks[0]])
    top = neck.bu_blocks[1]
    assert len(top.blocks) == 1 and isinstance(top.blocks[0], nn.Sequential)
    assert isinstance(top.blocks[0][0], DarknetBottleneck) and isinstance(top.blocks[0][1], PSABlock)
    assert top.blocks[0][1].attn.num_heads == psa_heads(128) == 2


# ---------------------------------------------------------------------------------------------------------------
# slow references: functional convs with each module's weights, attention with explicit loops
# ---------------------------------------------------------------------------------------------------------------


def _randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and BatchNorm statistics, eval mode (so every block is a fixed function)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in [*module.named_parameters(), *module.named_buffers()]:
            if not t.dtype.is_floating_point:
                continue
            values = torch.rand(t.shape, generator=gen) + 0.5 if name.endswith("running_var") else \
                torch.randn(t.shape, generator=gen) * 0.3
            t.copy_(values)
    return module.eval()


def ref_unit(x: Tensor, unit: ConvBNAct, act: bool) -> Tensor:
    conv, bn = unit.conv, unit.bn
    assert isinstance(bn, nn.BatchNorm2d) and bn.running_mean is not None and bn.running_var is not None
    y = F.conv2d(x, conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)
    y = (y - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
    y = y * bn.weight[:, None, None] + bn.bias[:, None, None]
    return y * torch.sigmoid(y) if act else y


def ref_bottleneck(x: Tensor, b: DarknetBottleneck, shortcut: bool = True) -> Tensor:
    y = ref_unit(ref_unit(x, b.conv1, True), b.conv2, True)
    return x + y if shortcut else y


def ref_c3k(x: Tensor, block: C3k) -> Tensor:
    main = ref_unit(x, block.cv1, True)
    for b in block.blocks:
        main = ref_bottleneck(main, b)
    return ref_unit(torch.cat([main, ref_unit(x, block.cv2, True)], 1), block.cv3, True)


def ref_attention(x: Tensor, a: Attention) -> Tensor:
    """Every head, every query location one at a time: softmax over keys of ``q . k / sqrt(key_dim)``."""
    b, c, h, w = x.shape
    qkv = ref_unit(x, a.qkv, False).reshape(b, -1, h * w)
    per_head = 2 * a.key_dim + a.head_dim
    attended = torch.zeros(b, c, h * w)
    for i in range(b):
        for head in range(a.num_heads):
            block = qkv[i, head * per_head:(head + 1) * per_head]
            q, k, v = block[:a.key_dim], block[a.key_dim:2 * a.key_dim], block[2 * a.key_dim:]
            for n in range(h * w):
                logits = torch.stack([(q[:, n] * k[:, m]).sum() / math.sqrt(a.key_dim) for m in range(h * w)])
                weights = torch.exp(logits - logits.max())
                weights = weights / weights.sum()
                attended[i, head * a.head_dim:(head + 1) * a.head_dim, n] = (v * weights).sum(1)
    values = torch.cat([qkv[:, hd * per_head + 2 * a.key_dim:(hd + 1) * per_head] for hd in range(a.num_heads)], 1)
    pos = ref_unit(values.reshape(b, c, h, w), a.pe, False)
    return ref_unit(attended.reshape(b, c, h, w) + pos, a.proj, False)


def ref_psa(x: Tensor, p: PSABlock) -> Tensor:
    x = x + ref_attention(x, p.attn)
    return x + ref_unit(ref_unit(x, p.ffn[0], True), p.ffn[1], False)


def ref_c3k2(x: Tensor, block: C3k2) -> Tensor:
    a, b = ref_unit(x, block.cv1, True).chunk(2, 1)
    parts = [a, b]
    for inner in block.blocks:
        if isinstance(inner, C3k):
            parts.append(ref_c3k(parts[-1], inner))
        elif isinstance(inner, nn.Sequential):  # bottleneck + attention
            parts.append(ref_psa(ref_bottleneck(parts[-1], inner[0]), inner[1]))
        else:
            parts.append(ref_bottleneck(parts[-1], inner))
    return ref_unit(torch.cat(parts, 1), block.cv2, True)


def test_attention_equals_the_loop_reference():
    torch.manual_seed(0)
    attn = _randomise(Attention(32, num_heads=2, attn_ratio=0.5))
    assert (attn.head_dim, attn.key_dim) == (16, 8)
    assert attn.qkv.conv.out_channels == 32 + 2 * 8 * 2  # per head [q 8, k 8, v 16]
    x = torch.randn(2, 32, 3, 4)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), ref_attention(x, attn), rtol=1e-5, atol=1e-5)


def test_attention_mixes_locations_and_refuses_heads_that_do_not_divide():
    attn = _randomise(Attention(16, num_heads=1))
    x = torch.randn(1, 16, 4, 4)
    y = x.clone()
    y[..., 3, 3] += 5.0  # one far location changes: every output location changes (global attention)
    with torch.no_grad():
        changed = (attn(x) - attn(y)).abs().amax(1)[0]
    assert bool((changed[:2, :2] > 1e-6).all())  # beyond the 3x3 positional conv's reach
    with pytest.raises(ValueError, match="must divide"):
        Attention(48, num_heads=5)


def test_c2psa_equals_the_reference_and_keeps_its_width():
    block = _randomise(C2PSA(128, num_blocks=2))
    assert block.hidden == 64 and [b.attn.num_heads for b in block.blocks] == [1, 1]
    x = torch.randn(1, 128, 3, 3)
    with torch.no_grad():
        a, b = ref_unit(x, block.cv1, True).chunk(2, 1)
        for psa in block.blocks:
            b = ref_psa(b, psa)
        expected = ref_unit(torch.cat([a, b], 1), block.cv2, True)
        out = block(x)
    assert out.shape == (1, 128, 3, 3)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("c3k, attn", [(False, False), (True, False), (False, True), (True, True)])
def test_c3k2_variants_equal_the_reference(c3k, attn):
    block = _randomise(C3k2(24, 32, 2, c3k=c3k, attn=attn, expansion=0.5))
    hidden = block.hidden
    assert hidden == 16
    first = block.blocks[0]
    if attn:  # attention wins over c3k; the bottleneck goes through hidden / 2 channels
        assert isinstance(first, nn.Sequential) and first[0].conv1.conv.out_channels == 8
    elif c3k:
        assert isinstance(first, C3k) and first.cv1.conv.out_channels == 8 and len(first.blocks) == 2
        assert first.blocks[0].conv1.conv.kernel_size == (3, 3)
    else:
        assert isinstance(first, DarknetBottleneck) and first.conv1.conv.out_channels == 8
    x = torch.randn(2, 24, 4, 5)
    with torch.no_grad():
        out = block(x)
        expected = ref_c3k2(x, block)
    assert out.shape == (2, 32, 4, 5)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_c3k2_backbone_ratio_quarter_hidden_width():
    block = C3k2(32, 64, 1, expansion=0.25)  # YOLO11's layer 2 at n: C3k2(32, 64, 1, False, 0.25)
    assert block.hidden == 16 and block.cv1.conv.out_channels == 32 and block.cv2.conv.in_channels == 48
    assert _count(block) == 6640  # Ultralytics' layer 2 of YOLO11n


def test_sppf_pools_chain_on_a_hand_made_map():
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 4] = 1.0
    out = SPPF(3, num_pools=2)(x)  # [x, pool3(x), pool3(pool3(x))]: a dot, a 3x3 square, a 5x5 square
    assert out.shape == (1, 3, 9, 9)
    assert torch.equal(out[0, 0], x[0, 0])
    assert out[0, 1].sum() == 9 and torch.equal(out[0, 1, 3:6, 3:6], torch.ones(3, 3))
    assert out[0, 2].sum() == 25 and torch.equal(out[0, 2, 2:7, 2:7], torch.ones(5, 5))


def _identity_unit(unit: ConvBNAct) -> None:
    """A 1x1 ConvBNAct that passes (or, for more inputs than outputs, sums) channels: weights 1, BN neutral."""
    with torch.no_grad():
        unit.conv.weight.fill_(1.0)
        bn = unit.bn
        assert isinstance(bn, nn.BatchNorm2d) and bn.running_mean is not None and bn.running_var is not None
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0 - bn.eps)
        bn.weight.fill_(1.0)
        bn.bias.zero_()


def test_yolo26_sppf_has_a_shortcut_and_no_activation_after_its_first_conv():
    x = torch.full((1, 2, 3, 3), -2.0)
    x[0, :, 1, 1] = 1.0
    v8, v26 = SPPFBlock(2, 2), SPPFBlock(2, 2, shortcut=True, cv1_act=False)
    for block in (v8, v26):
        _identity_unit(block.cv1)
        _identity_unit(block.cv2)
        block.eval()
    with torch.no_grad():
        # cv1 sums the two channels: -4 everywhere, 2 in the centre; YOLO26's keeps the negatives, YOLOv8's SiLUs them
        hidden26 = v26.cv1(x)
        assert hidden26.min() == -4.0 and hidden26.max() == 2.0
        assert torch.allclose(v8.cv1(x), F.silu(hidden26))
        # three 5x5 pools of a 3x3 map: every pool is the map's max (2); cv2 sums [h, 2, 2, 2] and SiLUs it
        expected = F.silu(hidden26 + 6.0).expand(1, 2, 3, 3) + x
        torch.testing.assert_close(v26(x), expected)
        torch.testing.assert_close(v8(x), F.silu(F.silu(hidden26) + 3 * F.silu(torch.tensor(2.0))).expand(1, 2, 3, 3))


# ---------------------------------------------------------------------------------------------------------------
# head: YOLO11's class branch and Ultralytics 8.4's box bias
# ---------------------------------------------------------------------------------------------------------------


def _head(**kwargs) -> DecoupledHead:
    args = dict(num_classes=3, prior_generator=PointGenerator(strides=[8, 16, 32]), coder=DFLCoder(16),
                bias_init="yolov8") | kwargs
    return DecoupledHead(in_channels=[64, 128, 256], **args)


def test_dwconv_class_branch_is_depthwise_then_pointwise_and_the_box_branch_stays_full():
    head = _head(cls_branch="dwconv")
    first = head.cls_convs[0][0]
    depthwise, pointwise = first[0].conv, first[1].conv
    assert (depthwise.groups, depthwise.in_channels, depthwise.kernel_size) == (64, 64, (3, 3))
    assert (pointwise.kernel_size, pointwise.out_channels) == ((1, 1), 64)  # max(c0, min(C, 100)) = 64
    assert head.box_convs[0][0].conv.groups == 1 and head.box_convs[0][0].conv.kernel_size == (3, 3)
    # Ultralytics' YOLO11n Detect (80 classes) less the 16 DFL weights, rebuilt here from the n neck widths
    yolo11n = DecoupledHead(80, [64, 128, 256], prior_generator=PointGenerator(strides=[8, 16, 32]),
                            coder=DFLCoder(16), cls_branch="dwconv", bias_init="yolov8")
    assert _count(yolo11n) == 464_912 - 16


def test_box_bias_two_on_both_branches_and_yolov8_keeps_one():
    head = _head(cls_branch="dwconv", box_bias=2.0, one2one=True, coder=DistanceCoder())
    assert head.one2one_branch is not None
    for box_preds in (head.box_preds, head.one2one_branch["box_preds"]):
        assert all(torch.equal(p.bias, torch.full((4,), 2.0)) for p in box_preds)
    cls_bias = head.cls_preds[0].bias
    assert torch.allclose(cls_bias, torch.full((3,), math.log(5 / 3 / (640 / 8) ** 2)))
    assert all(torch.equal(p.bias, torch.ones(64)) for p in _head().box_preds)
    plain = _head(bias_init="prior_prob")
    assert not any(bool((p.bias == 2.0).any()) or bool((p.bias == 1.0).all()) for p in plain.box_preds)
    set_by_hand = _head(bias_init="prior_prob", box_bias=0.5)
    assert all(torch.equal(p.bias, torch.full((64,), 0.5)) for p in set_by_hand.box_preds)


def test_yolo11_head_config_sets_the_branch_and_the_bias():
    head = load_config(CONFIGS / "common" / "models" / "yolo11.py").model.head
    assert head.cls_branch == "dwconv" and head.box_bias == 2.0
    v8 = load_config(CONFIGS / "common" / "models" / "yolov8s.py").model.head
    assert v8.get("cls_branch", "conv") == "conv" and v8.get("box_bias") is None


def test_refusals():
    with pytest.raises(ValueError, match="cls_branch"):
        _head(cls_branch="depthwise")
    with pytest.raises(ValueError, match="pick one"):
        _head(cls_branch="dwconv", depthwise=True)
    for arch in ("yolo11", "yolo26"):
        with pytest.raises(ValueError, match="no depthwise variant"):
            CSPDarknet(arch, scale="n", depthwise=True)
        with pytest.raises(ValueError, match="no depthwise variant"):
            CSPPAN([64, 64, 128], layout=arch, depthwise=True)
    with pytest.raises(ValueError, match="c3k=True needs a C3k2 arch"):
        CSPDarknet("yolov8", scale="n", c3k=True)
    with pytest.raises(ValueError, match="c3k=True needs a C3k2 layout"):
        CSPPAN([64, 64, 128], layout="yolov8", c3k=True)
    with pytest.raises(ValueError, match="unknown scale 'nano'"):
        CSPDarknet("yolo26", scale="nano")
