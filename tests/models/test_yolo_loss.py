import math
from dataclasses import dataclass

import pytest
import torch

from detkit.anchors import YOLOAnchorGenerator
from detkit.boxes import pairwise_iou
from detkit.coders import YOLOCoder
from detkit.losses import FocalLoss, IoULoss, L1Loss
from detkit.models.heads.yolo_loss import YOLOLossPipeline
from detkit.samplers import RandomSampler
from tests.fixtures.heads import yolo_predictions


@dataclass
class FakeAssignResult:
    gt_index: torch.Tensor
    pos_mask: torch.Tensor
    ignore_mask: torch.Tensor
    labels: torch.Tensor
    iou: torch.Tensor


class CentreInBoxAssigner:
    """Test stand-in: a prior is positive to the first valid GT containing its centre."""

    uses_predictions = False

    def __init__(self):
        self.calls = []

    def assign(self, priors, gt_boxes, gt_labels, gt_mask, *, num_level_priors=None, prior_strides=None,
               pred_boxes=None, pred_scores=None):
        self.calls.append(dict(num_level_priors=num_level_priors, pred_boxes=pred_boxes, pred_scores=pred_scores))
        c = (priors[:, :2] + priors[:, 2:]) / 2  # (N, 2)
        centre = c[None, :, None, :]
        inside = ((centre > gt_boxes[:, None, :, :2]) & (centre < gt_boxes[:, None, :, 2:])).all(-1)
        inside &= gt_mask[:, None, :]  # (B, N, M)
        pos = inside.any(-1)
        first = inside.float().argmax(-1)
        gt_index = torch.where(pos, first, torch.full_like(first, -1))
        labels = torch.where(pos, gt_labels.gather(1, first), torch.full_like(first, -1))
        iou = pairwise_iou(priors[None].expand(gt_boxes.shape[0], -1, -1), gt_boxes).gather(2, first[..., None])[..., 0]
        return FakeAssignResult(gt_index, pos, torch.zeros_like(pos), labels,
                                torch.where(pos, iou, torch.zeros_like(iou)))


def one_level_setup():
    """2x2 grid at stride 8 with one 8x8 anchor per cell: priors are the cells themselves."""
    gen = YOLOAnchorGenerator(base_sizes=[[(8, 8)]], strides=[8])
    return gen.grid_priors([(2, 2)])


def make_batch(gt_boxes, gt_labels, gt_mask, ignore_boxes=None, ignore_mask=None):
    b = len(gt_boxes)
    batch = dict(gt_boxes=torch.tensor(gt_boxes, dtype=torch.float32), gt_labels=torch.tensor(gt_labels),
                 gt_mask=torch.tensor(gt_mask))
    batch["ignore_boxes"] = torch.tensor(ignore_boxes if ignore_boxes is not None else [[[0.0] * 4]] * b)
    batch["ignore_mask"] = torch.tensor(ignore_mask if ignore_mask is not None else [[False]] * b)
    return batch


class CoupledPipeline:
    """The pipeline as a YOLOHead calls it, fed with ``(B, N, 5+C)`` raw outputs."""

    def __init__(self, coder=None, **kw):
        self.coder = coder if coder is not None else YOLOCoder()
        self.pipeline = YOLOLossPipeline(**kw)

    @property
    def assigner(self):
        return self.pipeline.assigner

    def __call__(self, preds, priors, strides, counts, batch):
        return self.pipeline(yolo_predictions(preds, priors, strides, counts, self.coder), batch)


def pipeline(**kw):
    args = dict(assigner=CentreInBoxAssigner(), loss_weights=dict(cls=1.0, obj=1.0, box=1.0), obj_level_weights=(2.0,))
    args.update(kw)
    return CoupledPipeline(**args)


def preds_with_obj(b, n, obj_logit=1.0, c=2):
    p = torch.zeros(b, n, 5 + c)
    p[..., 4] = obj_logit
    return p.requires_grad_()


