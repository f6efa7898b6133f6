"""YOLOv5's normalisation (pos_normalize="level_sum") and objectness target (obj_target="ciou"), by hand."""

import pytest
import torch

from detkit.anchors import YOLOAnchorGenerator
from detkit.models.heads.yolo_loss import YOLOLossPipeline

from .test_yolo_loss import ciou_by_hand, make_batch, pipeline, preds_with_obj, softplus


def two_level_setup():
    """Level 0: 2x2 cells at stride 8 (one 8x8 anchor); level 1: one cell at stride 16 (one 16x16 anchor)."""
    gen = YOLOAnchorGenerator(base_sizes=[[(8, 8)], [(16, 16)]], strides=[8, 16])
    return gen.grid_priors([(2, 2), (1, 1)])


def test_level_sum_divides_each_level_by_its_own_positives():
    priors, strides, counts = two_level_setup()
    gt = [1.0, 2.0, 15.0, 13.0]  # holds every prior centre: 4 positives on level 0, 1 on level 1; label 1
    batch = make_batch([[gt]], [[1]], [[True]])
    args = dict(obj_level_weights=(2.0, 0.5), loss_weights=dict(cls=1.0, obj=1.0, box=1.0))
    level = pipeline(pos_normalize="level_sum", **args)(preds_with_obj(1, 5), priors, strides, counts, batch)
    flat = pipeline(**args)(preds_with_obj(1, 5), priors, strides, counts, batch)
    # zero outputs decode to the prior itself: per positive 1 - CIoU(prior, GT)
    cells = [[0.0, 0.0, 8.0, 8.0], [8.0, 0.0, 16.0, 8.0], [0.0, 8.0, 8.0, 16.0], [8.0, 8.0, 16.0, 16.0]]
    l0 = [1 - ciou_by_hand(c, gt)[1] for c in cells]
    l1 = 1 - ciou_by_hand([0.0, 0.0, 16.0, 16.0], gt)[1]
    assert level["loss_box"].item() == pytest.approx(sum(l0) / 4 + l1, rel=1e-5)  # YOLOv5: sum of level means
    assert flat["loss_box"].item() == pytest.approx((sum(l0) + l1) / 5, rel=1e-5)  # the batch's mean
    # classes: 2 at logit 0 on every positive, log 2 each: per level sum / count, levels summed
    assert level["loss_cls"].item() == pytest.approx(2 * 2 * torch.log(torch.tensor(2.0)).item(), rel=1e-6)
    assert flat["loss_cls"].item() == pytest.approx(2 * torch.log(torch.tensor(2.0)).item(), rel=1e-6)
    assert level["loss_obj"].item() == pytest.approx(flat["loss_obj"].item(), rel=1e-6)  # objectness unchanged


def test_obj_target_ciou_is_yolov5s_clamped_ciou():
    priors, strides, counts = two_level_setup()
    gt = [2.0, 0.0, 10.0, 12.0]  # centre (6, 6): prior 0 (level 0) and the level-1 prior hold it
    batch = make_batch([[gt]], [[1]], [[True]])
    args = dict(obj_level_weights=(2.0, 0.5), loss_weights=dict(cls=1.0, obj=1.0, box=1.0))
    out = pipeline(obj_target="ciou", **args)(preds_with_obj(1, 5), priors, strides, counts, batch)
    c0 = max(ciou_by_hand([0.0, 0.0, 8.0, 8.0], gt)[1], 0.0)
    c1 = max(ciou_by_hand([0.0, 0.0, 16.0, 16.0], gt)[1], 0.0)
    # objectness at logit 1: BCE = softplus(1) - target; level means weighted 2 and 0.5
    expected = 2.0 * (4 * softplus(1.0) - c0) / 4 + 0.5 * (softplus(1.0) - c1)
    assert out["loss_obj"].item() == pytest.approx(expected, rel=1e-5)


def test_level_sum_needs_uniform_box_weights_and_known_names():
    with pytest.raises(ValueError, match="box_weight='uniform'"):
        YOLOLossPipeline(assigner=object(), pos_normalize="level_sum", box_weight="cls_target")
    with pytest.raises(ValueError, match="unknown pos_normalize"):
        YOLOLossPipeline(assigner=object(), pos_normalize="levels")
