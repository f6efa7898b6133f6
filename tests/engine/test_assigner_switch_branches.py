"""schedule.assigner_switches on a dual-branch head: a bare rule switches the one-to-many branch,
dict(one2one=...) the one-to-one branch (kept one-to-one), each branch keeps its rule until an entry names it
again, also when a run resumes at a later epoch."""

from __future__ import annotations

from pathlib import Path

import pytest

from detkit.assigners import ATSSAssigner, TaskAlignedAssigner
from detkit.config import instantiate, load_config
from detkit.engine.settings import ScheduleSettings
from detkit.engine.train_utils import EpochSwitches
from detkit.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
DUAL = str(ROOT / "tests" / "engine" / "configs" / "shapes_tiny_one2one.py")
SINGLE = str(ROOT / "tests" / "engine" / "configs" / "shapes_tiny_decoupled.py")

SCHEDULE = [(0, "atss"), (1, {"one2one": "TaskAlignedAssigner(topk=1, alpha=2.0)"}),
            (3, {"one2many": "tal", "one2one": "TaskAlignedAssigner(topk=1, alpha=3.0)"})]


def _switches(schedule=SCHEDULE, epochs=5) -> EpochSwitches:
    settings = ScheduleSettings.from_config({"assigner_switches": schedule}, epochs=epochs)
    return EpochSwitches(settings.assigner_switches, no_mosaic_last_epochs=0, epochs=epochs)


def _rules(head) -> tuple[str, int, float]:
    """(one-to-many rule's class, its topk or 0, one-to-one rule's alpha)."""
    o2m, o2o = head.assigner, head.one2one_pipeline.assigner
    assert isinstance(o2o, TaskAlignedAssigner) and o2o.topk == 1
    return type(o2m).__name__, getattr(o2m, "topk", 0), o2o.alpha


@pytest.fixture(scope="module")
def detector():
    return instantiate(load_config(DUAL).model)


def test_each_branch_switches_at_its_own_entries(detector):
    head, switches = detector.head, _switches()
    assert _rules(head) == ("TaskAlignedAssigner", 10, 0.5)  # the config's: tal-ultralytics and its topk=1 form
    seen = []
    for epoch in range(5):
        switches.apply(epoch, detector, dataset=None)
        seen.append(_rules(head))
    assert seen == [("ATSSAssigner", 9, 0.5), ("ATSSAssigner", 9, 2.0), ("ATSSAssigner", 9, 2.0),
                    ("TaskAlignedAssigner", 13, 3.0), ("TaskAlignedAssigner", 13, 3.0)]


@pytest.mark.parametrize("epoch, expected", [(1, ("ATSSAssigner", 9, 2.0)), (2, ("ATSSAssigner", 9, 2.0)),
                                             (4, ("TaskAlignedAssigner", 13, 3.0))])
def test_a_resumed_run_gets_each_branch_s_rule_in_force(epoch, expected):
    detector = instantiate(load_config(DUAL).model)
    _switches().apply(epoch, detector, dataset=None)  # a fresh run object starting at a later epoch
    assert _rules(detector.head) == expected


def test_a_bare_rule_switches_only_the_one_to_many_branch(detector):
    switches = _switches([(0, "atss")])
    o2o = detector.head.one2one_pipeline.assigner
    switches.apply(0, detector, dataset=None)
    assert isinstance(detector.head.assigner, ATSSAssigner) and detector.head.one2one_pipeline.assigner is o2o


@pytest.mark.parametrize("config, switch, message", [
    (DUAL, "{'one2one': 'atss'}", "schedule.assigner_switches[0][1].one2one: the one-to-one branch must stay "
                                  "one-to-one: ATSSAssigner gives a GT several positives (a one-to-many rule)"),
    (DUAL, "{'one2one': 'tal'}", "TaskAlignedAssigner(topk=13) gives a GT up to 13 positives"),
    (DUAL, "{'o2o': 'tal'}", "schedule.assigner_switches[0][1]: a mapping names the branches it switches, one or "
                             "more of one2many, one2one; got ['o2o']"),
    (DUAL, "{}", "a mapping names the branches it switches"),
    (SINGLE, "{'one2one': 'TaskAlignedAssigner(topk=1)'}",
     "schedule.assigner_switches[0][1].one2one: the model's head has no one-to-one branch"),
])
def test_nonsensical_branch_switches_are_refused_when_the_config_loads(config, switch, message):
    with pytest.raises(ConfigError) as info:
        load_config(config, [f"schedule.assigner_switches=[(1, {switch})]"])
    assert message in str(info.value)


def test_a_one_to_many_branch_switch_loads_on_a_single_branch_head():
    cfg = load_config(SINGLE, ["schedule.assigner_switches=[(1, {'one2many': 'atss'})]"])
    assert cfg.schedule.assigner_switches[0][1] == {"one2many": "atss"}


def test_set_branch_assigner_refusals(detector):
    from detkit.assigners.branches import set_branch_assigner

    with pytest.raises(ValueError, match="must stay one-to-one: ATSSAssigner gives a GT several positives"):
        set_branch_assigner(detector.head, "one2one", ATSSAssigner())
    single = instantiate(load_config(SINGLE).model)
    with pytest.raises(ValueError, match="DecoupledHead has no trained one2one branch"):
        set_branch_assigner(single.head, "one2one", TaskAlignedAssigner(topk=1))