def ciou_by_hand(a, b):
    ax1, ay1, ax2, ay2 = a
    bx1, by1, bx2, by2 = b
    inter = max(0, min(ax2, bx2) - max(ax1, bx1)) * max(0, min(ay2, by2) - max(ay1, by1))
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    iou = inter / union
    diag2 = (max(ax2, bx2) - min(ax1, bx1)) ** 2 + (max(ay2, by2) - min(ay1, by1)) ** 2
    rho2 = ((ax1 + ax2) / 2 - (bx1 + bx2) / 2) ** 2 + ((ay1 + ay2) / 2 - (by1 + by2) / 2) ** 2
    v = 4 / math.pi**2 * (math.atan((bx2 - bx1) / (by2 - by1)) - math.atan((ax2 - ax1) / (ay2 - ay1))) ** 2
    return iou, iou - rho2 / diag2 - v / (1 - iou + v) * v


def softplus(x):
    return math.log1p(math.exp(x))


def test_hand_computed_losses_one_positive():
    priors, strides, counts = one_level_setup()
    gt = [2.0, 0.0, 10.0, 12.0]  # centre (6, 6) inside prior 0's cell only; label 1
    batch = make_batch([[gt], [[0.0] * 4]], [[1], [0]], [[True], [False]])
    preds = preds_with_obj(2, 4)
    out = pipeline(loss_reg=L1Loss())(preds, priors, strides, counts, batch)
    iou, ciou = ciou_by_hand([0.0, 0.0, 8.0, 8.0], gt)  # zero outputs decode to the prior itself
    assert out["loss_box"].item() == pytest.approx(1 - ciou, rel=1e-5)
    # Encoded target: offsets 0.75 -> logit log 3; tw = log(8/8) = 0; th = log(12/8).
    assert out["loss_reg"].item() == pytest.approx(2 * math.log(3) + math.log(1.5), rel=1e-5)
    assert out["loss_cls"].item() == pytest.approx(2 * math.log(2), rel=1e-6)  # 2 classes at logit 0
    # Objectness at logit 1: BCE = softplus(1) - target; positive target = IoU (3/7); 8 valid priors.
    expected_obj = 2.0 * (8 * softplus(1.0) - iou) / 8
    assert out["loss_obj"].item() == pytest.approx(expected_obj, rel=1e-5)
    assert out["stat_num_gt"].item() == 1 and out["stat_pos_per_gt"].item() == 1
    assert out["stat_gt_no_pos"].item() == 0 and out["stat_pos_level0"].item() == 0.5
    assert out["stat_pos_iou"].item() == pytest.approx(iou, rel=1e-5)


def test_obj_target_one_and_loss_weights():
    priors, strides, counts = one_level_setup()
    batch = make_batch([[[2.0, 0.0, 10.0, 12.0]]], [[1]], [[True]])
    out = pipeline(obj_target="one", loss_weights=dict(obj=0.5, cls=3.0))(
        preds_with_obj(1, 4), priors, strides, counts, batch)
    assert out["loss_obj"].item() == pytest.approx(0.5 * 2.0 * (4 * softplus(1.0) - 1.0) / 4, rel=1e-5)
    assert out["loss_cls"].item() == pytest.approx(3.0 * 2 * math.log(2), rel=1e-6)


def test_no_gt_batch_only_negative_objectness():
    priors, strides, counts = one_level_setup()
    batch = make_batch([[[0.0] * 4], [[0.0] * 4]], [[0], [0]], [[False], [False]])
    preds = preds_with_obj(2, 4, obj_logit=-2.0)
    out = pipeline()(preds, priors, strides, counts, batch)
    assert out["loss_cls"].item() == 0.0 and out["loss_box"].item() == 0.0
    assert out["loss_cls"].requires_grad and out["loss_box"].requires_grad
    assert out["loss_obj"].item() == pytest.approx(2.0 * softplus(-2.0), rel=1e-5)
    sum(v for k, v in out.items() if k.startswith("loss_")).backward()
    assert torch.isfinite(preds.grad).all() and preds.grad[..., 4].abs().sum() > 0
    assert preds.grad[..., :4].abs().sum() == 0
    assert out["stat_num_gt"].item() == 0 and out["stat_pos_per_gt"].item() == 0


