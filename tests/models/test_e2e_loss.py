"""YOLO26's end-to-end recipe in the loss pipeline's terms: the DFL-free L1 box loss on image-normalised ltrb
distances (hand-computed), the dual-branch weights (ProgressiveWeights as Ultralytics' E2ELoss moves them), the
head's weighted total, the trainer driving the weights (a resumed run included), and the YOLO26 head piece."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from detkit.anchors import PointGenerator
from detkit.assigners import TaskAlignedAssigner
from detkit.assigners.presets import build_preset
from detkit.coders import DFLCoder, DistanceCoder
from detkit.config import instantiate, load_config
from detkit.engine.train_utils import EpochSwitches
from detkit.losses import ImageL1Loss, IoULoss, L1Loss
from detkit.models import DecoupledHead, YOLOLossPipeline
from detkit.models.heads.branch_weights import FixedWeights, ProgressiveWeights
from detkit.models.heads.predictions import DensePredictions

from .test_yolo_loss import CentreInBoxAssigner, make_batch

ROOT = Path(__file__).resolve().parents[2]
# One level of 2 x 4 cells at stride 8: a 32 px wide, 16 px high input; prior centres (4 + 8i, 4 + 8j).
GRID = PointGenerator(strides=[8]).grid_priors([(2, 4)])
GT = [2.0, 0.0, 10.0, 12.0]  # holds prior 0's centre (4, 4) only


def preds_of(box, cls, coder=None, grid=GRID):
    return DensePredictions(box=box, cls=cls, obj=None, priors=grid.boxes, strides=grid.strides,
                            num_level_priors=grid.num_level_priors, coder=coder or DistanceCoder(), grid=grid)


class CentreIn(CentreInBoxAssigner):
    """The stand-in (a prior is positive to the first GT holding its centre), on a PriorGrid too."""

    def assign(self, priors, *args, **kwargs):
        return super().assign(getattr(priors, "boxes", priors), *args, **kwargs)


class HalfScore(CentreIn):
    """The stand-in with a soft target of 0.5 on each positive."""

    score_target = True

    def assign(self, *args, **kwargs):
        r = super().assign(*args, **kwargs)
        r.score_target = torch.where(r.pos_mask, 0.5, 0.0)
        return r


def l1_box():
    box = torch.zeros(1, 8, 4)
    box[0, 0] = torch.tensor([1.0, 0.5, 2.0, 1.0])  # strides: (8, 4, 16, 8) px from the centre (4, 4)
    return box.requires_grad_()


def test_image_l1_by_hand():
    # pred ltrb / (W, H, W, H) = (8/32, 4/16, 16/32, 8/16) = (.25, .25, .5, .5); target: GT sides from (4, 4):
    # (2, 4, 6, 8) px -> (.0625, .25, .1875, .5); |diff| = (.1875, 0, .3125, 0), mean 0.125.
    box = l1_box()
    p = YOLOLossPipeline(assigner=CentreIn(), loss_reg=ImageL1Loss(), loss_weights=dict(reg=1.5))
    out = p(preds_of(box, torch.zeros(1, 8, 2)), make_batch([[GT]], [[1]], [[True]]))
    assert out["loss_reg"].item() == pytest.approx(1.5 * 0.125, rel=1e-6)
    out["loss_reg"].backward()
    # d/d(box) of 1.5 * mean |.|: sign * stride / size / 4 on the positive's l and r, 0 where pred == target
    expected = torch.tensor([1.5 * 8 / 32 / 4, 0.0, 1.5 * 8 / 32 / 4, 0.0])
    torch.testing.assert_close(box.grad[0, 0], expected)
    assert box.grad[0, 1:].abs().sum() == 0


def test_image_l1_weighted_by_the_target_score():
    # box_weight="cls_target": 0.5 * 0.125 over max(sum of targets 0.5, 1) = 0.0625
    p = YOLOLossPipeline(assigner=HalfScore(), loss_reg=ImageL1Loss(), cls_target="assigner",
                         box_weight="cls_target", loss_weights=dict(reg=1.0))
    out = p(preds_of(l1_box(), torch.zeros(1, 8, 2)), make_batch([[GT]], [[1]], [[True]]))
    assert out["loss_reg"].item() == pytest.approx(0.0625, rel=1e-6)
    gt2 = [[GT, [18.0, 0.0, 22.0, 8.0]]]  # prior 2 (20, 4) too: pred 0 px against target (2, 4, 2, 4) px
    out = p(preds_of(l1_box(), torch.zeros(1, 8, 2)), make_batch(gt2, [[1, 0]], [[True, True]]))
    second = (2 / 32 + 4 / 16 + 2 / 32 + 4 / 16) / 4
    assert out["loss_reg"].item() == pytest.approx(0.5 * (0.125 + second) / 1.0, rel=1e-6)  # targets sum to 1


def test_image_l1_reads_any_coder_and_needs_the_grid():
    box = torch.zeros(1, 8, 16)  # DFLCoder(4), uniform bins: 1.5 strides = 12 px per side
    p = YOLOLossPipeline(assigner=CentreIn(), loss_reg=ImageL1Loss(), loss_weights=dict(reg=1.0))
    out = p(preds_of(box, torch.zeros(1, 8, 2), DFLCoder(4)), make_batch([[GT]], [[1]], [[True]]))
    expected = (abs(12 - 2) / 32 + abs(12 - 4) / 16 + abs(12 - 6) / 32 + abs(12 - 8) / 16) / 4
    assert out["loss_reg"].item() == pytest.approx(expected, rel=1e-6)
    bare = DensePredictions(box=l1_box(), cls=torch.zeros(1, 8, 2), obj=None, priors=GRID.boxes,
                            strides=GRID.strides, num_level_priors=[8], coder=DistanceCoder())
    with pytest.raises(ValueError, match="PriorGrid"):
        p(bare, make_batch([[GT]], [[1]], [[True]]))
    assert ImageL1Loss().input_space == L1Loss(input_space="image_ltrb").input_space == "image_ltrb"


def test_image_l1_equals_ultralytics_bbox_loss_formula_on_random_positives():
    # Ultralytics' BboxLoss at reg_max=1, written out: pred_dist (strides) * stride / (W, H, W, H) against
    # bbox2dist(anchor, target / stride) * stride / (W, H, W, H), mean over 4, times the score, / score sum.
    g = torch.Generator().manual_seed(0)
    grid = PointGenerator(strides=[8, 16]).grid_priors([(4, 6), (2, 3)])  # 48 x 32 px
    n = grid.num_priors
    box = (torch.rand(2, n, 4, generator=g) * 3).requires_grad_()
    gts = torch.tensor([[[0.0, 0.0, 40.0, 30.0]], [[10.0, 4.0, 30.0, 20.0]]])
    p = YOLOLossPipeline(assigner=HalfScore(), loss_reg=ImageL1Loss(), cls_target="assigner",
                         box_weight="cls_target", loss_weights=dict(reg=1.0))
    out = p(preds_of(box, torch.zeros(2, n, 2), grid=grid), make_batch(gts.tolist(), [[0], [1]], [[True], [True]]))
    centres, strides = grid.centres, grid.strides[:, None]
    pos = torch.zeros(2, n, dtype=torch.bool)
    for b in range(2):
        x1, y1, x2, y2 = gts[b, 0]
        pos[b] = (centres[:, 0] > x1) & (centres[:, 0] < x2) & (centres[:, 1] > y1) & (centres[:, 1] < y2)
    size = torch.tensor([48.0, 32.0, 48.0, 32.0])
    target = torch.cat([centres - gts[:, :, :2], gts[:, :, 2:] - centres], -1) / size  # (2, N, 4)
    per = ((box.detach() * strides / size - target).abs().mean(-1) * 0.5)[pos].sum()
    assert out["loss_reg"].item() == pytest.approx(float(per / max(0.5 * pos.sum().item(), 1.0)), rel=1e-5)


# ----- branch weights ----------------------------------------------------------------------


@pytest.mark.parametrize("epoch, epochs, o2m", [(0, 10, 0.8), (1, 10, 0.8 - 0.7 / 9), (9, 10, 0.1), (12, 10, 0.1),
                                                (0, 1, 0.8), (0, 2, 0.8), (1, 2, 0.1)])
def test_progressive_weights(epoch, epochs, o2m):
    w = ProgressiveWeights(start=0.8, end=0.1)(epoch, epochs)
    assert w[0] == pytest.approx(o2m, abs=1e-12) and w[1] == pytest.approx(1 - o2m, abs=1e-12)


def test_progressive_weights_as_ultralytics_e2e_loss_moves_them():
    # E2ELoss: o2m 0.8 before any update, then decay(updates) after each epoch's update()
    epochs, start, end = 7, 0.8, 0.1
    expected = [start] + [max(1 - u / max(epochs - 1, 1), 0) * (start - end) + end for u in range(1, epochs)]
    assert [ProgressiveWeights()(e, epochs)[0] for e in range(epochs)] == expected
    assert ProgressiveWeights()(0, epochs) == (0.8, 1.0 - 0.8)
    assert FixedWeights()(5, 7) == (1.0, 1.0)
    with pytest.raises(ValueError, match="start and end"):
        ProgressiveWeights(start=1.5)
    with pytest.raises(ValueError, match="one2one"):
        FixedWeights(one2one=-1)


def dual_head(branch_weights=None, seed=0):
    def pipeline(**kw):
        return YOLOLossPipeline(assigner=TaskAlignedAssigner(alpha=0.5, beta=6.0, iou_mode="ciou", resolve="all_gts",
                                                             keep_zero_metric=True, **kw),
                                loss_box=IoULoss(mode="ciou"), loss_reg=ImageL1Loss(), cls_target="assigner",
                                box_weight="cls_target", loss_weights=dict(cls=0.5, box=7.5, reg=1.5))

    torch.manual_seed(seed)
    return DecoupledHead(3, [8, 16], prior_generator=PointGenerator([8, 16]), coder=DistanceCoder(),
                         bias_init="yolov8", loss=pipeline(topk=10), one2one=True,
                         one2one_loss=pipeline(topk=7, topk2=1), branch_weights=branch_weights)


def test_weighted_total_is_w_o2m_plus_w_o2o():
    feats = [torch.randn(2, 8, 4, 4), torch.randn(2, 16, 2, 2)]
    batch = make_batch([[[2.0, 2.0, 30.0, 26.0], [0, 0, 0, 0]], [[4.0, 6.0, 20.0, 30.0], [1.0, 1.0, 9.0, 9.0]]],
                       [[2, 0], [1, 0]], [[True, False], [True, True]])
    plain, weighted = dual_head(), dual_head(ProgressiveWeights(start=0.8, end=0.1))
    weighted.load_state_dict(plain.state_dict())
    ref = plain.loss(plain(feats), batch)
    assert ref["stat_w_o2m"].item() == ref["stat_w_o2o"].item() == 1.0
    weighted.set_epoch(3, 10)
    w = 0.8 - 3 * 0.7 / 9
    out = weighted.loss(weighted(feats), batch)
    assert out["stat_w_o2m"].item() == pytest.approx(w) and out["stat_w_o2o"].item() == pytest.approx(1 - w)
    o2m = sum(v for k, v in ref.items() if k.startswith("loss_") and not k.startswith("loss_o2o_"))
    o2o = sum(v for k, v in ref.items() if k.startswith("loss_o2o_"))
    total = sum(v for k, v in out.items() if k.startswith("loss_"))
    assert total.item() == pytest.approx((w * o2m + (1 - w) * o2o).item(), rel=1e-6)
    for k in ("loss_reg", "loss_o2o_reg", "loss_cls", "loss_o2o_box"):
        assert k in out
    assert out["stat_o2o_pos_per_gt"].item() == 1.0  # top 7 then top 1


def test_branch_weights_need_the_one_to_one_loss():
    with pytest.raises(ValueError, match="one2one_loss"):
        DecoupledHead(3, [8], prior_generator=PointGenerator([8]), coder=DistanceCoder(),
                      branch_weights=ProgressiveWeights())


def test_the_trainer_hook_sets_the_weights_and_a_resumed_run_gets_the_same():
    class Detector:
        def __init__(self):
            self.head = dual_head(ProgressiveWeights())

    run = Detector()
    switches = EpochSwitches([], no_mosaic_last_epochs=0, epochs=5)
    seen = []
    for epoch in range(5):
        switches.apply(epoch, run, dataset=None)
        seen.append(run.head.loss_weights_now)
    assert [w[0] for w in seen] == pytest.approx([0.8, 0.625, 0.45, 0.275, 0.1])
    for epoch in (1, 3):  # a fresh run object resuming at a later epoch
        resumed = Detector()
        EpochSwitches([], no_mosaic_last_epochs=0, epochs=5).apply(epoch, resumed, dataset=None)
        assert resumed.head.loss_weights_now == seen[epoch]


# ----- the YOLO26 head piece ---------------------------------------------------------------


def test_yolo26_head_piece():
    cfg = load_config(str(ROOT / "configs" / "common" / "heads" / "yolo26.py"))
    head = cfg.model.head
    o2m, o2o = instantiate(head.loss), instantiate(head.one2one_loss)
    assert repr(instantiate(o2o.assigner)) == repr(build_preset("tal-e2e-ultralytics"))
    assert repr(instantiate(o2m.assigner)) == repr(build_preset("tal-ultralytics"))
    for p in (o2m, o2o):
        assert p.loss_dfl is None and isinstance(p.loss_reg, ImageL1Loss)
        assert (p.loss_weights["box"], p.loss_weights["cls"], p.loss_weights["reg"]) == (7.5, 0.5, 1.5)
        assert p.box_weight == "cls_target"
    weights = instantiate(head.branch_weights)
    assert isinstance(weights, ProgressiveWeights) and (weights.start, weights.end) == (0.8, 0.1)
    coder = instantiate(head.coder)
    assert isinstance(coder, DistanceCoder) and coder.normalize and not coder.log_scale
    assert head.one2one and head.max_per_img == 300


@pytest.mark.slow
def test_two_epoch_run_logs_moving_weights(tmp_path):
    from detkit.engine.trainer import Trainer

    cfg = load_config(str(ROOT / "tests" / "engine" / "configs" / "shapes_tiny_e2e.py"))
    Trainer(cfg, work_dir=tmp_path).train()
    weights = {}
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["kind"] == "train" and "stat_w_o2m" in rec:
            weights.setdefault(rec["epoch"], set()).add((rec["stat_w_o2m"], rec["stat_w_o2o"]))
    assert sorted(weights) == [1, 2]  # epochs 1 and 2 of 2: 0.8 / 0.2, then 0.1 / 0.9
    assert all(math.isclose(a, 0.8, rel_tol=1e-6) and math.isclose(b, 0.2, rel_tol=1e-6) for a, b in weights[1])
    assert all(math.isclose(a, 0.1, rel_tol=1e-6) and math.isclose(b, 0.9, rel_tol=1e-6) for a, b in weights[2])
