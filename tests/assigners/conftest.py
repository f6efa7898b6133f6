"""Shared builders for the assigner tests: a tiny anchor grid, random GT batches, predictions."""

from __future__ import annotations

import pytest
import torch

from detkit.anchors import PriorGrid, YOLOAnchorGenerator
from detkit.assigners import (
    ATSSAssigner,
    DynamicSoftLabelAssigner,
    FCOSAssigner,
    GridAssigner,
    MaxIoUAssigner,
    SimOTAAssigner,
    TaskAlignedAssigner,
    YOLOv5Assigner,
)

IMAGE = 64  # tiny input: strides 8 / 16 / 32 -> 8x8, 4x4, 2x2 cells
ANCHORS = [[(6, 8), (12, 10)], [(14, 26), (28, 20)], [(36, 30), (60, 56)]]

FACTORIES = {
    "maxiou": lambda **kw: MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4, **kw),
    "atss": lambda **kw: ATSSAssigner(topk=3, **kw),
    "grid": lambda **kw: GridAssigner(ignore_iou_thr=0.5, **kw),
    "simota": lambda **kw: SimOTAAssigner(**kw),
    "tal": lambda **kw: TaskAlignedAssigner(topk=4, **kw),
    "tal_v8": lambda **kw: TaskAlignedAssigner(topk=4, resolve="in_gts", **kw),
    "tal_ultralytics": lambda **kw: TaskAlignedAssigner(topk=4, alpha=0.5, iou_mode="ciou", resolve="all_gts",
                                                        center_min_side=16.0, keep_zero_metric=True, **kw),
    "yolov5": lambda **kw: YOLOv5Assigner(**kw),
    "fcos": lambda **kw: FCOSAssigner(scale_ranges=[(-1, 16), (16, 32), (32, 1e8)], **kw),
    "dsl": lambda **kw: DynamicSoftLabelAssigner(**kw),
    "dsl_mmyolo": lambda **kw: DynamicSoftLabelAssigner(cls_cost="gt_class", candidates_only=False, **kw),
}
PRED_AWARE = ("SimOTAAssigner", "TaskAlignedAssigner", "DynamicSoftLabelAssigner")
ORDER_DEPENDENT = ("grid", "yolov5")  # the later GT in the list wins a shared prior, by design


@pytest.fixture(params=sorted(FACTORIES))
def factory(request):
    """One assigner factory per test run; call it with extra keyword arguments."""
    return FACTORIES[request.param]


@pytest.fixture(scope="session")
def grid():
    """``(priors (N, 4), prior_strides (N,), num_level_priors)`` of a 64 px input, 2 anchors/cell."""
    gen = YOLOAnchorGenerator(base_sizes=ANCHORS, strides=[8, 16, 32])
    return gen.grid_priors([(8, 8), (4, 4), (2, 2)], "cpu")


def random_batch(seed: int, batch: int = 3, num_gts: int = 5, num_classes: int = 4, num_priors: int = 168,
                 pad_from: int | None = None) -> dict:
    """Random GTs (a few padding rows from ``pad_from``) and predictions for ``num_priors`` priors."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(batch, num_gts, 2, generator=g) * 56
    wh = torch.rand(batch, num_gts, 2, generator=g) * 40 + 3
    gt_boxes = torch.cat([xy, xy + wh], -1)
    gt_labels = torch.randint(0, num_classes, (batch, num_gts), generator=g)
    gt_mask = torch.ones(batch, num_gts, dtype=torch.bool)
    if pad_from is not None:
        gt_mask[:, pad_from:] = False
    pxy = torch.rand(batch, num_priors, 2, generator=g) * 60
    pwh = torch.rand(batch, num_priors, 2, generator=g) * 30 + 1
    pred_boxes = torch.cat([pxy, pxy + pwh], -1)
    pred_scores = torch.rand(batch, num_priors, num_classes, generator=g)
    return dict(gt_boxes=gt_boxes, gt_labels=gt_labels, gt_mask=gt_mask, pred_boxes=pred_boxes,
                pred_scores=pred_scores)


def run(assigner, grid, data: dict):
    """Call ``assigner.assign`` with every optional input on the grid's bare boxes (the all-pairs table); a rule
    that refuses bare priors (grid, YOLOv5: cell arithmetic, a ValueError naming the PriorGrid) gets the grid."""
    priors, strides, counts = grid
    args = (data["gt_boxes"], data["gt_labels"], data["gt_mask"])
    kw = dict(num_level_priors=counts, prior_strides=strides, pred_boxes=data.get("pred_boxes"),
              pred_scores=data.get("pred_scores"))
    try:
        return assigner.assign(priors, *args, **kw)
    except ValueError as e:
        if not isinstance(grid, PriorGrid) or "PriorGrid" not in str(e):
            raise
        return assigner.assign(grid, *args, **kw)


FIELDS = ("gt_index", "pos_mask", "ignore_mask", "labels", "iou", "align_metric", "score_target")


def assert_same(a, b) -> None:
    """Bit-identical results, field by field."""
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype, name
            assert torch.equal(x, y), name
