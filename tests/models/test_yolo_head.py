import math

import pytest
import torch

from detkit.anchors import PointGenerator
from detkit.coders import YOLOCoder
from detkit.models import YOLOHead
from tests.fixtures.heads import columns

from .conftest import tiny_head


def test_head_output_layout_and_feat_channels():
    head = tiny_head(num_classes=3)
    head.bind([16, 32, 64])
    assert [c.conv.out_channels for c in head.convs] == [32, 64, 128]  # 2x input (YOLOv3/v4)
    raw = head([torch.randn(2, 16, 8, 12), torch.randn(2, 32, 4, 6), torch.randn(2, 64, 2, 3)])
    assert [tuple(r.shape) for r in raw] == [(2, 24, 8, 12), (2, 24, 4, 6), (2, 24, 2, 3)]
    assert columns(head.flatten(raw)).shape == (2, (96 + 24 + 6) * 3, 8)


def test_anchor_free_points_give_one_prior_per_location():
    head = YOLOHead(80, [16, 32, 64], prior_generator=PointGenerator([8, 16, 32]),
                    coder=YOLOCoder(), feat_channels=24)
    assert head.preds[0].out_channels == 85 and head.convs[2].conv.out_channels == 24


def test_flatten_order_is_level_row_column_anchor():
    head = tiny_head(num_classes=1)  # A = 3, 5 + C = 6
    head.bind([4, 4, 4])
    raws = []
    for level, (h, w) in enumerate([(2, 3), (1, 2), (1, 1)]):
        a, k, y, x = torch.meshgrid(torch.arange(3), torch.arange(6), torch.arange(h),
                                    torch.arange(w), indexing="ij")
        value = 10000 * level + 1000 * a + 100 * k + 10 * y + x
        raws.append(value.reshape(1, 18, h, w).float())  # channel = a * 6 + k
    flat = columns(head.flatten(raws))
    assert flat.shape == (1, 6 * 3 + 2 * 3 + 3, 6)
    # level 0, y=1, x=2, anchor 1 -> index (1 * 3 + 2) * 3 + 1 = 16
    assert torch.equal(flat[0, 16], 1000 + 100 * torch.arange(6.0) + 12)
    # level 1, y=0, x=1, anchor 2 -> 18 + (0 * 2 + 1) * 3 + 2 = 23
    assert torch.equal(flat[0, 23], 10000 + 2000 + 100 * torch.arange(6.0) + 1)


def test_bias_init_gives_one_percent():
    head = tiny_head(num_classes=4)
    head.bind([8, 8, 8])
    bias = head.preds[1].bias.view(3, 9)
    assert torch.allclose(torch.sigmoid(bias[:, 4:]), torch.full((3, 5), 0.01))
    assert torch.equal(bias[:, :4], torch.zeros(3, 4))
    raw = head([torch.zeros(1, 8, 2, 2)] * 3)
    probs = torch.sigmoid(columns(head.flatten(raw))[..., 4:])
    assert torch.allclose(probs, torch.full_like(probs, 0.01), atol=2e-3)
    assert math.isclose(head.prior_prob, 0.01)


def test_head_argument_errors():
    with pytest.raises(ValueError, match="num_classes"):
        tiny_head(num_classes=0)
    head = tiny_head()
    with pytest.raises(ValueError, match="prior generator has 3 strides"):
        head.bind([8, 8])
    with pytest.raises(ValueError, match="one entry per level"):
        tiny_head(feat_channels=[8, 8]).bind([8, 8, 8])


def test_inference_only_head():
    head = tiny_head()
    assert head.assigner is None
    with pytest.raises(ValueError, match="without a loss pipeline"):
        head.loss([], {})
    with pytest.raises(ValueError, match="unknown post-processing"):
        head.bind([4, 4, 4]) or head.predict([torch.zeros(1, 24, 1, 1)] * 3, score_th=0.5)
