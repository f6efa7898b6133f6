"""Independent, slow, loop-based implementations of the YOLOv5, FCOS and dynamic-soft-label rules,
written from their docstrings in plain Python floats, compared with the batched assigners on
random cases (continuous random boxes make exact ties events of probability zero)."""

from __future__ import annotations

import math

import pytest
import torch

from detkit.anchors import PointGenerator, YOLOAnchorGenerator
from detkit.assigners import DynamicSoftLabelAssigner, FCOSAssigner, YOLOv5Assigner

SIZE = 96
STRIDES = [8, 16, 32]
FEATS = [(SIZE // s, SIZE // s) for s in STRIDES]
ANCHORS = [[(10, 13), (16, 30), (33, 23)], [(30, 61), (62, 45), (59, 119)], [(116, 90), (156, 198), (373, 326)]]
NUM_CLASSES = 3


def random_gts(seed: int, batch: int = 2, num_gts: int = 7):
    """GT sides log-uniform 1..150 px, centres a little past the image; a padding row per image."""
    g = torch.Generator().manual_seed(seed)
    side = torch.exp(torch.rand(batch, num_gts, 2, generator=g) * math.log(150))
    centre = torch.rand(batch, num_gts, 2, generator=g) * (SIZE + 20) - 10
    boxes = torch.cat([centre - side / 2, centre + side / 2], -1)
    mask = torch.rand(batch, num_gts, generator=g) > 0.15
    labels = torch.randint(0, NUM_CLASSES, (batch, num_gts), generator=g)
    return boxes, labels, mask, g


def valid_gts(boxes, mask, b):
    return [(j, boxes[b, j].tolist()) for j in range(boxes.shape[1]) if mask[b, j]]


def centre(box):
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


# -- YOLOv5 --------------------------------------------------------------------------------------


def ref_yolov5(gts, anchor_t=4.0, offset=0.5):
    claims: dict[int, tuple[int, int]] = {}
    start = 0
    for (h, w), stride, anchors in zip(FEATS, STRIDES, ANCHORS):
        for j, g in gts:
            gx, gy = (g[0] + g[2]) / 2 / stride, (g[1] + g[3]) / 2 / stride
            cells = [(0, gx, gy)]
            if gx % 1 < offset and gx > 1:
                cells.append((1, gx - offset, gy))
            if gy % 1 < offset and gy > 1:
                cells.append((2, gx, gy - offset))
            if (w - gx) % 1 < offset and w - gx > 1:
                cells.append((3, gx + offset, gy))
            if (h - gy) % 1 < offset and h - gy > 1:
                cells.append((4, gx, gy + offset))
            for a, (aw, ah) in enumerate(anchors):
                rw, rh = (g[2] - g[0]) / aw, (g[3] - g[1]) / ah
                if max(rw, 1 / rw, rh, 1 / rh) >= anchor_t:
                    continue
                for direction, x, y in cells:
                    cx, cy = min(max(math.floor(x), 0), w - 1), min(max(math.floor(y), 0), h - 1)
                    prior = start + (cy * w + cx) * len(anchors) + a
                    claims[prior] = max(claims.get(prior, (-1, -1)), (direction, j))
        start += h * w * len(anchors)
    return [claims.get(i, (-1, -1))[1] for i in range(start)]


@pytest.mark.parametrize("seed", range(8))
def test_yolov5_matches_reference(seed):
    grid = YOLOAnchorGenerator(ANCHORS, STRIDES).grid_priors(FEATS)
    boxes, labels, mask, _ = random_gts(seed)
    res = YOLOv5Assigner().assign(grid, boxes, labels, mask)
    for b in range(boxes.shape[0]):
        assert res.gt_index[b].tolist() == ref_yolov5(valid_gts(boxes, mask, b))
    assert res.num_pos > 0


# -- FCOS ----------------------------------------------------------------------------------------


def ref_fcos(prior_centres, prior_strides, levels, gts, radius, ranges):
    out = []
    for (x, y), stride, level in zip(prior_centres, prior_strides, levels):
        best = (math.inf, -1)
        for j, g in gts:
            reach = max(x - g[0], y - g[1], g[2] - x, g[3] - y)
            region = list(g)
            if radius is not None:
                cx, cy = centre(g)
                r = radius * stride
                region = [max(cx - r, g[0]), max(cy - r, g[1]), min(cx + r, g[2]), min(cy + r, g[3])]
            inside = min(x - region[0], y - region[1], region[2] - x, region[3] - y) > 0
            lo, hi = ranges[level]
            area = (g[2] - g[0]) * (g[3] - g[1])
            if inside and lo <= reach <= hi and area < best[0]:
                best = (area, j)
        out.append(best[1])
    return out


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("radius", [1.5, None])
def test_fcos_matches_reference(seed, radius):
    priors, strides, counts = PointGenerator(STRIDES).grid_priors(FEATS)
    ranges = [(-1, 24), (24, 48), (48, 1e8)]
    boxes, labels, mask, _ = random_gts(seed)
    res = FCOSAssigner(center_sampling_radius=radius, scale_ranges=ranges).assign(
        priors, boxes, labels, mask, num_level_priors=counts, prior_strides=strides)
    centres = ((priors[:, :2] + priors[:, 2:]) / 2).tolist()
    levels = [lv for lv, n in enumerate(counts) for _ in range(n)]
    for b in range(boxes.shape[0]):
        expect = ref_fcos(centres, strides.tolist(), levels, valid_gts(boxes, mask, b), radius, ranges)
        assert res.gt_index[b].tolist() == expect
    assert res.num_pos > 0


# -- dynamic soft labels (RTMDet) ------------------------------------------------------------------


def bce(p: float, t: float) -> float:
    log_p = max(math.log(p), -100.0) if p > 0 else -100.0
    log_q = max(math.log(1 - p), -100.0) if p < 1 else -100.0
    return -(t * log_p + (1 - t) * log_q)


def ref_dsl(prior_centres, prior_strides, preds, scores, gts, labels, topk=13, iou_weight=3.0, radius=3.0):
    n = len(prior_centres)
    inside = [[min(x - g[0], y - g[1], g[2] - x, g[3] - y) > 0 for j, g in gts] for x, y in prior_centres]
    cands = [i for i in range(n) if any(inside[i])]
    costs, ious = {}, {}
    for j, g in gts:
        gx, gy = centre(g)
        for i in cands:
            v = iou(preds[i], g)
            soft = [v if c == labels[j] else 0.0 for c in range(len(scores[i]))]
            cls = sum(bce(p, t) * (t - p) ** 2 for p, t in zip(scores[i], soft))
            d = math.hypot(prior_centres[i][0] - gx, prior_centres[i][1] - gy) / prior_strides[i]
            costs[j, i] = cls + iou_weight * -math.log(v + 1e-7) + 10 ** (d - radius)
            ious[j, i] = v
    taken: dict[int, list[int]] = {}
    for j, _ in gts:
        k = max(1, int(sum(sorted((ious[j, i] for i in cands), reverse=True)[:topk])))
        for i in sorted(cands, key=lambda i: (costs[j, i], i))[:k]:
            taken.setdefault(i, []).append(j)
    out = [-1] * n
    for i, js in taken.items():
        out[i] = js[0] if len(js) == 1 else min((costs[j, i], j) for j, _ in gts)[1]
    return out


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("topk", [3, 13])
def test_dsl_matches_reference(seed, topk):
    priors, strides, counts = PointGenerator(STRIDES).grid_priors(FEATS)
    boxes, labels, mask, g = random_gts(seed)
    n = priors.shape[0]
    centres = (priors[:, :2] + priors[:, 2:]) / 2
    pc = centres + torch.randn(2, n, 2, generator=g) * strides[:, None]
    pwh = strides[:, None] * 3 * torch.exp(torch.randn(2, n, 2, generator=g) * 0.5)
    preds = torch.cat([pc - pwh / 2, pc + pwh / 2], -1)
    scores = torch.rand(2, n, NUM_CLASSES, generator=g)
    res = DynamicSoftLabelAssigner(topk=topk).assign(priors, boxes, labels, mask, num_level_priors=counts,
                                                      prior_strides=strides, pred_boxes=preds, pred_scores=scores)
    for b in range(2):
        expect = ref_dsl(centres.tolist(), strides.tolist(), preds[b].tolist(), scores[b].tolist(),
                         valid_gts(boxes, mask, b), labels[b].tolist(), topk=topk)
        assert res.gt_index[b].tolist() == expect
        pos = res.pos_mask[b]
        gi = res.gt_index[b][pos]
        expect_iou = [iou(p, boxes[b, j].tolist()) for p, j in zip(preds[b][pos].tolist(), gi.tolist())]
        assert res.score_target[b][pos].tolist() == pytest.approx(expect_iou, abs=1e-5)
    assert res.num_pos > 0