def test_crowd_region_priors_leave_the_negatives():
    priors, strides, counts = one_level_setup()
    # Ignore box covers prior 3 ([8, 8, 16, 16]) fully and prior 1 ([8, 0, 16, 8]) by a quarter.
    batch = make_batch([[[0.0] * 4]], [[0]], [[False]], ignore_boxes=[[[8.0, 6.0, 16.0, 16.0]]],
                       ignore_mask=[[True]])
    preds = preds_with_obj(1, 4)
    out = pipeline()(preds, priors, strides, counts, batch)
    assert out["loss_obj"].item() == pytest.approx(2.0 * softplus(1.0), rel=1e-5)  # mean over 3 priors
    out["loss_obj"].backward()
    assert preds.grad[0, 3, 4] == 0 and preds.grad[0, 1, 4] != 0
    padded = make_batch([[[0.0] * 4]], [[0]], [[False]], ignore_boxes=[[[8.0, 6.0, 16.0, 16.0]]],
                        ignore_mask=[[False]])
    out2 = pipeline()(preds_with_obj(1, 4), priors, strides, counts, padded)
    assert out2["loss_obj"].item() == pytest.approx(2.0 * softplus(1.0), rel=1e-5)  # padding row ignored
    out3 = pipeline(ignore_iof_thr=None)(preds_with_obj(1, 4), priors, strides, counts, batch)
    assert out3["loss_obj"].item() == pytest.approx(2.0 * softplus(1.0), rel=1e-5)


def test_gradients_reach_only_the_right_outputs():
    priors, strides, counts = one_level_setup()
    batch = make_batch([[[2.0, 0.0, 10.0, 12.0]]], [[0]], [[True]])
    preds = preds_with_obj(1, 4)
    out = pipeline()(preds, priors, strides, counts, batch)
    (out["loss_box"] + out["loss_cls"]).backward()
    g = preds.grad[0]
    assert g[0, :4].abs().sum() > 0 and g[0, 5:].abs().sum() > 0
    assert g[1:].abs().sum() == 0 and g[:, 4].abs().sum() == 0  # obj target IoU is detached


def test_per_level_objectness_weights_and_stats():
    gen = YOLOAnchorGenerator(base_sizes=[[(8, 8)], [(16, 16)]], strides=[8, 16])
    priors, strides, counts = gen.grid_priors([(2, 2), (1, 1)])  # N = 4 + 1
    batch = make_batch([[[2.0, 2.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]]], [[0, 1]], [[True, True]])
    preds = preds_with_obj(1, 5)
    p = pipeline(obj_level_weights=(1.0, 3.0), obj_target="one")
    out = p(preds, priors, strides, counts, batch)
    # Prior 0 (centre 4, 4) and prior 4 (centre 8, 8) hold GT 0's centre; GT 1 gets nothing.
    level0 = (4 * softplus(1.0) - 1.0) / 4
    level1 = (softplus(1.0) - 1.0) / 1
    assert out["loss_obj"].item() == pytest.approx(1.0 * level0 + 3.0 * level1, rel=1e-5)
    assert out["stat_num_gt"].item() == 2 and out["stat_gt_no_pos"].item() == 1
    assert out["stat_pos_per_gt"].item() == 1.0  # (2 + 0) / 2
    assert out["stat_pos_level0"].item() == 1 and out["stat_pos_level1"].item() == 1
    assert p.assigner.calls[0]["num_level_priors"] == [4, 1]
    assert p.assigner.calls[0]["pred_scores"] is None  # uses_predictions = False


def test_prediction_aware_assigners_get_decoded_boxes_and_scores():
    priors, strides, counts = one_level_setup()
    assigner = CentreInBoxAssigner()
    del CentreInBoxAssigner.uses_predictions  # behave like an assigner without the attribute
    try:
        batch = make_batch([[[2.0, 0.0, 10.0, 12.0]]], [[1]], [[True]])
        pipeline(assigner=assigner)(preds_with_obj(1, 4), priors, strides, counts, batch)
    finally:
        CentreInBoxAssigner.uses_predictions = False
    call = assigner.calls[0]
    torch.testing.assert_close(call["pred_boxes"][0], priors)
    # sigmoid(0) * sigmoid(1) for both classes.
    torch.testing.assert_close(call["pred_scores"], torch.full((1, 4, 2), 0.5 / (1 + math.exp(-1.0))))
    assert not call["pred_boxes"].requires_grad


