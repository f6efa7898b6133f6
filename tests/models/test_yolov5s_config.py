"""configs/yolov5s_yolov5.py is the yolov5 package's yolov5s.yaml model; YOLOHead without its 3x3 conv."""

from pathlib import Path

import pytest
import torch
from torch import nn

from detkit.config import instantiate, load_config
from detkit.models import CSPDarknet
from detkit.models.layers import SPPFBlock

from .conftest import tiny_head

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "yolov5s_yolov5.py"


def test_yolov5s_config_has_the_yolov5_package_parameter_counts():
    model = instantiate(load_config(CONFIG).model)
    # yolov5 7.0.14: Model("yolov5s.yaml", nc=80) has 7,235,389 parameters; layers 0-9 (the backbone) 4,171,456
    assert sum(p.numel() for p in model.parameters()) == 7_235_389
    assert sum(p.numel() for p in model.backbone.parameters()) == 4_171_456
    # Detect: a 1x1 conv per level from the neck's 128 / 256 / 512 channels to 3 x 85 outputs
    assert [tuple(p.weight.shape) for p in model.head.preds] == [(255, 128, 1, 1), (255, 256, 1, 1), (255, 512, 1, 1)]
    assert all(isinstance(c, nn.Identity) for c in model.head.convs)
    norms = {(m.eps, m.momentum) for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    assert norms == {(1e-3, 0.03)}


def test_yolov5_sppf_arch_is_yolov5_plus_sppf():
    plain = CSPDarknet("yolov5", scale="s")
    full = CSPDarknet("yolov5-sppf", scale="s")
    assert isinstance(full.stages[-1][-1], SPPFBlock) and not isinstance(plain.stages[-1][-1], SPPFBlock)
    sppf = full.stages[-1][-1]
    # SPPF(512, 512): 1x1 512 -> 256, three 5x5 pools, 1x1 1024 -> 512 (conv weights + BN affine)
    assert sum(p.numel() for p in sppf.parameters()) == 512 * 256 + 2 * 256 + 1024 * 512 + 2 * 512
    assert sum(p.numel() for p in full.parameters()) - sum(p.numel() for p in plain.parameters()) == \
        sum(p.numel() for p in sppf.parameters())
    assert full.out_channels == [128, 256, 512]


def test_head_without_3x3_conv_predicts_from_its_input():
    head = tiny_head(num_classes=2, feat_channels=0)
    head.bind([4, 8, 16])
    assert all(isinstance(c, nn.Identity) for c in head.convs)
    assert [p.in_channels for p in head.preds] == [4, 8, 16]
    feats = [torch.randn(1, c, s, s) for c, s in ((4, 4), (8, 2), (16, 1))]
    out = head(feats)
    for x, pred, y in zip(feats, head.preds, out):
        # the output is the 1x1 conv of the input itself: W x + b per location
        expected = torch.einsum("oi,bihw->bohw", pred.weight[:, :, 0, 0], x) + pred.bias[None, :, None, None]
        torch.testing.assert_close(y, expected)


def test_head_feat_channels_zero_on_some_levels_is_refused():
    with pytest.raises(ValueError, match="0 on every level"):
        tiny_head(feat_channels=[0, 8, 8]).bind([8, 8, 8])
    with pytest.raises(ValueError, match="must be positive"):
        tiny_head(feat_channels=-1).bind([8, 8, 8])
