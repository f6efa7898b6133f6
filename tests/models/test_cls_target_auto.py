"""``cls_target="auto"``: every assigner swaps into the YOLOv8 / RTMDet configs with one override, the
recipes' own targets are unchanged, and an explicit ``"assigner"`` with a box-only rule is a config error
before any output exists (issue 23, item 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from detkit.assigners import (
    ATSSAssigner,
    DynamicSoftLabelAssigner,
    FCOSAssigner,
    GridAssigner,
    MaxIoUAssigner,
    MinPositives,
    SimOTAAssigner,
    TaskAlignedAssigner,
    YOLOv5Assigner,
)
from detkit.assigners.presets import build_preset
from detkit.config import ConfigError, L, instantiate, load_config
from detkit.models.heads.yolo_loss import YOLOLossPipeline, rule_sets_score_target
from tests.fixtures.tools import load_tool

ROOT = Path(__file__).resolve().parents[2]
TINY_V8 = str(ROOT / "tests" / "engine" / "configs" / "shapes_tiny_decoupled.py")
SWAP = "model.head.loss.assigner="


class OwnRule:
    """A user's rule that states nothing about its targets."""

    def assign(self, *args, **kwargs):  # pragma: no cover - never run
        raise AssertionError


@pytest.mark.parametrize("rule, expected", [
    (ATSSAssigner(), False), (MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4), False), (FCOSAssigner(), False),
    (GridAssigner(), False), (YOLOv5Assigner(), False), (TaskAlignedAssigner(), True), (SimOTAAssigner(), True),
    (DynamicSoftLabelAssigner(), True), (MinPositives(ATSSAssigner()), False), (MinPositives(SimOTAAssigner()), True),
    (OwnRule(), None), (ATSSAssigner, False), (TaskAlignedAssigner, True),
    (L(ATSSAssigner)(topk=9), False), (L(MinPositives)(assigner=L(TaskAlignedAssigner)()), True), (L(OwnRule)(), None),
])
def test_rule_sets_score_target_from_object_class_or_lazy_call(rule, expected):
    assert rule_sets_score_target(rule) is expected


@pytest.mark.parametrize("preset, scored", [("tal", True), ("simota", True), ("dsl", True), ("atss", False),
                                            ("iou", False), ("fcos", False), ("grid", False)])
def test_declaration_agrees_with_what_the_rule_returns(preset, scored):
    """The static answer is what the rule's result holds (a rule that lied would train on the wrong target)."""
    from detkit.anchors import PointGenerator

    rule = build_preset(preset)
    grid = PointGenerator([8, 16, 32]).grid_priors([(8, 8), (4, 4), (2, 2)])
    priors, strides, counts = grid
    res = rule.assign(grid, torch.tensor([[[2.0, 2.0, 30.0, 30.0]]]), torch.tensor([[0]]), torch.tensor([[True]]),
                      num_level_priors=counts, prior_strides=strides, pred_boxes=priors[None].clone(),
                      pred_scores=torch.full((1, len(priors), 3), 0.5))
    assert rule_sets_score_target(rule) is scored
    assert (getattr(res, "score_target", None) is not None) is scored


def _losses(cfg_options, seed=0):
    """The loss dict of the tiny YOLOv8-head model on a fixed 2-image batch."""
    cfg = load_config(TINY_V8, cfg_options)
    torch.manual_seed(seed)
    model = instantiate(cfg.model).train()
    gen = torch.Generator().manual_seed(1)
    batch = dict(images=torch.rand(2, 3, 64, 64, generator=gen),
                 gt_boxes=torch.tensor([[[4.0, 6.0, 40.0, 30.0], [30.0, 20.0, 60.0, 62.0]],
                                        [[10.0, 10.0, 50.0, 50.0], [0.0, 0.0, 0.0, 0.0]]]),
                 gt_labels=torch.tensor([[0, 2], [1, 0]]), gt_mask=torch.tensor([[True, True], [True, False]]))
    out = model.loss(batch)
    return cfg, {k: v.detach() for k, v in out.items() if k.startswith("loss_")}


@pytest.mark.parametrize("preset, explicit", [("tal", "assigner"), ("simota", "assigner"), ("dsl", "assigner"),
                                              ("atss", "onehot"), ("iou", "onehot"), ("fcos", "onehot"),
                                              ("grid", "onehot")])
def test_one_override_swaps_any_rule_and_auto_picks_the_rules_target(preset, explicit):
    cfg, auto = _losses([SWAP + preset])
    assert cfg.model.head.loss.cls_target == "auto"
    _, pinned = _losses([SWAP + preset, f"model.head.loss.cls_target={explicit}"])
    assert auto.keys() == pinned.keys() and all(torch.isfinite(v) for v in auto.values())
    for k in auto:
        assert torch.equal(auto[k], pinned[k]), k  # bit for bit the target the rule calls for


