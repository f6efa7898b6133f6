"""RTMDet's pieces: CSPNeXt, CSPNeXtPAFPN, the head with convs shared across levels, and configs/rtmdet_s_dsl.py.

Parameter counts are mmdet 3.3.0's, measured in the benchmark venv by building ``CSPNeXt`` /
``CSPNeXtPAFPN`` / ``RTMDetSepBNHead`` from ``rtmdet_s_8xb32-300e_coco.py``'s settings (80 classes); the
loss and gradients against mmdet's own code are ``benchmarks/parity_losses_rtmdet.py``.
"""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from detkit.anchors import PointGenerator
from detkit.coders import DistanceCoder
from detkit.config import instantiate, load_config
from detkit.models.backbones.cspnext import CSPNeXt
from detkit.models.cspnext_blocks import ChannelAttention, CSPNeXtBlock, CSPNeXtLayer
from detkit.models.heads.rtmdet_head import RTMDetSepBNHead
from detkit.models.necks.cspnext_pafpn import CSPNeXtPAFPN

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs/rtmdet_s_dsl.py"

# mmdet 3.3.0: RTMDet-s (80 classes) and CSPNeXt P5 at each scale of mmdet's RTMDet configs
MMDET_RTMDET_S = {"backbone": 4_378_320, "neck": 3_883_200, "head": 625_404, "total": 8_886_924}
MMDET_CSPNEXT = {"tiny": 2_348_700, "s": 4_378_320, "m": 12_279_432, "l": 26_138_912, "x": 47_569_560}


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def rtmdet_s():
    return instantiate(load_config(CONFIG).model)


def test_rtmdet_s_parameter_count_equals_mmdet(rtmdet_s):
    got = {"backbone": count(rtmdet_s.backbone), "neck": count(rtmdet_s.neck), "head": count(rtmdet_s.head),
           "total": count(rtmdet_s)}
    assert got == MMDET_RTMDET_S


@pytest.mark.parametrize("scale", sorted(MMDET_CSPNEXT))
def test_cspnext_parameter_count_per_scale(scale):
    assert count(CSPNeXt(scale)) == MMDET_CSPNEXT[scale]


def test_cspnext_levels_and_shapes():
    backbone = CSPNeXt("s", out_indices=(1, 2, 3, 4, 5)).eval()
    assert backbone.out_channels == [32, 64, 128, 256, 512]
    assert backbone.strides == [2, 4, 8, 16, 32]
    outs = backbone(torch.rand(1, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(1, c, 64 // s, 96 // s) for c, s in zip(backbone.out_channels,
                                                                                      backbone.strides)]
    with pytest.raises(ValueError, match="scale"):
        CSPNeXt("huge")
    with pytest.raises(ValueError, match="out_indices"):
        CSPNeXt("s", out_indices=(0, 3))


def test_cspnext_frozen_stages_stop_gradients():
    backbone = CSPNeXt("tiny", frozen_stages=2).train()
    assert not any(p.requires_grad for p in backbone.stem.parameters())
    assert not any(p.requires_grad for p in backbone.stages[0].parameters())
    assert all(p.requires_grad for p in backbone.stages[1].parameters())
    assert not backbone.stages[0][0].bn.training and backbone.stages[1][0].bn.training


def test_channel_attention_on_a_hand_made_map():
    att = ChannelAttention(2)
    with torch.no_grad():
        att.fc.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -2.0]]).view(2, 2, 1, 1))
        att.fc.bias.copy_(torch.tensor([0.0, 1.0]))
    x = torch.zeros(1, 2, 2, 2)
    x[0, 0] = torch.tensor([[1.0, 2.0], [3.0, 6.0]])  # mean 3
    x[0, 1] = 1.5  # mean 1.5
    # gates: hardsigmoid(3) = clamp(3 / 6 + 0.5, 0, 1) = 1; hardsigmoid(-2 * 1.5 + 1) = -2 / 6 + 0.5 = 1 / 6
    out = att(x)
    assert torch.equal(out[0, 0], x[0, 0])
    assert torch.allclose(out[0, 1], torch.full((2, 2), 1.5 / 6), atol=1e-7)


def test_cspnext_block_shortcut_adds_the_input_only_at_equal_widths():
    torch.manual_seed(0)
    with_short, without = CSPNeXtBlock(8, 8, shortcut=True).eval(), CSPNeXtBlock(8, 8, shortcut=False).eval()
    without.load_state_dict(with_short.state_dict())
    x = torch.randn(2, 8, 6, 6)
    assert torch.allclose(with_short(x), without(x) + x, atol=1e-6)
    assert not CSPNeXtBlock(8, 16, shortcut=True).add
    block = CSPNeXtBlock(8, 8)
    assert block.conv2[0].conv.groups == 8 and block.conv2[0].conv.kernel_size == (5, 5)  # depthwise 5x5


