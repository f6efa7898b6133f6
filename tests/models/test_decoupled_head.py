"""DecoupledHead layout, flatten order, bias init, and the loss pipeline without objectness (hand-computed)."""

import math
from dataclasses import dataclass

import pytest
import torch

from detkit.anchors import PointGenerator, YOLOAnchorGenerator
from detkit.coders import DFLCoder, DistanceCoder, YOLOXCoder
from detkit.losses import DistributionFocalLoss, IoULoss, L1Loss
from detkit.models import DecoupledHead, YOLOLossPipeline
from detkit.models.heads.predictions import DensePredictions

from .test_yolo_loss import CentreInBoxAssigner, make_batch, softplus


def yolov8_like(num_classes=3, **kw):
    return DecoupledHead(num_classes, prior_generator=PointGenerator([8, 16, 32]), coder=DFLCoder(16),
                         bias_init="yolov8", **kw)


def test_yolov8_layout_widths_and_raw_channels():
    head = yolov8_like(num_classes=80)
    head.bind([128, 256, 512])  # YOLOv8-s neck outputs
    head.eval()
    # YOLOv8's rule: box branch max(16, 128 // 4, 4 * 16) = 64, class branch max(128, min(80, 100)) = 128.
    assert [m[0].conv.out_channels for m in head.box_convs] == [64, 64, 64]
    assert [m[1].conv.out_channels for m in head.cls_convs] == [128, 128, 128]
    assert head.obj_preds is None and head.out_channels == [64 + 80] * 3
    raw = head([torch.zeros(1, c, s, s) for c, s in zip([128, 256, 512], [4, 2, 1])])
    assert [tuple(r.shape) for r in raw] == [(1, 144, 4, 4), (1, 144, 2, 2), (1, 144, 1, 1)]
    # Ultralytics 8.4.190's YOLOv8-s Detect head has 2,147,008 parameters, 16 of them its fixed DFL
    # projection (0..15, never trained), which detkit's DFLCoder holds as a constant.
    assert sum(p.numel() for p in head.parameters()) == 2_147_008 - 16


def test_yolox_layout_with_stem_objectness_and_depthwise():
    head = DecoupledHead(80, [128, 256, 512], prior_generator=PointGenerator([8, 16, 32]), coder=YOLOXCoder(),
                         stem_channels=128, objectness=True)
    assert [s.conv.out_channels for s in head.stems] == [128] * 3
    assert head.out_channels == [4 + 1 + 80] * 3 and head.has_objectness
    # YOLOX-s head: per level 1x1 stem, 2 + 2 3x3 convs at 128, preds 80 + 4 + 1.
    per_level_convs = 4 * (9 * 128 * 128 + 2 * 128)
    preds = (128 * 80 + 80) + (128 * 4 + 4) + (128 + 1)
    stems = sum(c * 128 + 2 * 128 for c in (128, 256, 512))
    assert sum(p.numel() for p in head.parameters()) == stems + 3 * (per_level_convs + preds)
    dw = DecoupledHead(80, [128, 256, 512], prior_generator=PointGenerator([8, 16, 32]), coder=YOLOXCoder(),
                       stem_channels=128, objectness=True, depthwise=True)
    assert sum(p.numel() for p in dw.parameters()) < sum(p.numel() for p in head.parameters()) / 3


def test_flatten_names_box_obj_cls_in_prior_order():
    head = DecoupledHead(2, [4, 4], prior_generator=PointGenerator([8, 16]), coder=DistanceCoder(),
                         objectness=True)
    raws = []
    for level, (h, w) in enumerate([(2, 3), (1, 2)]):
        k, y, x = torch.meshgrid(torch.arange(7), torch.arange(h), torch.arange(w), indexing="ij")
        raws.append((1000 * level + 100 * k + 10 * y + x).float()[None])  # (1, 4 + 1 + 2, H, W)
    preds = head.flatten(raws)
    assert preds.box.shape == (1, 8, 4) and preds.cls.shape == (1, 8, 2) and preds.obj.shape == (1, 8)
    # level 0, y=1, x=2 -> prior 5; level 1, y=0, x=1 -> prior 7
    assert preds.box[0, 5].tolist() == [12.0, 112.0, 212.0, 312.0]
    assert preds.obj[0, 5].item() == 412.0 and preds.cls[0, 5].tolist() == [512.0, 612.0]
    assert preds.cls[0, 7].tolist() == [1501.0, 1601.0] and preds.num_level_priors == [6, 2]
    torch.testing.assert_close(preds.priors[7], torch.tensor([-40.0, -56.0, 88.0, 72.0]))  # 8 * 16 square at (24, 8)


