"""Every assigner preset trains one step on each head family: finite losses and gradients, statistics."""

from __future__ import annotations

import pytest
import torch

from detkit.anchors import PointGenerator, YOLOAnchorGenerator
from detkit.assigners.presets import ASSIGNER_PRESETS, assigner_call
from detkit.coders import DFLCoder, YOLOCoder, YOLOXCoder
from detkit.config import instantiate, parse_value
from detkit.losses import DistributionFocalLoss, IoULoss, L1Loss, QualityFocalLoss, VarifocalLoss
from detkit.models import PAN, CSPDarknet, DecoupledHead, Detector, YOLOHead, YOLOLossPipeline

from .conftest import LEVEL_ANCHORS


def anchor_head(assigner):
    return YOLOHead(3, prior_generator=YOLOAnchorGenerator(base_sizes=LEVEL_ANCHORS, strides=[8, 16, 32]),
                    coder=YOLOCoder(scale_x_y=1.05), loss=YOLOLossPipeline(assigner=assigner))


def yolov8_head(assigner):
    loss = YOLOLossPipeline(assigner=assigner, loss_dfl=DistributionFocalLoss(), box_weight="cls_target",
                            cls_target="assigner" if _scores(assigner) else "onehot")
    return DecoupledHead(3, prior_generator=PointGenerator([8, 16, 32]), coder=DFLCoder(16), loss=loss,
                         bias_init="yolov8")


def yolox_head(assigner):
    loss = YOLOLossPipeline(assigner=assigner, cls_target="iou", obj_target="one", obj_normalize="num_pos",
                            loss_box=IoULoss(mode="iou", penalty="square"), loss_reg=L1Loss(),
                            loss_cls=VarifocalLoss())
    return DecoupledHead(3, prior_generator=PointGenerator([8, 16, 32]), coder=YOLOXCoder(), loss=loss,
                         stem_channels=16, objectness=True)


def rtmdet_like_head(assigner):
    loss = YOLOLossPipeline(assigner=assigner, cls_target="iou", box_weight="cls_target",
                            loss_cls=QualityFocalLoss(), loss_box=IoULoss(mode="giou"))
    return DecoupledHead(3, prior_generator=PointGenerator([8, 16, 32]), coder=DFLCoder(8), loss=loss)


def _scores(assigner) -> bool:
    """Whether the assigner sets ``score_target`` (found by running it on one GT of a 64 px image)."""
    grid = PointGenerator([8, 16, 32]).grid_priors([(8, 8), (4, 4), (2, 2)])
    priors, strides, counts = grid
    res = assigner.assign(grid, torch.tensor([[[2.0, 2.0, 30.0, 30.0]]]), torch.tensor([[0]]),
                          torch.tensor([[True]]), num_level_priors=counts, prior_strides=strides,
                          pred_boxes=priors[None].clone(), pred_scores=torch.full((1, len(priors), 3), 0.5))
    return getattr(res, "score_target", None) is not None


HEADS = {"yolo_anchor": anchor_head, "yolov8_dfl": yolov8_head, "yolox_obj": yolox_head, "rtmdet_qfl": rtmdet_like_head}


@pytest.mark.parametrize("head_name", sorted(HEADS))
@pytest.mark.parametrize("preset", sorted(ASSIGNER_PRESETS))
def test_one_training_step(preset, head_name):
    torch.manual_seed(0)
    assigner = instantiate(parse_value(assigner_call(preset)))
    model = Detector(CSPDarknet("yolov5", deepen_factor=0.33, widen_factor=0.125), PAN(), HEADS[head_name](assigner))
    batch = dict(
        images=torch.rand(2, 3, 96, 128),
        gt_boxes=torch.tensor([[[10.0, 12, 46, 60], [60, 8, 120, 90], [0, 0, 0, 0]],
                               [[4.0, 4, 12, 10], [30, 30, 94, 94], [50, 40, 70, 80]]]),
        gt_labels=torch.tensor([[1, 0, 0], [2, 1, 0]]),
        gt_mask=torch.tensor([[True, True, False], [True, True, True]]),
    )
    model.train()
    out = model.loss(batch)
    losses = {k: v for k, v in out.items() if k.startswith("loss_")}
    assert {"loss_cls", "loss_box"} <= set(losses)
    assert ("loss_obj" in losses) == model.head.has_objectness
    total = sum(losses.values())
    assert torch.isfinite(total) and total > 0
    total.backward()
    grads = [p.grad for p in model.head.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    box_convs = model.head.box_preds if isinstance(model.head, DecoupledHead) else model.head.preds
    box_grad = sum(float(m.weight.grad.abs().sum()) for m in box_convs)
    assert box_grad > 0  # the box branch learns from the positives
    assert out["stat_num_gt"].item() == 5 and out["stat_pos_per_gt"].item() > 0
    assert {f"stat_pos_level{i}" for i in range(3)} <= set(out)