def test_the_recipes_own_targets_are_unchanged():
    """YOLOv8 (TAL) and RTMDet (DSL) configs left the target to the rule: "auto" is "assigner" for them."""
    for options in ([], ["model.head.loss=dict(assigner=DynamicSoftLabelAssigner(topk=13, iou_weight=3.0, "
                         "soft_center_radius=3.0))"]):
        cfg, auto = _losses(options)
        _, before = _losses([*options, "model.head.loss.cls_target=assigner"])
        assert {k: float(v) for k, v in auto.items()} == {k: float(v) for k, v in before.items()}
    for name in ("yolov8.py", "rtmdet.py", "yolov10_one2one.py"):
        text = (ROOT / "detkit" / "configs" / "common" / "heads" / name).read_text()
        assert 'cls_target="auto"' in text and 'cls_target="assigner"' not in text
    assert load_config("yolov8n_tal.py").model.head.loss.cls_target == "auto"


def test_auto_on_hand_made_targets():
    """A positive's target at its class: the rule's score_target when the result has one, else 1."""
    from detkit.coders import DFLCoder
    from tests.models.test_decoupled_head import GT, ScoredAssigner, decoupled_preds, make_batch

    box, cls = torch.zeros(1, 4, 16), torch.zeros(1, 4, 2)
    for with_score, expected in ((True, 0.5), (False, 1.0)):
        rule = ScoredAssigner(with_score=with_score)
        p = YOLOLossPipeline(assigner=rule, cls_target="auto")
        seen = {}
        original = p.classification_targets

        def spy(pos, result, original=original, seen=seen):
            seen["t"] = original(pos, result)
            return seen["t"]

        p.classification_targets = spy
        p(decoupled_preds(box, cls, DFLCoder(4)), make_batch([[GT]], [[1]], [[True]]))
        assert seen["t"].tolist() == [expected] * len(seen["t"]) and len(seen["t"]) > 0


@pytest.mark.parametrize("options", [
    [SWAP + "atss", "model.head.loss.cls_target=assigner"],
    ["model.head.loss.cls_target=assigner", SWAP + "ATSSAssigner(topk=9)"],
    [SWAP + "fcos+minpos", "model.head.loss.cls_target=assigner"],
    [SWAP + "grid", "model.head.loss.cls_target=assigner"],
])
def test_explicit_assigner_target_with_a_box_only_rule_is_a_config_error_at_load(options):
    with pytest.raises(ConfigError, match=r"model\.head\.loss\.cls_target: cls_target='assigner' needs a rule"):
        load_config("yolov8n_tal.py", options)


def test_train_refuses_the_pair_before_the_work_dir_exists(tmp_path, capsys):
    work = tmp_path / "run"
    rc = load_tool("train").main([TINY_V8, "--work-dir", str(work), "--cfg-options", SWAP + "atss",
                                  "model.head.loss.cls_target=assigner"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and not work.exists()
    assert len(err) == 1 and "ATSSAssigner does not" in err[0] and "cls_target='auto'" in err[0]


def test_built_pipeline_and_assigner_schedule_swap_refuse_the_pair():
    with pytest.raises(ValueError, match="MinPositives\\(ATSSAssigner\\) does not"):
        YOLOLossPipeline(assigner=MinPositives(ATSSAssigner()), cls_target="assigner")
    model = instantiate(load_config(TINY_V8, ["model.head.loss.cls_target=assigner"]).model)
    with pytest.raises(ConfigError, match="ATSSAssigner does not"):
        model.head.assigner = ATSSAssigner()  # what schedule.assigner_switches does at an epoch start
    assert isinstance(model.head.assigner, TaskAlignedAssigner)
    model.head.assigner = SimOTAAssigner()
    auto = instantiate(load_config(TINY_V8).model)
    auto.head.assigner = ATSSAssigner()
    assert isinstance(auto.head.assigner, ATSSAssigner)


@pytest.mark.parametrize("preset", ["atss", "iou", "fcos", "grid", "simota", "dsl", "ATSSAssigner(topk=9)"])
def test_yolov8n_config_takes_every_rule_with_one_override(preset):
    """The issue's command: configs/yolov8n_tal.py with one assigner override trains (a loss step at 64 px)."""
    cfg = load_config(str(ROOT / "detkit" / "configs" / "yolov8n_tal.py"), [SWAP + preset])
    torch.manual_seed(0)
    model = instantiate(cfg.model).train()
    batch = dict(images=torch.rand(1, 3, 64, 64), gt_boxes=torch.tensor([[[8.0, 8.0, 40.0, 52.0]]]),
                 gt_labels=torch.tensor([[5]]), gt_mask=torch.tensor([[True]]))
    losses = model.loss(batch)
    total = sum(v for k, v in losses.items() if k.startswith("loss_"))
    total.backward()
    assert torch.isfinite(total) and float(losses["stat_pos_per_gt"]) > 0
