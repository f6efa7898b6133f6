"""ATSS, max-IoU, FCOS, grid and YOLOv5, each written once over a candidate table: on a PriorGrid the windows
give the all-pairs result (bare ``Tensor[N, 4]`` priors) bit for bit, the pair budget's chunks change nothing,
and ATSS's window of cells finds the priors that ranking every distance finds. Cases hit the edges: GTs from
under a pixel to past the image, integer coordinates (IoU and distance ties, centres on cell borders), padding
rows, no GT, one prior, anchors and points, levels whose anchors do not share their cell's centre."""

from __future__ import annotations

import pytest
import torch

from detkit.anchors import PointGenerator, PriorGrid, YOLOAnchorGenerator, grid_from_levels
from detkit.assigners import ATSSAssigner, FCOSAssigner, GridAssigner, MaxIoUAssigner, YOLOv5Assigner
from detkit.assigners.atss import nearest_candidates
from detkit.assigners.base import AssignResult, prepare_priors
from detkit.assigners.candidates import pair_budget
from detkit.assigners.presets import build_preset

ANCHORS = [[(10, 13), (16, 30), (33, 23)], [(30, 61), (62, 45), (59, 119)], [(116, 90), (156, 198), (373, 326)]]
SIZE = 128
FIELDS = ("gt_index", "pos_mask", "ignore_mask", "labels", "iou", "align_metric", "score_target")
RANGES = [(-1, 16), (16, 32), (32, 1e8)]
TABLE_RULES = {  # rules that take bare priors too (all pairs)
    "atss": lambda: build_preset("atss"),
    "atss3": lambda: ATSSAssigner(topk=3),
    "iou": lambda: build_preset("iou"),
    "maxiou_nolq": lambda: MaxIoUAssigner(0.5, 0.4, match_low_quality=False),
    "maxiou_minpos": lambda: MaxIoUAssigner(0.7, 0.3, min_pos_iou=0.3),
    "fcos": lambda: FCOSAssigner(scale_ranges=RANGES),
    "fcos_box": lambda: FCOSAssigner(center_sampling_radius=None, scale_ranges=RANGES),
}
GRID_RULES = {  # cell arithmetic: a PriorGrid only
    "grid": lambda: build_preset("grid"),
    "grid_pred": lambda: GridAssigner(extra_match_thr=None, ignore_iou_thr=0.5, ignore_with_pred=True),
    "yolov5": lambda: build_preset("yolov5"),
    "yolov5_t2": lambda: YOLOv5Assigner(anchor_t=2.0),
}