def test_csp_layer_concatenates_main_then_short_then_attention():
    torch.manual_seed(1)
    layer = CSPNeXtLayer(8, 8, 2, channel_attention=True).eval()
    x = torch.randn(1, 8, 5, 7)
    main = layer.blocks(layer.main_conv(x))
    expected = layer.final_conv(layer.attention(torch.cat([main, layer.short_conv(x)], 1)))
    assert torch.equal(layer(x), expected)
    assert CSPNeXtLayer(8, 8, channel_attention=False).attention is None


def test_pafpn_follows_mmdets_data_flow():
    """Bottom-up levels read the *reduced* maps of the top-down path (r_i), not the top-down outputs."""
    torch.manual_seed(2)
    neck = CSPNeXtPAFPN(16, [8, 16, 32]).eval()
    feats = [torch.randn(1, 8, 16, 16), torch.randn(1, 16, 8, 8), torch.randn(1, 32, 4, 4)]
    up = lambda t: F.interpolate(t, scale_factor=2.0, mode="nearest")  # noqa: E731
    r2 = neck.reduce_layers[0](feats[2])
    t1 = neck.top_down_blocks[0](torch.cat([up(r2), feats[1]], 1))
    r1 = neck.reduce_layers[1](t1)
    t0 = neck.top_down_blocks[1](torch.cat([up(r1), feats[0]], 1))
    o1 = neck.bottom_up_blocks[0](torch.cat([neck.downsamples[0](t0), r1], 1))
    o2 = neck.bottom_up_blocks[1](torch.cat([neck.downsamples[1](o1), r2], 1))
    expected = [neck.out_convs[i](o) for i, o in enumerate([t0, o1, o2])]
    got = neck(feats)
    assert neck.out_channels == [16, 16, 16]
    for g, e in zip(got, expected):
        assert torch.equal(g, e)


def _head(**kwargs):
    return RTMDetSepBNHead(3, [16, 16, 16], prior_generator=PointGenerator([8, 16, 32]), coder=DistanceCoder(),
                           cls_channels=16, box_channels=16, **kwargs)


def test_head_shares_convs_and_keeps_a_batchnorm_per_level():
    head = _head()
    for name in ("cls_convs", "box_convs"):
        levels = getattr(head, name)
        for level in (1, 2):
            for i in range(2):
                assert levels[level][i].conv is levels[0][i].conv
                assert levels[level][i].bn is not levels[0][i].bn
        assert head.cls_preds[1] is not head.cls_preds[0]
    plain = _head(share_convs=False)
    shared_convs = 2 * 2 * 2 * 16 * 16 * 9  # 2 branches x 2 convs x 2 levels no longer separate
    assert count(plain) - count(head) == shared_convs
    state = head.state_dict()
    assert torch.equal(state["cls_convs.2.1.conv.weight"], state["cls_convs.0.1.conv.weight"])  # saved per level
    # every level's loss reaches the one shared weight
    head.train()
    outs = head([torch.randn(2, 16, 8, 8), torch.randn(2, 16, 4, 4), torch.randn(2, 16, 2, 2)])
    outs[2].sum().backward()
    assert head.cls_convs[0][0].conv.weight.grad is not None
    assert head.cls_convs[0][0].bn.weight.grad is None  # level 0's BN is not on level 2's path


def test_head_refusals():
    with pytest.raises(ValueError, match="same channels"):
        RTMDetSepBNHead(3, [16, 32, 64], prior_generator=PointGenerator([8, 16, 32]), coder=DistanceCoder())
    with pytest.raises(ValueError, match="stem"):
        _head(stem_channels=16)


def test_rtmdet_s_trains_one_step_at_a_small_input():
    model = instantiate(load_config(CONFIG, ["model.head.num_classes=3"]).model).train()
    batch = {
        "images": torch.rand(2, 3, 96, 128),
        "gt_boxes": torch.tensor([[[10.0, 12.0, 60.0, 70.0], [70.0, 20.0, 90.0, 36.0]],
                                  [[0.0, 0.0, 128.0, 96.0], [0.0, 0.0, 0.0, 0.0]]]),
        "gt_labels": torch.tensor([[0, 2], [1, 0]]),
        "gt_mask": torch.tensor([[True, True], [True, False]]),
    }
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    before = model.head.cls_convs[0][0].conv.weight.detach().clone()
    losses = model.loss(batch)
    assert {"loss_cls", "loss_box"} <= set(losses) and not any(k.startswith("loss_obj") for k in losses)
    total = sum(v for k, v in losses.items() if k.startswith("loss_"))
    assert torch.isfinite(total) and total > 0
    assert losses["stat_gt_no_pos"] == 0  # DSL gives every GT a positive here
    total.backward()
    optimizer.step()
    assert not torch.equal(before, model.head.cls_convs[0][0].conv.weight)
