"""MinPositives: hand-computed cases, and the wrapper over every assigner."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from detkit.analysis import positives_per_gt
from detkit.assigners import AssignResult, ATSSAssigner, MinPosAssignResult, MinPositives
from detkit.assigners.presets import assigner_call, build_preset

_spec = importlib.util.spec_from_file_location("assigner_conftest", Path(__file__).with_name("conftest.py"))
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)

# 2 x 2 cells of stride 8: priors 8 x 8 centred at (4, 4), (12, 4), (4, 12), (12, 12)
PRIORS = torch.tensor([[0.0, 0, 8, 8], [8, 0, 16, 8], [0, 8, 8, 16], [8, 8, 16, 16]])


class FixedAssigner:
    """Returns the positives it was given (``gt_index (B, N)``, -1 elsewhere): the rule under test."""

    uses_predictions = False

    def __init__(self, gt_index: list[list[int]], ignore: list[list[bool]] | None = None,
                 score_target: bool = False) -> None:
        self.gt_index = torch.tensor(gt_index)
        self.ignore = None if ignore is None else torch.tensor(ignore)
        self.score_target = score_target

    def assign(self, priors, gt_boxes, gt_labels, gt_mask, **_):
        pos = self.gt_index >= 0
        labels = torch.where(pos, gt_labels.gather(1, self.gt_index.clamp(min=0)), -1) if gt_labels.shape[1] else \
            torch.full_like(self.gt_index, -1)
        ignore = torch.zeros_like(pos) if self.ignore is None else self.ignore & ~pos
        extra = dict(score_target=torch.where(pos, 0.5, 0.0)) if self.score_target else {}
        return AssignResult(gt_index=self.gt_index.clone(), pos_mask=pos, ignore_mask=ignore, labels=labels,
                            iou=torch.where(pos, 0.25, 0.0), **extra)


def assign(wrapper, boxes, labels=None, mask=None, **kw):
    boxes = torch.tensor(boxes, dtype=torch.float32)
    labels = torch.tensor(labels) if labels is not None else torch.zeros(boxes.shape[:2], dtype=torch.long)
    mask = torch.tensor(mask) if mask is not None else torch.ones(boxes.shape[:2], dtype=torch.bool)
    return wrapper.assign(PRIORS, boxes, labels, mask, num_level_priors=[4], **kw)


def test_no_gt_forces_nothing():
    res = assign(MinPositives(FixedAssigner([[-1, -1, -1, -1]])), [[[0.0, 0, 4, 4]]], mask=[[False]])
    assert isinstance(res, MinPosAssignResult)
    assert not res.pos_mask.any() and not res.forced_mask.any()
    res = MinPositives(FixedAssigner([[-1, -1, -1, -1]])).assign(
        PRIORS, torch.zeros(1, 0, 4), torch.zeros(1, 0, dtype=torch.long), torch.zeros(1, 0, dtype=torch.bool))
    assert not res.pos_mask.any() and res.forced_mask.shape == (1, 4)


def test_tiny_gt_between_priors_gets_the_nearest_centre():
    # centre (8.5, 8.25): no prior centre inside; distances 6.0 / 5.5 / 6.1 / 5.13 -> prior 3
    res = assign(MinPositives(FixedAssigner([[-1, -1, -1, -1]])), [[[7.5, 7.5, 9.5, 9.0]]], labels=[[3]])
    assert res.gt_index.tolist() == [[-1, -1, -1, 0]]
    assert res.labels.tolist() == [[-1, -1, -1, 3]]
    assert res.forced_mask.tolist() == [[False, False, False, True]]
    # IoU of [8, 8, 16, 16] with the GT: 1.5 x 1 / (64 + 3 - 1.5)
    assert res.iou[0, 3].item() == pytest.approx(1.5 / 65.5, rel=1e-5)


def test_highest_iou_inside_beats_a_nearer_centre():
    # GT [1, 1, 12, 8], centre (6.5, 4.5); prior 0 [0, 0, 8, 8] (centre distance 2.55, IoU 49 / 92)
    # and prior 1 [5, 3, 9, 7] (distance 0.71, IoU 16 / 77) both have their centre inside
    priors = torch.tensor([[0.0, 0, 8, 8], [5, 3, 9, 7]])
    rule = FixedAssigner([[-1, -1]])
    res = MinPositives(rule).assign(priors, torch.tensor([[[1.0, 1, 12, 8]]]), torch.zeros(1, 1, dtype=torch.long),
                                    torch.ones(1, 1, dtype=torch.bool))
    assert res.gt_index.tolist() == [[0, -1]]
    assert res.iou[0, 0].item() == pytest.approx(49 / 92, rel=1e-5)


def test_gt_whose_best_prior_is_taken_gets_its_next_best():
    # GT 0 holds prior 0 (the rule's positive); GT 1 = [1, 1, 13, 7] would prefer prior 0, gets prior 1
    res = assign(MinPositives(FixedAssigner([[0, -1, -1, -1]])), [[[0.0, 0, 8, 8], [1.0, 1, 13, 7]]],
                 labels=[[1, 2]])
    assert res.gt_index.tolist() == [[0, 1, -1, -1]]
    assert res.labels.tolist() == [[1, 2, -1, -1]]
    assert res.forced_mask.tolist() == [[False, True, False, False]]
    assert res.iou[0, 0].item() == 0.25  # the rule's own positive is kept as it was


def test_two_needy_gts_claiming_one_prior():
    # both GTs' best is prior 0 (centre inside); GT 1's IoU is higher, it wins; GT 0 takes its next best
    gts = [[[0.0, 0, 10, 12], [0.0, 0, 8, 9]]]
    res = assign(MinPositives(FixedAssigner([[-1, -1, -1, -1]])), gts)
    # GT 1 ([0,0,8,9]) IoU with prior 0 = 64/72 > GT 0's 64/120: GT 1 wins prior 0.
    # GT 0 ([0,0,10,12], centre (5,6)): only prior 0's centre is inside -> next: nearest centre among
    # priors 1..3: (12,4) d=7.28, (4,12) d=6.08, (12,12) d=9.2 -> prior 2
    assert res.gt_index.tolist() == [[1, -1, 0, -1]]
    assert res.forced_mask.sum() == 2


def test_equal_claims_go_to_the_lower_gt_index():
    res = assign(MinPositives(FixedAssigner([[-1, -1, -1, -1]])), [[[7.0, 7, 9, 9], [7.0, 7, 9, 9]]])
    # both at (8, 8), equidistant from all four centres: GT 0 takes prior 0, GT 1 prior 1
    assert res.gt_index.tolist() == [[0, 1, -1, -1]]


def test_no_free_prior_left():
    res = assign(MinPositives(FixedAssigner([[0, 0, 0, 0]])), [[[0.0, 0, 16, 16], [2.0, 2, 4, 4]]])
    assert res.gt_index.tolist() == [[0, 0, 0, 0]] and not res.forced_mask.any()


def test_min_pos_two_tops_up_and_clears_ignore():
    rule = FixedAssigner([[0, -1, -1, -1]], ignore=[[False, True, True, True]])
    res = assign(MinPositives(rule, min_pos_per_gt=2), [[[0.0, 0, 16, 9]]])
    # prior 0 already positive; the free priors: 1 (centre (12,4) inside, IoU 64/144), 2 and 3 outside
    assert res.gt_index.tolist() == [[0, 0, -1, -1]]
    assert res.ignore_mask.tolist() == [[False, False, True, True]]
    assert res.iou[0, 1].item() == pytest.approx(64 / 144, rel=1e-5)


def test_prediction_aware_rules_get_the_predicted_iou_as_score_target():
    rule = FixedAssigner([[-1, -1, -1, -1]], score_target=True)
    rule.uses_predictions = True
    pred = torch.tensor([[[0.0, 0, 8, 8], [8, 0, 16, 8], [0, 8, 8, 16], [8, 8, 12, 12]]])
    res = assign(MinPositives(rule), [[[8.0, 8, 12, 12]]], pred_boxes=pred,
                 pred_scores=torch.zeros(1, 4, 1))
    assert res.gt_index.tolist() == [[-1, -1, -1, 0]]
    assert res.iou[0, 3].item() == pytest.approx(1.0, abs=1e-5)  # the predicted box, not the prior (0.25)
    assert res.score_target[0, 3].item() == pytest.approx(1.0, abs=1e-5)


def test_atss_tiny_gt_is_rescued():
    atss = ATSSAssigner(topk=2)
    boxes = torch.tensor([[[7.5, 7.5, 9.5, 9.0]]])
    labels, mask = torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1, dtype=torch.bool)
    plain = atss.assign(PRIORS, boxes, labels, mask, num_level_priors=[4])
    assert not plain.pos_mask.any()  # no candidate centre inside: ATSS gives it nothing
    res = MinPositives(atss).assign(PRIORS, boxes, labels, mask, num_level_priors=[4])
    assert res.gt_index.tolist() == [[-1, -1, -1, 0]]


def test_bad_arguments():
    with pytest.raises(ValueError, match="min_pos_per_gt"):
        MinPositives(ATSSAssigner(), min_pos_per_gt=0)
    with pytest.raises(ValueError, match="needs an assigner"):
        MinPositives("atss")


def test_preset_suffix():
    assert assigner_call("atss+minpos") == "MinPositives(assigner=ATSSAssigner(topk=9), min_pos_per_gt=1)"
    assert assigner_call("ATSSAssigner(topk=3)+minpos2") == \
        "MinPositives(assigner=ATSSAssigner(topk=3), min_pos_per_gt=2)"
    built = build_preset("tal+minpos")
    assert isinstance(built, MinPositives) and built.uses_predictions and built.min_pos_per_gt == 1
    assert not build_preset("grid+minpos").uses_predictions


# ----- the wrapper over every assigner ---------------------------------------------------------------


def test_every_valid_gt_reaches_the_minimum_without_stealing(factory, grid):
    data = helpers.random_batch(4, num_gts=8, pad_from=6)
    data["gt_boxes"][:, :2, 2:] = data["gt_boxes"][:, :2, :2] + 1.5  # two tiny GTs per image
    inner = factory()
    plain = helpers.run(inner, grid, data)
    res = helpers.run(MinPositives(inner, min_pos_per_gt=2), grid, data)
    counts = positives_per_gt(res.gt_index, res.pos_mask, 8)
    assert (counts[:, :6] >= 2).all() and (counts[:, 6:] == 0).all()  # padding rows never forced
    kept = plain.pos_mask
    assert torch.equal(res.gt_index[kept], plain.gt_index[kept])  # the rule's positives untouched
    assert torch.equal(res.forced_mask, res.pos_mask & ~kept)
    assert not (res.pos_mask & res.ignore_mask).any()
    assert torch.equal(res.labels[res.pos_mask], data["gt_labels"].gather(1, res.gt_index.clamp(min=0))[res.pos_mask])


def test_batched_equals_per_image(factory, grid):
    data = helpers.random_batch(5, num_gts=6)
    data["gt_boxes"][:, 0, 2:] = data["gt_boxes"][:, 0, :2] + 1.0
    wrapper = MinPositives(factory())
    res = helpers.run(wrapper, grid, data)
    for i in range(3):
        one = helpers.run(wrapper, grid, {k: v[i:i + 1] for k, v in data.items()})
        assert torch.equal(one.gt_index[0], res.gt_index[i]) and torch.equal(one.forced_mask[0], res.forced_mask[i])


# ----- adversarial batches (the hypothesis strategy of test_adversarial.py) -----------------------------

_adv_spec = importlib.util.spec_from_file_location("assigner_adversarial",
                                                   Path(__file__).with_name("test_adversarial.py"))
adversarial = importlib.util.module_from_spec(_adv_spec)
_adv_spec.loader.exec_module(adversarial)


@pytest.mark.parametrize("name", ["atss", "grid", "simota", "tal"])
@adversarial.PROFILE
@adversarial.given(data=adversarial.batches())
def test_adversarial_batches_reach_the_minimum_or_run_out_of_priors(name, data):
    from detkit.boxes import valid_gt_mask

    wrapper = MinPositives(adversarial.ASSIGNERS[name](), min_pos_per_gt=2)
    res = adversarial.assign(wrapper, data)
    adversarial.check(res, data)
    valid = valid_gt_mask(data["gt_boxes"].float(), data["gt_mask"])
    counts = positives_per_gt(res.gt_index, res.pos_mask, valid.shape[1])
    full = res.pos_mask.all(dim=1, keepdim=True)  # (B, 1): no free prior left in the image
    assert ((counts >= 2) | ~valid | full).all() and (counts[~valid] == 0).all()
    for i in range(data["gt_boxes"].shape[0]):
        single = adversarial.assign(wrapper, data, slice(i, i + 1))
        assert torch.equal(single.gt_index[0], res.gt_index[i]) and torch.equal(single.iou[0], res.iou[i])