def grid_of(anchors: bool, sizes=None) -> PriorGrid:
    gen = YOLOAnchorGenerator(ANCHORS, [8, 16, 32]) if anchors else PointGenerator([8, 16, 32])
    return gen.grid_priors(sizes or [(SIZE // 8,) * 2, (SIZE // 16,) * 2, (SIZE // 32,) * 2])


def random_case(seed: int, n: int, batch: int = 3, num_gts: int = 12) -> dict:
    g = torch.Generator().manual_seed(seed)
    side = torch.exp(torch.empty(batch, num_gts, 2).uniform_(-1, 5.5, generator=g))  # 0.4 to 245 px
    centre = torch.rand(batch, num_gts, 2, generator=g) * SIZE
    boxes = torch.cat([centre - side / 2, centre + side / 2], -1)
    if seed % 2:  # integer coordinates: exact ties of IoU and distance, GT sides on prior centres
        boxes = boxes.round()
    mask = torch.rand(batch, num_gts, generator=g) > 0.2
    pred = torch.cat([boxes.new_zeros(batch, n, 2), boxes.new_zeros(batch, n, 2)], -1)
    pred += torch.rand(batch, n, 4, generator=g) * SIZE
    pred = torch.cat([pred[..., :2].minimum(pred[..., 2:]), pred[..., :2].maximum(pred[..., 2:]) + 1], -1)
    return dict(gt_boxes=boxes, gt_labels=torch.randint(0, 5, (batch, num_gts), generator=g), gt_mask=mask,
                pred_boxes=pred)


def run(assigner, priors, case: dict, **kw) -> AssignResult:
    return assigner.assign(priors, case["gt_boxes"], case["gt_labels"], case["gt_mask"],
                           pred_boxes=case["pred_boxes"], **kw)


def assert_same(a: AssignResult, b: AssignResult) -> None:
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and torch.equal(x, y), name


def bare(grid: PriorGrid) -> dict:
    return dict(num_level_priors=grid.num_level_priors, prior_strides=grid.strides)


@pytest.mark.parametrize("name", sorted(TABLE_RULES))
@pytest.mark.parametrize("anchors", [False, True])
def test_grid_windows_equal_all_pairs(name, anchors):
    grid = grid_of(anchors)
    for seed in range(4):
        case = random_case(seed, grid.num_priors)
        windows = run(TABLE_RULES[name](), grid, case)
        assert_same(windows, run(TABLE_RULES[name](), grid.boxes, case, **bare(grid)))
    assert windows.num_pos > 0


@pytest.mark.parametrize("name", sorted(TABLE_RULES) + sorted(GRID_RULES))
def test_pair_budget_does_not_change_the_result(name):
    grid = grid_of(anchors=True)
    case = random_case(5, grid.num_priors, num_gts=16)
    rule = {**TABLE_RULES, **GRID_RULES}[name]
    whole = run(rule(), grid, case)
    with pair_budget(7):  # a chunk per GT, often less than a GT's window
        assert_same(run(rule(), grid, case), whole)
    if name in TABLE_RULES:
        with pair_budget(300):  # all pairs: a few GTs of N priors per chunk
            assert_same(run(rule(), grid.boxes, case, **bare(grid)), whole)


@pytest.mark.parametrize("name", sorted(TABLE_RULES) + sorted(GRID_RULES))
def test_no_gt_padding_only_and_one_prior(name):
    rule = {**TABLE_RULES, **GRID_RULES}[name]
    grid = grid_of(anchors=True)
    none = dict(gt_boxes=torch.zeros(2, 0, 4), gt_labels=torch.zeros(2, 0, dtype=torch.long),
                gt_mask=torch.zeros(2, 0, dtype=torch.bool), pred_boxes=grid.boxes[None].repeat(2, 1, 1))
    padding = random_case(3, grid.num_priors)
    padding["gt_mask"][:] = False
    for case in (none, padding):
        res = run(rule(), grid, case)
        assert res.num_pos == 0 and not res.ignore_mask.any()
        assert (res.gt_index == -1).all() and (res.labels == -1).all() and (res.iou == 0).all()
    one = YOLOAnchorGenerator([[(10, 13)]], [8]).grid_priors([(1, 1)])  # a single prior
    case = dict(gt_boxes=torch.tensor([[[0.0, 0.0, 4.0, 4.0], [1.0, 0.0, 9.0, 12.0]]]),
                gt_labels=torch.tensor([[4, 3]]), gt_mask=torch.tensor([[True, True]]), pred_boxes=one.boxes[None])
    if name.startswith("fcos"):
        rule = lambda: FCOSAssigner(scale_ranges=[(-1, 1e8)])  # noqa: E731  (one level: one range)
    res = run(rule(), one, case)
    # The prior (-1, -2.5, 9, 10.5): GT 1 (IoU 84/142, the prior's centre (4, 4) strictly inside, the later GT)
    # wins it under every rule here; GT 0 (IoU 16/130) has the centre on its border.
    assert res.gt_index.tolist() == [[1]] and res.labels.tolist() == [[3]]
    assert res.iou[0, 0].item() == pytest.approx(84 / 142)
    if name in TABLE_RULES:
        assert_same(res, run(rule(), one.boxes, case, **bare(one)))


def test_levels_whose_anchors_do_not_share_a_centre_take_the_exact_path():
    # Anchors of a cell shifted by a quarter pixel: the window of cells cannot stand for their centres, so
    # ATSS ranks every distance on that level and the windows of max-IoU and FCOS are widened; results are
    # still the all-pairs ones.
    base = grid_of(anchors=True)
    shift = torch.tensor([0.0, 0.25, -0.25]).repeat(base.num_priors // 3)[:, None]  # (N, 1) per anchor
    boxes = base.boxes + shift
    grid = grid_from_levels(boxes, base.strides, [(lv.height, lv.width, lv.anchors, lv.stride, lv.offset,
                                                   lv.anchor_sizes) for lv in base.levels])
    assert not any(level.shared_centres for level in grid.levels)
    for seed in (0, 1):
        case = random_case(seed, grid.num_priors)
        for name in ("atss", "atss3", "iou", "fcos"):
            assert_same(run(TABLE_RULES[name](), grid, case), run(TABLE_RULES[name](), boxes, case, **bare(grid)))


@pytest.mark.parametrize("sizes", [[(16, 16), (8, 8), (4, 4)], [(1, 12), (12, 1), (2, 3)], [(16, 16), (0, 0), (4, 4)]])
@pytest.mark.parametrize("anchors", [False, True])
def test_window_of_cells_finds_the_nearest_priors(sizes, anchors):
    # Centres on and off the grid (far outside: the window cannot decide, the level's full row is ranked),
    # on cell borders (distance ties, lower prior first), grids narrower than the window, an empty level.
    grid = grid_of(anchors, sizes)
    g = torch.Generator().manual_seed(2)
    on_borders = (torch.rand(20, 2, generator=g) * 16).round() * 8
    far = torch.tensor([[-500.0, 40.0], [900.0, 900.0]])
    centres = torch.cat([torch.rand(60, 2, generator=g) * 160 - 16, on_borders, far])
    every = prepare_priors(grid.boxes, grid.num_level_priors)
    for topk in (1, 4, 9, 13):
        windows = nearest_candidates(prepare_priors(grid), centres, topk)
        assert torch.equal(windows, nearest_candidates(every, centres, topk))
        assert windows.shape == (centres.shape[0], sum(min(topk, n) for n in grid.num_level_priors))


def test_nearest_ties_go_to_the_lower_prior():
    # Points of stride 8, 2 rows x 4 columns: priors 0-3 at y = 4, 4-7 at y = 12, x = 4, 12, 20, 28.
    grid = PointGenerator([8]).grid_priors([(2, 4)])
    centres = torch.tensor([[8.0, 4.0], [8.0, 8.0], [12.0, 8.0]])
    for priors in (prepare_priors(grid), prepare_priors(grid.boxes, [8])):
        cand = nearest_candidates(priors, centres, 3)
        assert cand[0].tolist() == [0, 1, 4]  # 0, 1 at 16; 4 and 5 tie at 80: the lower, 4
        assert cand[1].tolist() == [0, 1, 4]  # 0, 1, 4, 5 tie at 32: the three lowest
        assert cand[2].tolist() == [0, 1, 5]  # 1, 5 at 16; 0, 2, 4, 6 tie at 80: 0


@pytest.mark.parametrize("anchors", [False, True])
def test_grid_ignore_windows_equal_every_pair(anchors):
    # The grid rule's ignore step lists only the priors whose boxes can overlap a GT (its windows): the ignore
    # mask is the one of the best IoU over every (prior, valid GT) pair, bit for bit.
    from detkit.boxes import pairwise_iou

    grid = grid_of(anchors)
    for seed in range(4):
        case = random_case(seed, grid.num_priors)
        res = run(GridAssigner(ignore_iou_thr=0.3), grid, case)
        iou = pairwise_iou(case["gt_boxes"], grid.boxes).masked_fill(~case["gt_mask"][..., None], 0.0)  # (B, M, N)
        assert torch.equal(res.ignore_mask, (iou.amax(1) > 0.3) & ~res.pos_mask)
        assert res.ignore_mask.any()