def test_bias_init_yolov8_and_prior_prob():
    head = yolov8_like(num_classes=4)
    head.bind([8, 8, 8])
    for level, stride in enumerate([8, 16, 32]):
        assert torch.equal(head.box_preds[level].bias, torch.ones(64))
        expected = math.log(5 / 4 / (640 / stride) ** 2)
        assert torch.allclose(head.cls_preds[level].bias, torch.full((4,), expected))
    yolox = DecoupledHead(4, [8, 8, 8], prior_generator=PointGenerator([8, 16, 32]), coder=YOLOXCoder(),
                          objectness=True, prior_prob=0.02)
    assert torch.allclose(torch.sigmoid(yolox.cls_preds[2].bias), torch.full((4,), 0.02))
    assert torch.allclose(torch.sigmoid(yolox.obj_preds[0].bias), torch.full((1,), 0.02))
    assert yolox.cls_convs[0][0].bn.eps == 1e-5
    tuned = yolov8_like(norm_eps=1e-3, norm_momentum=0.03)
    tuned.bind([8, 8, 8])
    assert {(m.eps, m.momentum) for m in tuned.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {(1e-3, 0.03)}


def test_decoupled_head_argument_errors():
    with pytest.raises(ValueError, match="one point prior"):
        DecoupledHead(3, prior_generator=YOLOAnchorGenerator(), coder=DistanceCoder())
    with pytest.raises(ValueError, match="bias_init"):
        DecoupledHead(3, prior_generator=PointGenerator([8, 16, 32]), coder=DistanceCoder(), bias_init="zeros")
    with pytest.raises(ValueError, match="num_convs"):
        yolov8_like(num_convs=0)
    with pytest.raises(ValueError, match="cls_channels"):
        yolov8_like(cls_channels=[8, 8]).bind([8, 8, 8])


def test_dfl_head_decodes_the_integral_and_exports_class_probabilities():
    head = DecoupledHead(2, [4], prior_generator=PointGenerator([8]), coder=DFLCoder(4))
    raw = [torch.zeros(1, 16 + 2, 1, 1)]  # uniform bins: 1.5 strides per side; class logits 0
    boxes, scores = head.decode_outputs(raw)
    assert boxes.tolist() == [[[-8.0, -8.0, 16.0, 16.0]]] and scores.tolist() == [[[0.5, 0.5]]]


# ----- the loss pipeline without objectness ------------------------------------------------


def one_level_points(coder):
    """2x2 grid at stride 8, point priors of side 8 (priors are the cells)."""
    priors, strides, counts = PointGenerator([8], scale=1.0).grid_priors([(2, 2)])
    return priors, strides, counts


def decoupled_preds(box, cls, coder, obj=None):
    priors, strides, counts = one_level_points(coder)
    return DensePredictions(box=box, cls=cls, obj=obj, priors=priors, strides=strides,
                            num_level_priors=counts, coder=coder)


GT = [2.0, 0.0, 10.0, 12.0]  # holds prior 0's centre (4, 4) only; label 1


def test_iou_targets_cover_every_prior_and_weight_the_box_loss():
    box = torch.ones(1, 4, 4, requires_grad=True)  # 1 stride per side: prior 0 -> [-4, -4, 12, 12], IoU 96 / 256
    cls = torch.zeros(1, 4, 2)
    cls[0, 0, 1] = 2.0
    cls.requires_grad_()
    p = YOLOLossPipeline(assigner=CentreInBoxAssigner(), cls_target="iou", box_weight="cls_target",
                         loss_box=IoULoss(mode="iou"), loss_weights=dict(cls=1.0, box=1.0))
    out = p(decoupled_preds(box, cls, DistanceCoder()), make_batch([[GT]], [[1]], [[True]]))
    assert "loss_obj" not in out
    t = 0.375
    # Every prior's every class: 7 at logit 0 (target 0: log 2 each) + the positive's class at logit 2
    # against t, divided by max(sum of targets, 1) = 1.
    assert out["loss_cls"].item() == pytest.approx(7 * math.log(2) + softplus(2.0) - 2.0 * t, rel=1e-6)
    assert out["loss_box"].item() == pytest.approx(t * (1 - t), rel=1e-6)  # weighted by t, divided by 1
    (out["loss_cls"] + out["loss_box"]).backward()
    assert cls.grad[0, 3].abs().sum() > 0  # negatives learn 0
    assert box.grad[0, 1:].abs().sum() == 0 and box.grad[0, 0].abs().sum() > 0


def test_onehot_targets_normalise_by_their_sum_and_crowd_priors_leave_classification():
    cls = torch.zeros(2, 4, 2, requires_grad=True)
    batch = make_batch([[GT, [8.0, 8.0, 16.0, 16.0]], [[0.0] * 4, [0.0] * 4]], [[1, 0], [0, 0]],
                       [[True, True], [False, False]],
                       ignore_boxes=[[[0.0] * 4], [[8.0, 8.0, 16.0, 16.0]]], ignore_mask=[[False], [True]])
    p = YOLOLossPipeline(assigner=CentreInBoxAssigner(), loss_weights=dict(cls=1.0, box=1.0))
    out = p(decoupled_preds(torch.ones(2, 4, 4), cls, DistanceCoder()), batch)
    # Image 0: priors 0 and 3 positive (two GTs); image 1: prior 3 inside the crowd box is ignored.
    # 8 + 6 elements at logit 0 (log 2 each) over 2 targets of 1.
    assert out["loss_cls"].item() == pytest.approx(14 * math.log(2) / 2, rel=1e-6)
    out["loss_cls"].backward()
    assert cls.grad[1, 3].abs().sum() == 0 and cls.grad[1, 2].abs().sum() > 0


@dataclass
class ScoredResult:
    gt_index: torch.Tensor
    pos_mask: torch.Tensor
    ignore_mask: torch.Tensor
    labels: torch.Tensor
    iou: torch.Tensor
    score_target: torch.Tensor | None


class ScoredAssigner(CentreInBoxAssigner):
    """The stand-in with a soft target of 0.5 for each positive (as TAL / DSL set one)."""

    score_target = True  # declared, as the rules that set one do (box-only stand-ins are taken to set none)

    def __init__(self, with_score=True):
        super().__init__()
        self.with_score = with_score

    def assign(self, *args, **kwargs):
        r = super().assign(*args, **kwargs)
        score = torch.where(r.pos_mask, 0.5, 0.0) if self.with_score else None
        return ScoredResult(r.gt_index, r.pos_mask, r.ignore_mask, r.labels, r.iou, score)


def test_assigner_targets_and_dfl():
    box = torch.zeros(1, 4, 16, requires_grad=True)  # DFLCoder(4): uniform bins, 1.5 strides per side
    cls = torch.zeros(1, 4, 2, requires_grad=True)
    p = YOLOLossPipeline(assigner=ScoredAssigner(), cls_target="assigner", box_weight="cls_target",
                         loss_box=IoULoss(mode="iou"), loss_dfl=DistributionFocalLoss(),
                         loss_weights=dict(cls=1.0, box=1.0, dfl=2.0))
    out = p(decoupled_preds(box, cls, DFLCoder(4)), make_batch([[GT]], [[1]], [[True]]))
    assert out["loss_cls"].item() == pytest.approx(8 * math.log(2), rel=1e-6)  # logits 0: log 2 whatever the target
    iou = 96 / 576  # [-8, -8, 16, 16] against the GT
    assert out["loss_box"].item() == pytest.approx(0.5 * (1 - iou), rel=1e-6)
    # DFL: uniform bins give log 4 per side, mean over sides, weighted 0.5, divided by max(0.5, 1).
    assert out["loss_dfl"].item() == pytest.approx(2.0 * 0.5 * math.log(4), rel=1e-6)
    out["loss_dfl"].backward()
    assert box.grad[0, 0].abs().sum() > 0 and box.grad[0, 1:].abs().sum() == 0
    with pytest.raises(ValueError, match="score_target"):
        YOLOLossPipeline(assigner=ScoredAssigner(with_score=False), cls_target="assigner")(
            decoupled_preds(box, cls, DFLCoder(4)), make_batch([[GT]], [[1]], [[True]]))


def test_dfl_needs_a_distribution_coder_and_l1_needs_four_parameters():
    p = YOLOLossPipeline(assigner=CentreInBoxAssigner(), loss_dfl=DistributionFocalLoss())
    with pytest.raises(ValueError, match="DFLCoder"):
        p(decoupled_preds(torch.ones(1, 4, 4), torch.zeros(1, 4, 2), DistanceCoder()),
          make_batch([[GT]], [[1]], [[True]]))
    p = YOLOLossPipeline(assigner=CentreInBoxAssigner(), loss_reg=L1Loss())
    with pytest.raises(ValueError, match="4 box parameters"):
        p(decoupled_preds(torch.zeros(1, 4, 16), torch.zeros(1, 4, 2), DFLCoder(4)),
          make_batch([[GT]], [[1]], [[True]]))


def test_yolox_objectness_normalised_by_positives_and_l1_only_in_the_last_epochs():
    coder = YOLOXCoder()
    obj = torch.zeros(1, 4, requires_grad=True)
    p = YOLOLossPipeline(assigner=CentreInBoxAssigner(), obj_target="one", obj_normalize="num_pos",
                         loss_reg=L1Loss(), reg_last_epochs=15, loss_weights=dict(cls=1.0, obj=1.0, reg=1.0))
    preds = decoupled_preds(torch.zeros(1, 4, 4, requires_grad=True), torch.zeros(1, 4, 2), coder, obj=obj)
    batch = make_batch([[GT]], [[1]], [[True]])
    out = p(preds, batch)
    # 4 priors at logit 0, one positive: (4 log 2 - 0) summed over priors / 1 positive.
    assert out["loss_obj"].item() == pytest.approx(4 * math.log(2), rel=1e-6)
    assert out["loss_cls"].item() == pytest.approx(2 * math.log(2), rel=1e-6)  # positives only with objectness
    assert out["loss_reg"].item() == 0.0 and out["loss_reg"].requires_grad  # off before the last 15 epochs
    p.set_epoch(84, 100)
    assert p(preds, batch)["loss_reg"].item() == 0.0
    p.set_epoch(85, 100)
    # L1 target of GT centre (6, 6), size (8, 12) from cell (0, 0): (0.75, 0.75, log 1, log 1.5).
    assert p(preds, batch)["loss_reg"].item() == pytest.approx(1.5 + math.log(1.5), rel=1e-6)


# ----- YOLOv10's one-to-one branch -------------------------------------------------------


def yolov10_like(**kw):
    from detkit.assigners import TaskAlignedAssigner

    def pipeline(topk):
        return YOLOLossPipeline(assigner=TaskAlignedAssigner(topk=topk, alpha=0.5, beta=6.0), cls_target="assigner",
                                box_weight="cls_target", loss_dfl=DistributionFocalLoss())

    return DecoupledHead(3, [8, 16], prior_generator=PointGenerator([8, 16]), coder=DFLCoder(4), bias_init="yolov8",
                         loss=pipeline(10), one2one=True, one2one_loss=pipeline(1), **kw)


def test_one2one_branch_layout_defaults_and_detached_features():
    head = yolov10_like()
    assert head.branches == ("one2many", "one2one") and head.branch == "one2one" and head.test_cfg["nms"] is False
    assert head.out_channels == [2 * (16 + 3)] * 2
    main = sum(p.numel() for m in (head.cls_convs, head.box_convs, head.cls_preds, head.box_preds)
               for p in m.parameters())
    assert sum(p.numel() for p in head.one2one_branch.parameters()) == main
    feats = [torch.randn(2, 8, 4, 4, requires_grad=True), torch.randn(2, 16, 2, 2, requires_grad=True)]
    raw = head(feats)
    o2m, o2o = head.flatten(raw, "one2many"), head.flatten(raw, "one2one")
    assert o2m.cls.shape == o2o.cls.shape == (2, 20, 3)
    torch.testing.assert_close(o2o.cls[:, :16], raw[0][:, 16 + 3:].flatten(2).transpose(1, 2)[..., 16:])
    o2o.cls.sum().backward()  # the one-to-one branch learns on detached features
    assert not feats[0].grad.any() and not feats[1].grad.any()
    assert head.one2one_branch["cls_preds"][0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="no 'one2one' branch"):
        yolov8_like().flatten(raw, "one2one")
    with pytest.raises(ValueError, match="one2one=True"):
        DecoupledHead(3, prior_generator=PointGenerator([8]), coder=DFLCoder(4), one2one_loss=YOLOLossPipeline(
            assigner=CentreInBoxAssigner()))


def test_one2one_loss_keys_and_topk_one():
    head = yolov10_like()
    batch = make_batch([[[2.0, 2.0, 30.0, 26.0]]], [[2]], [[True]])
    out = head.loss(head([torch.randn(1, 8, 4, 4), torch.randn(1, 16, 2, 2)]), batch)
    assert {k for k in out if k.startswith("loss_")} == {"loss_cls", "loss_box", "loss_dfl", "loss_o2o_cls",
                                                          "loss_o2o_box", "loss_o2o_dfl"}
    assert out["stat_o2o_pos_per_gt"].item() == 1.0  # topk = 1: one positive per GT
    assert out["stat_pos_per_gt"].item() > 1.0


def test_predict_without_nms_keeps_duplicates_and_branch_override():
    head = yolov10_like()
    head.eval()
    raw = [torch.full((1, 38, 4, 4), -8.0), torch.full((1, 38, 2, 2), -8.0)]
    for start in (0, 19):  # the same confident class-1 prediction at priors 0 and 1 of both branches
        raw[0][0, start + 16 + 1, 0, :2] = 6.0
        raw[0][0, start:start + 16, 0, :2] = 0.0  # uniform bins: the same 1.5-stride box around each centre
    dets = head.predict(raw, score_thr=0.5)[0]  # one-to-one branch, no NMS: both kept
    assert dets["labels"].tolist() == [1, 1]
    # The two 24 px boxes 8 px apart overlap with IoU 0.5: NMS at 0.4 keeps one.
    nms = head.predict(raw, score_thr=0.5, branch="one2many", nms=True, nms_iou_thr=0.4)[0]
    assert nms["labels"].tolist() == [1]
    with pytest.raises(ValueError, match="unknown post-processing"):
        head.predict(raw, nms_thr=0.5)


@pytest.mark.parametrize("kind", ["yolov8", "yolox", "yolov10_pruned"])
def test_channel_first_decode_from_features_is_the_transposed_default(kind):
    """decode_channels (the exported graph: box and class maps kept apart, decoded channel-first) holds
    decode_outputs' values, transposed: DFL, objectness, and a one-to-one inference copy without its
    one-to-many layers."""
    from detkit.models.fuse import fused_copy

    torch.manual_seed(0)
    levels = ((16, 8), (32, 4), (64, 2))  # (channels, side) per level
    if kind == "yolox":
        head = DecoupledHead(3, prior_generator=PointGenerator([8, 16, 32]), coder=YOLOXCoder(), objectness=True,
                             stem_channels=16)
        head.bind([c for c, _ in levels])
    elif kind == "yolov8":
        head = yolov8_like()
        head.bind([c for c, _ in levels])
    else:
        levels = ((8, 8), (16, 4))
        head = yolov10_like()
        head.branch = "one2one"
        head = fused_copy(head)
        assert head.dropped_branches == ("one2many",)
    head.eval()
    feats = [torch.randn(2, c, side, side + 2) for c, side in levels]
    with torch.no_grad():
        boxes, scores = head.decode_outputs(head(feats))
        cf_boxes, cf_scores = head.decode_channels(feats)
    n = sum(side * (side + 2) for _, side in levels)
    assert cf_boxes.shape == (2, 4, n) and cf_scores.shape == (2, 3, n)
    torch.testing.assert_close(cf_boxes, boxes.transpose(1, 2), rtol=0, atol=1e-4)
    torch.testing.assert_close(cf_scores, scores.transpose(1, 2), rtol=0, atol=0)


def test_class_scores_channel_first_hand_computed():
    from detkit.models.postprocess import class_scores

    cls = torch.tensor([[[0.0, math.log(3.0)], [math.log(3.0), 0.0]]])  # (B=1, C=2, N=2)
    obj = torch.tensor([[math.log(3.0), 0.0]])  # (B, N): 0.75, 0.5
    torch.testing.assert_close(class_scores(cls, obj, class_dim=1), torch.tensor([[[0.375, 0.375], [0.5625, 0.25]]]))
    torch.testing.assert_close(class_scores(cls.transpose(1, 2), obj), torch.tensor([[[0.375, 0.5625], [0.375, 0.25]]]))
