"""Dynamic-k matching written once over candidate tables (detkit.assigners.dynamic_k): the listed tables of a
PriorGrid give the all-pairs result bit for bit (SimOTA, both DSL variants, every preset, MinPositives around
them), whatever the chunking; each fallback path (a GT decided on its all-pairs row, a shared prior on its
all-pairs column, wide predictions merged into a GT's row) is taken and agrees; the per-GT steps on hand-made
tables; a rule of one's own through the public DynamicKRule protocol."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import detkit.assigners.dynamic_k as dk
from detkit.anchors import PointGenerator, YOLOAnchorGenerator
from detkit.assigners import DynamicSoftLabelAssigner, MinPositives, SimOTAAssigner
from detkit.assigners.base import prepare
from detkit.assigners.candidates import CandidateTable, pair_budget, take_rows
from detkit.assigners.dynamic_k import DynamicKAssigner, DynamicKRule, PairInputs, inside_any
from detkit.assigners.presets import build_preset
from detkit.boxes import aligned_iou

_spec = importlib.util.spec_from_file_location("assigner_conftest", Path(__file__).with_name("conftest.py"))
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)
assert_same = helpers.assert_same

ANCHORS = [[(10, 13), (16, 30), (33, 23)], [(30, 61), (62, 45), (59, 119)], [(116, 90), (156, 198), (373, 326)]]
SIZE = 128
RULES = {
    "simota": lambda: SimOTAAssigner(),
    "simota_plain": lambda: SimOTAAssigner(center_radius=1.0, candidate_topk=3, cls_weight=2.0, score_sqrt=False),
    "dsl": lambda: DynamicSoftLabelAssigner(),
    "dsl_gt_class": lambda: DynamicSoftLabelAssigner(topk=5, cls_cost="gt_class"),
    "dsl_mmyolo": lambda: DynamicSoftLabelAssigner(cls_cost="gt_class", candidates_only=False),
    "dsl_all_priors": lambda: DynamicSoftLabelAssigner(candidates_only=False, soft_center_radius=1.5),
}


def grid_of(anchors: bool):
    gen = YOLOAnchorGenerator(ANCHORS, [8, 16, 32]) if anchors else PointGenerator([8, 16, 32])
    return gen.grid_priors([(SIZE // 8,) * 2, (SIZE // 16,) * 2, (SIZE // 32,) * 2])


def random_case(seed: int, grid, batch: int = 3, num_gts: int = 12, num_classes: int = 5) -> dict:
    """GTs from under a pixel to past the image; on odd seeds integer coordinates and coarse scores (exact
    ties of IoU and cost); predictions near the priors."""
    g = torch.Generator().manual_seed(seed)
    n = grid.num_priors
    side = torch.exp(torch.empty(batch, num_gts, 2).uniform_(-1, 5.5, generator=g))  # 0.4 to 245 px
    centre = torch.rand(batch, num_gts, 2, generator=g) * SIZE
    boxes = torch.cat([centre - side / 2, centre + side / 2], -1)
    pc = grid.centres + torch.randn(batch, n, 2, generator=g) * grid.strides[:, None]
    pwh = grid.strides[:, None] * 3 * torch.exp(torch.randn(batch, n, 2, generator=g) * 0.5)
    pred = torch.cat([pc - pwh / 2, pc + pwh / 2], -1)
    scores = torch.rand(batch, n, num_classes, generator=g) ** 3
    if seed % 2:
        boxes, pred, scores = boxes.round(), pred.round(), (scores * 4).round() / 4
    return dict(gt_boxes=boxes, gt_labels=torch.randint(0, num_classes, (batch, num_gts), generator=g),
                gt_mask=torch.rand(batch, num_gts, generator=g) > 0.2, pred_boxes=pred, pred_scores=scores)


def on_grid(assigner, grid, case: dict):
    return assigner.assign(grid, case["gt_boxes"], case["gt_labels"], case["gt_mask"],
                           pred_boxes=case["pred_boxes"], pred_scores=case["pred_scores"])


def on_all_pairs(assigner, grid, case: dict):
    return assigner.assign(grid.boxes, case["gt_boxes"], case["gt_labels"], case["gt_mask"],
                           num_level_priors=grid.num_level_priors, prior_strides=grid.strides,
                           pred_boxes=case["pred_boxes"], pred_scores=case["pred_scores"])


@pytest.mark.parametrize("name", sorted(RULES))
@pytest.mark.parametrize("anchors", [False, True])
def test_grid_tables_equal_all_pairs(name, anchors):
    grid = grid_of(anchors)
    for seed in range(4):
        case = random_case(seed, grid)
        listed = on_grid(RULES[name](), grid, case)
        assert_same(listed, on_all_pairs(RULES[name](), grid, case))
        assert listed.num_pos > 0


@pytest.mark.parametrize("name", ["simota", "simota-yolox", "dsl", "dsl-mmyolo", "simota+minpos", "dsl-mmyolo+minpos2"])
def test_presets_grid_equals_all_pairs(name):
    grid = grid_of(False)
    for seed in range(3):
        case = random_case(100 + seed, grid, num_gts=20)
        assert_same(on_grid(build_preset(name), grid, case), on_all_pairs(build_preset(name), grid, case))


@pytest.mark.parametrize("name", ["simota", "dsl", "dsl_mmyolo"])
def test_chunked_tables_change_nothing(name):
    # A budget of a few pairs cuts the tables into single GTs (and several parts of an all-pairs column).
    grid = grid_of(True)
    case = random_case(7, grid)
    whole = on_grid(RULES[name](), grid, case)
    with pair_budget(40):
        assert_same(on_grid(RULES[name](), grid, case), whole)
        assert_same(on_all_pairs(RULES[name](), grid, case), whole)


@pytest.mark.parametrize("name", ["simota", "dsl", "dsl_mmyolo"])
def test_fallbacks_are_taken_and_agree(name, monkeypatch):
    # A few predictions span the whole image (wide: merged into every GT row of their image); two GTs off the
    # image overlap no prediction and have no candidate near them, so each takes the cheapest candidate
    # anywhere, decided on its all-pairs row, and the prior they both take is settled on its all-pairs column.
    calls = {"rows": 0, "columns": 0, "wide": 0}
    columns, merge, tables = dk._cheapest_on_columns, dk._merge_rows, dk.candidate_tables

    def count_columns(*args):
        calls["columns"] += 1
        return columns(*args)

    def count_wide(*args):
        calls["wide"] += 1
        return merge(*args)

    def count_rows(p, gt, regions=None, rows=None):
        calls["rows"] += regions is None and p.grid is not None  # all-pairs rows of GTs on a grid
        return tables(p, gt, regions, rows)

    monkeypatch.setattr(dk, "_cheapest_on_columns", count_columns)
    monkeypatch.setattr(dk, "_merge_rows", count_wide)
    monkeypatch.setattr(dk, "candidate_tables", count_rows)
    grid = grid_of(False)
    for seed in range(4):
        case = random_case(200 + seed, grid, num_gts=16)
        case["pred_boxes"][:, ::9] = torch.tensor([-40.0, -40.0, 170.0, 170.0])  # wide predictions
        case["gt_boxes"][:, :2] = torch.tensor([400.0, 400.0, 401.0, 401.0])  # far off the image
        case["gt_labels"][:, 1] = case["gt_labels"][:, 0]
        case["gt_mask"][:, :2] = True
        assert_same(on_grid(RULES[name](), grid, case), on_all_pairs(RULES[name](), grid, case))
    assert all(calls.values()), calls


@pytest.mark.parametrize("name", ["simota", "dsl", "dsl_mmyolo"])
def test_wide_predictions_of_some_images_only(name, monkeypatch):
    # Image 0 has many wide predictions, image 1 none (and no valid GT), image 2 a single one: the wide block is
    # padded to image 0's count, and every image's rows still equal their all-pairs rows.
    merges = []
    merge = dk._merge_rows
    monkeypatch.setattr(dk, "_merge_rows", lambda *a: merges.append(a[2].shape[0]) or merge(*a))
    grid = grid_of(False)
    for seed in range(3):
        case = random_case(300 + seed, grid, num_gts=10)
        case["pred_boxes"][0, ::5] = torch.tensor([-30.0, -20.0, 150.0, 140.0])
        case["pred_boxes"][2, 7] = torch.tensor([-50.0, -50.0, 180.0, 180.0])
        case["gt_mask"][1] = False
        case["gt_mask"][0, :3] = True
        assert_same(on_grid(RULES[name](), grid, case), on_all_pairs(RULES[name](), grid, case))
    assert merges and max(merges) > 0


def test_wide_rows_are_padded_per_image():
    x = PairInputs(centres=torch.zeros(4, 2), strides=torch.ones(4), pred_boxes=torch.zeros(8, 4),
                   gt_boxes=torch.zeros(2, 4), labels=torch.zeros(2, dtype=torch.long),
                   valid=torch.ones(2, dtype=torch.bool), scores={}, batch=2, num_gts=1, num_classes=1)
    wide = torch.tensor([False, True, False, True, False, False, True, False])
    assert dk._wide_rows(x, wide).tolist() == [[1, 3], [2, -1]]
    assert dk._wide_rows(x, torch.zeros(8, dtype=torch.bool)).shape == (2, 0)


def test_non_finite_predictions_use_all_pairs():
    grid = grid_of(False)
    case = random_case(9, grid)
    case["pred_boxes"][0, 5] = float("nan")
    case["pred_boxes"][1, 7, 2] = float("inf")
    for name in ("simota", "dsl"):
        assert_same(on_grid(RULES[name](), grid, case), on_all_pairs(RULES[name](), grid, case))


def test_min_positives_takes_a_grid():
    grid = grid_of(True)
    case = random_case(11, grid)
    rule = MinPositives(SimOTAAssigner(candidate_topk=1), min_pos_per_gt=3)
    res = on_grid(rule, grid, case)
    assert_same(res, on_all_pairs(rule, grid, case))
    assert torch.equal(res.forced_mask, on_all_pairs(rule, grid, case).forced_mask) and res.forced_mask.any()


# The per-GT steps on hand-made tables ----------------------------------------------------------------------


def table_of(rows: list[list[int]], num_priors: int) -> CandidateTable:
    """A table of one image whose GT row g lists the priors rows[g]."""
    row = torch.tensor([g for g, ps in enumerate(rows) for _ in ps], dtype=torch.long)
    prior = torch.tensor([p for ps in rows for p in ps], dtype=torch.long)
    g = len(rows)
    return CandidateTable(image=torch.zeros(g, dtype=torch.long), slot=torch.arange(g), row=row, prior=prior,
                          num_gts=g, num_priors=num_priors)


def test_dynamic_k_sums_the_largest_ious_and_is_at_least_one():
    t = table_of([[0, 1, 2, 3], [1, 2], [], [0, 1, 2]], 4)
    iou = torch.tensor([0.75, 0.5, 1.0, 0.25, 0.25, 0.5, 0.125, 1.0, 1.0])
    # row 0: 1 + 0.75 + 0.5 = 2.25 (k = 3 of 4) -> 2; row 1: 0.75 -> 1; row 2: nothing -> 1; row 3: 2.125 -> 2
    assert dk._dynamic_ks(t, iou, 3).tolist() == [2, 1, 1, 2]
    assert dk._dynamic_ks(t, iou, 1).tolist() == [1, 1, 1, 1]


class Ties:
    """The attributes _take_lowest reads."""

    def __init__(self, tie_order: str, topk: int = 3) -> None:
        self.tie_order, self.candidate_topk = tie_order, topk


def test_all_pairs_rows_take_the_lowest_costs_ties_by_prior_index():
    t = table_of([[0, 1, 2, 3, 4], [0, 1, 2, 3, 4]], 5)
    inf = float("inf")
    cost = torch.tensor([3.0, 1.0, 2.0, 1.0, inf, inf, inf, 5.0, inf, inf])
    taken, decided = dk._take_lowest(Ties("index"), t, cost, torch.tensor([2, 3]))
    assert decided.all()  # an all-pairs row is always decided
    assert taken.view(2, 5).tolist() == [[False, True, False, True, False], [False, False, True, False, False]]
    # mmyolo's order: torch.sort's on the row (the same set here: no tie across the cut)
    taken, _ = dk._take_lowest(Ties("torch_sort"), t, cost, torch.tensor([2, 3]))
    assert taken.view(2, 5).tolist() == [[False, True, False, True, False], [False, False, True, False, False]]


def test_listed_rows_are_decided_only_when_no_unlisted_pair_can_change_them():
    t = table_of([[2, 5], [1, 3, 4], [0], [6, 7]], 8)
    cost = torch.tensor([4.0, 1.0, 2.0, 2.0, 9.0, 1.0, 3.0, 3.0])
    k = torch.tensor([1, 2, 2, 1])
    bound = torch.tensor([5.0, 5.0, 5.0, 2.5])
    taken, decided = dk._take_lowest(Ties("index"), t, cost, k, bound)
    # row 0: prior 5 (1.0 < 5); row 1: priors 1, 3 (tie at 2.0 by prior index); row 2: only 1 of 2 listed;
    # row 3: k-th cost 3.0 is not below the bound 2.5
    assert decided.tolist() == [True, True, False, False]
    assert t.prior[taken & decided[t.row]].tolist() == [5, 1, 3]
    # torch.sort's order: a tie across the cut (row 3: 3.0, 3.0 with k = 1) is never decided on a listed row
    _, decided = dk._take_lowest(Ties("torch_sort"), t, cost, k, torch.full((4,), 10.0))
    assert decided.tolist() == [True, True, False, False]


def test_inside_any_is_strict():
    rects = [torch.tensor([[0.0, 0.0, 8.0, 8.0]]), torch.tensor([[10.0, 0.0, 12.0, 8.0]])]
    centres = torch.tensor([[4.0, 4.0], [8.0, 4.0], [11.0, 4.0], [0.0, 0.0], [9.0, 4.0]])
    assert inside_any([r.expand(5, 4) for r in rects], centres).tolist() == [True, False, True, False, False]


# A rule of one's own ---------------------------------------------------------------------------------------


class NearestIoU(DynamicKAssigner):
    """Candidates: centre inside the box; cost: 1 - IoU (no class term); every other pair costs at least 1."""

    candidate_topk = 4

    def candidate_rects(self, boxes, strides):
        return [boxes.expand(*torch.broadcast_shapes(boxes.shape[:-1], strides.shape), 4)]

    def score_terms(self, scores, fg):
        return {}

    def pair_iou(self, x: PairInputs, gt, pred):
        usable = take_rows(x.fg, pred) & take_rows(x.valid, gt)
        return aligned_iou(take_rows(x.gt_boxes, gt), take_rows(x.pred_boxes, pred)).masked_fill(~usable, 0.0)

    def pair_cost(self, x: PairInputs, gt, pred, prior, iou):
        usable = take_rows(x.fg, pred) & take_rows(x.valid, gt)
        return (1.0 - iou).masked_fill(~usable, float("inf"))

    def cost_floor(self, x: PairInputs, gt):
        return torch.ones(gt.shape[0])


def test_a_rule_of_ones_own_on_the_protocol():
    assert isinstance(NearestIoU(), DynamicKRule)
    grid = grid_of(False)
    for seed in range(3):
        case = random_case(300 + seed, grid)
        listed = on_grid(NearestIoU(), grid, case)
        assert_same(listed, on_all_pairs(NearestIoU(), grid, case))
        assert listed.num_pos > 0
    # hand-made: one GT (0, 0, 16, 16) over the 4 finest priors; predictions with IoU 1, 0.5, 0.25, 0
    grid = PointGenerator([8]).grid_priors([(2, 2)])
    preds = torch.tensor([[[0.0, 0, 16, 16], [0, 0, 16, 8], [0, 0, 8, 8], [20, 20, 30, 30]]])
    res = NearestIoU().assign(grid, torch.tensor([[[0.0, 0, 16, 16]]]), torch.zeros(1, 1, dtype=torch.long),
                              torch.ones(1, 1, dtype=torch.bool), pred_boxes=preds, pred_scores=torch.rand(1, 4, 1))
    assert res.gt_index.tolist() == [[0, -1, -1, -1]]  # k = int(1 + 0.5 + 0.25 + 0) = 1: the lowest cost
    p, gt = prepare(grid, torch.tensor([[[0.0, 0, 16, 16]]]), torch.zeros(1, 1, dtype=torch.long),
                    torch.ones(1, 1, dtype=torch.bool))
    assert p.grid is grid and gt.valid.all()


def test_the_sparse_module_is_gone():
    assert importlib.util.find_spec("detkit.assigners.dynamic_k_sparse") is None
