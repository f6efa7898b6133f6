"""Independent, slow, loop-based implementations of the MaxIoU and ATSS rules, written straight
from docs/design.md in plain Python floats, compared with the batched assigners on random cases.

Random continuous boxes make exact ties (equal IoUs, equal distances) events of probability zero,
so the comparison needs no tie rules.
"""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from detkit.assigners import ATSSAssigner, MaxIoUAssigner


def iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def centre(box):
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


def ref_max_iou(priors, gts, pos_thr, neg_thr, min_pos_iou, low_quality):
    """gts: list of (index, box) of the valid GTs of one image. Returns (gt_index, ignore) lists."""
    gt_index, ignore = [], []
    for p in priors:
        best, best_j = -1.0, -1
        for j, g in gts:
            v = iou(p, g)
            if v > best:
                best, best_j = v, j
        if best_j >= 0 and best >= pos_thr:
            gt_index.append(best_j)
            ignore.append(False)
        else:
            gt_index.append(-1)
            ignore.append(best_j >= 0 and best >= neg_thr)
    if low_quality:
        for j, g in gts:  # in GT order: a later GT overwrites
            best = max(iou(p, g) for p in priors)
            if best > 0 and best >= min_pos_iou:
                for i, p in enumerate(priors):
                    if iou(p, g) == best:
                        gt_index[i], ignore[i] = j, False
    return gt_index, ignore


def ref_atss(priors, counts, gts, topk):
    best = [(-1.0, -1)] * len(priors)
    for j, g in gts:
        gc = centre(g)
        cands, start = [], 0
        for n in counts:
            level = range(start, start + n)
            level = sorted(level, key=lambda i: math.dist(centre(priors[i]), gc))
            cands += level[:min(topk, n)]
            start += n
        ious = [iou(priors[i], g) for i in cands]
        thr = statistics.mean(ious) + (statistics.stdev(ious) if len(ious) > 1 else 0.0)
        for i, v in zip(cands, ious):
            cx, cy = centre(priors[i])
            inside = min(cx - g[0], cy - g[1], g[2] - cx, g[3] - cy) > 0.01
            if v >= thr and inside and v > best[i][0]:
                best[i] = (v, j)
    return [j for _, j in best]


def random_case(seed, num_priors_per_level=(40, 15, 5), num_gts=6):
    g = torch.Generator().manual_seed(seed)
    levels = []
    for n, size in zip(num_priors_per_level, (8.0, 24.0, 60.0)):
        c = torch.rand(n, 2, generator=g) * 100
        wh = (torch.rand(n, 2, generator=g) + 0.5) * size
        levels.append(torch.cat([c - wh / 2, c + wh / 2], -1))
    priors = torch.cat(levels)
    xy = torch.rand(2, num_gts, 2, generator=g) * 90
    wh = torch.rand(2, num_gts, 2, generator=g) * 50 + 4
    gt_boxes = torch.cat([xy, xy + wh], -1)
    gt_mask = torch.rand(2, num_gts, generator=g) > 0.2
    return priors, list(num_priors_per_level), gt_boxes, gt_mask


def valid_gts(gt_boxes, gt_mask, b):
    return [(j, gt_boxes[b, j].tolist()) for j in range(gt_boxes.shape[1]) if gt_mask[b, j]]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("low_quality, min_pos", [(True, 0.0), (True, 0.3), (False, 0.0)])
def test_max_iou_matches_reference(seed, low_quality, min_pos):
    priors, _, gt_boxes, gt_mask = random_case(seed)
    res = MaxIoUAssigner(0.5, 0.3, min_pos_iou=min_pos, match_low_quality=low_quality).assign(
        priors, gt_boxes, torch.zeros(gt_mask.shape, dtype=torch.long), gt_mask)
    for b in range(2):
        gt_index, ignore = ref_max_iou(priors.tolist(), valid_gts(gt_boxes, gt_mask, b), 0.5, 0.3, min_pos,
                                       low_quality)
        assert res.gt_index[b].tolist() == gt_index
        assert res.ignore_mask[b].tolist() == ignore


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("topk", [3, 9, 50])
def test_atss_matches_reference(seed, topk):
    priors, counts, gt_boxes, gt_mask = random_case(seed)
    res = ATSSAssigner(topk=topk).assign(priors, gt_boxes, torch.zeros(gt_mask.shape, dtype=torch.long), gt_mask,
                                         num_level_priors=counts)
    for b in range(2):
        expect = ref_atss(priors.tolist(), counts, valid_gts(gt_boxes, gt_mask, b), topk)
        assert res.gt_index[b].tolist() == expect
    assert res.num_pos > 0


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("topk", [3, 4, 9])
def test_atss_on_an_anchor_grid_matches_reference(seed, topk, grid):
    # Anchors of one location share a centre: distance ties everywhere, settled by prior index
    # (the reference's stable sort) in both implementations; GT centres on cell corners add ties
    # between locations.
    priors, _, counts = grid
    g = torch.Generator().manual_seed(seed)
    corners = torch.randint(1, 8, (2, 5, 2), generator=g).float() * 8
    half = torch.randint(2, 20, (2, 5, 2), generator=g).float()  # integers: centres exact in fp32 and fp64
    gt_boxes = torch.cat([corners - half, corners + half], -1)
    gt_mask = torch.ones(2, 5, dtype=torch.bool)
    res = ATSSAssigner(topk=topk).assign(priors, gt_boxes, torch.zeros(2, 5, dtype=torch.long), gt_mask,
                                         num_level_priors=counts)
    for b in range(2):
        expect = ref_atss(priors.tolist(), counts, valid_gts(gt_boxes, gt_mask, b), topk)
        assert res.gt_index[b].tolist() == expect
