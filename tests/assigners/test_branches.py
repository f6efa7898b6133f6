"""detkit.assigners.branches: which rule each branch of a dual-branch head gets from a tool's --assigners."""

from __future__ import annotations

import pytest

from detkit.assigners import ATSSAssigner, MinPositives, TaskAlignedAssigner
from detkit.assigners.branches import (
    BranchRules,
    branch_rules,
    has_one2one,
    one_to_one_call,
    one_to_one_problem,
    split_pair,
)
from detkit.errors import ConfigError

TAL_U = ("TaskAlignedAssigner(topk=10, alpha=0.5, beta=6.0, iou_mode='ciou', resolve='all_gts', "
         "center_min_side=16.0, keep_zero_metric=True)")


@pytest.mark.parametrize("entry, pair", [
    ("atss", None),
    ("TaskAlignedAssigner(topk=3)", None),
    ("tal:tal-ultralytics", ("tal", "tal-ultralytics")),
    ("ATSSAssigner(topk=9) : TaskAlignedAssigner(topk=1)", ("ATSSAssigner(topk=9)", "TaskAlignedAssigner(topk=1)")),
    ("X(a={'k': 1}):Y(s='a:b')", ("X(a={'k': 1})", "Y(s='a:b')")),  # colons inside brackets and quotes stay
])
def test_split_pair(entry, pair):
    assert split_pair(entry) == pair


@pytest.mark.parametrize("entry", ["a:b:c", ":tal", "tal:"])
def test_split_pair_refuses_malformed_pairs(entry):
    with pytest.raises(ConfigError, match="ONE2MANY:ONE2ONE"):
        split_pair(entry)


def test_branch_rules_per_branch():
    assert branch_rules("atss", "one2many") == BranchRules("atss", None)
    assert branch_rules("atss", "one2one") == BranchRules(None, "atss")  # checked once built, not here
    assert branch_rules("config", "both") == BranchRules("config", "config")
    assert branch_rules("atss:tal-ultralytics", "both") == BranchRules("atss", "tal-ultralytics")
    # one rule on both: its one-to-one form, the same rule and metric at topk=1
    rules = branch_rules("tal-ultralytics", "both")
    assert rules.one2many == "tal-ultralytics" and rules.one2one == TAL_U.replace("topk=10", "topk=1")
    assert rules.overrides() == [  # None first: the rule replaces the config's whole, never merges into it
        "model.head.loss.assigner=None", f"model.head.loss.assigner={TAL_U}",
        "model.head.one2one_loss.assigner=None",
        f"model.head.one2one_loss.assigner={TAL_U.replace('topk=10', 'topk=1')}"]
    assert BranchRules("config", "tal").overrides() == [
        "model.head.one2one_loss.assigner=None",
        "model.head.one2one_loss.assigner=TaskAlignedAssigner(topk=13, alpha=1.0, beta=6.0)"]
    assert BranchRules(None, "config").items() == [("one2one", "config")]


def test_branch_rules_refusals():
    with pytest.raises(ConfigError, match="add --branch both"):
        branch_rules("atss:tal", "one2many")
    with pytest.raises(ConfigError, match="--branch 'other'"):
        branch_rules("atss", "other")
    with pytest.raises(ConfigError, match="only a task-aligned rule has; name that branch.s rule with a pair atss:"):
        branch_rules("atss", "both")
    with pytest.raises(ConfigError, match="only a task-aligned rule"):
        branch_rules("atss+minpos", "both")


def test_one_to_one_call_keeps_one_to_one_rules_and_wraps_min_positives():
    assert one_to_one_call("TaskAlignedAssigner(topk=1, alpha=2.0)") == "TaskAlignedAssigner(topk=1, alpha=2.0)"
    assert one_to_one_call("TaskAlignedAssigner(topk=7, topk2=1)") == "TaskAlignedAssigner(topk=7, topk2=1)"
    assert one_to_one_call("TaskAlignedAssigner(topk=7, topk2=3)") == "TaskAlignedAssigner(topk=1, topk2=3)"
    assert one_to_one_call("tal+minpos") == ("MinPositives(assigner=TaskAlignedAssigner(topk=1, alpha=1.0, "
                                             "beta=6.0), min_pos_per_gt=1)")
    with pytest.raises(ConfigError, match="only a task-aligned rule"):
        one_to_one_call("tal+minpos2")


def test_one_to_one_problem():
    assert one_to_one_problem(TaskAlignedAssigner(topk=1)) is None
    assert one_to_one_problem(TaskAlignedAssigner(topk=13)) == (
        "TaskAlignedAssigner(topk=13) gives a GT up to 13 positives; a one-to-one branch needs topk=1 or topk2=1")
    assert one_to_one_problem(TaskAlignedAssigner(topk=7, topk2=1)) is None  # YOLO26's one-to-one rule
    assert one_to_one_problem(TaskAlignedAssigner(topk=7, topk2=3)) == (
        "TaskAlignedAssigner(topk=7, topk2=3) gives a GT up to 3 positives; "
        "a one-to-one branch needs topk=1 or topk2=1")
    assert one_to_one_problem(MinPositives(TaskAlignedAssigner(topk=1))) is None
    assert "min_pos_per_gt=2" in one_to_one_problem(MinPositives(TaskAlignedAssigner(topk=1), min_pos_per_gt=2))
    assert one_to_one_problem(ATSSAssigner()) == "ATSSAssigner gives a GT several positives (a one-to-many rule)"

    class OwnRule:  # a rule from outside detkit is taken on trust
        def assign(self, *args, **kwargs):
            raise NotImplementedError

    assert one_to_one_problem(OwnRule()) is None


def test_has_one2one():
    assert has_one2one({"one2one": True, "one2one_loss": {"x": 1}})
    assert not has_one2one({"one2one": True, "one2one_loss": None})  # inference-only one-to-one branches
    assert not has_one2one({"one2one": False}) and not has_one2one(None)