def test_random_sampler_focal_and_iou_options_run():
    priors, strides, counts = one_level_setup()
    batch = make_batch([[[2.0, 0.0, 10.0, 12.0]]], [[1]], [[True]])
    p = pipeline(sampler=RandomSampler(num=2, pos_fraction=0.5, seed=0), loss_cls=FocalLoss(label_smoothing=0.1),
                 loss_box=IoULoss(mode="giou"))
    out = p(preds_with_obj(1, 4), priors, strides, counts, batch)
    assert all(torch.isfinite(v) for v in out.values())
    # One positive and one negative sampled: objectness mean over 2 priors.
    assert out["loss_obj"].item() == pytest.approx(2.0 * (2 * softplus(1.0) - 3 / 7) / 2, rel=1e-5)


def test_half_precision_preds_give_fp32_losses():
    priors, strides, counts = one_level_setup()
    batch = make_batch([[[2.0, 0.0, 10.0, 12.0]]], [[1]], [[True]])
    out = pipeline()(preds_with_obj(1, 4).detach().half(), priors, strides, counts, batch)
    assert out["loss_box"].dtype == torch.float32 and torch.isfinite(out["loss_box"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(obj_target="giou"), "obj_target"),
        (dict(loss_weights=dict(bbox=1.0)), "loss_weights"),
        (dict(assigner=None), "assigner"),
        (dict(cls_target="soft"), "cls_target"),
        (dict(box_weight="iou"), "box_weight"),
        (dict(obj_normalize="sum"), "obj_normalize"),
        (dict(reg_last_epochs=15), "loss_reg"),
    ],
)
def test_invalid_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pipeline(**kwargs)


def test_shape_mismatches_raise():
    priors, strides, counts = one_level_setup()
    batch = make_batch([[[2.0, 0.0, 10.0, 12.0]]], [[1]], [[True]])
    with pytest.raises(ValueError, match="not a class of this head"):
        pipeline()(torch.zeros(1, 4, 6), priors, strides, counts, batch)  # C = 1, label 1
    with pytest.raises(ValueError, match="inconsistent head predictions"):
        pipeline()(torch.zeros(1, 3, 7), priors, strides, counts, batch)
    with pytest.raises(ValueError, match="obj_level_weights"):
        pipeline(obj_level_weights=(4.0, 1.0, 0.4))(torch.zeros(1, 4, 7), priors, strides, counts, batch)


REAL_ASSIGNERS = {
    "max_iou": lambda m: m.MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4),
    "atss": lambda m: m.ATSSAssigner(topk=3),
    "grid": lambda m: m.GridAssigner(),
    "simota": lambda m: m.SimOTAAssigner(),
    "task_aligned": lambda m: m.TaskAlignedAssigner(topk=5),
}


@pytest.mark.parametrize("name", list(REAL_ASSIGNERS))
def test_with_every_real_assigner_three_levels(name):
    assigners = pytest.importorskip("detkit.assigners")
    gen = YOLOAnchorGenerator(base_sizes=[[(10, 13), (16, 30)], [(30, 61), (62, 45)], [(59, 119), (116, 90)]],
                              strides=[8, 16, 32])
    grid = gen.grid_priors([(8, 8), (4, 4), (2, 2)])  # 64 x 64 input
    priors, strides, counts = grid
    batch = make_batch([[[4.0, 4.0, 20.0, 22.0], [30.0, 10.0, 62.0, 60.0]], [[0.0] * 4, [0.0] * 4]],
                       [[0, 2], [0, 0]], [[True, True], [False, False]])
    preds = (torch.randn(2, priors.shape[0], 8, generator=torch.Generator().manual_seed(0)) * 0.5).requires_grad_()
    p = CoupledPipeline(assigner=REAL_ASSIGNERS[name](assigners), coder=YOLOCoder(scale_x_y=1.05))
    out = p(preds, grid, strides, counts, batch)  # the grid, as heads pass it (grid-only rules need it)
    assert {"loss_cls", "loss_obj", "loss_box"} <= set(out)
    assert out["stat_num_gt"].item() == 2 and out["stat_gt_no_pos"].item() == 0  # both GTs learn
    total_pos = sum(out[f"stat_pos_level{i}"].item() for i in range(3)) * 2  # per image -> batch
    assert total_pos == pytest.approx(out["stat_pos_per_gt"].item() * 2)
    losses = sum(v for k, v in out.items() if k.startswith("loss_"))
    assert torch.isfinite(losses)
    losses.backward()
    assert torch.isfinite(preds.grad).all() and preds.grad[..., :4].abs().sum() > 0
