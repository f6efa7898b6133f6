"""compare_assigners and ablate_assigners on a dual-branch head (YOLOv10's one-to-one branch): --branch says
which branch a rule is for, each rule sees its own branch's predictions, the one-to-one branch stays one-to-one,
and the reports name each branch's rule."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from detkit.assigners import TaskAlignedAssigner
from detkit.config import load_config
from tests.fixtures.tools import load_tool

ROOT = Path(__file__).resolve().parents[2]
DUAL = str(ROOT / "tests" / "engine" / "configs" / "shapes_tiny_one2one.py")
SINGLE = str(ROOT / "tests" / "engine" / "configs" / "shapes_tiny_decoupled.py")


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {r["assigner"]: r for r in csv.DictReader(f)}


def test_compare_both_branches_labels_rows_by_branch(tmp_path):
    shapes, out = tmp_path / "shapes", tmp_path / "out"
    rc = load_tool("compare_assigners").main([
        DUAL, "--branch", "both", "--assigners", "config", "tal", "atss:TaskAlignedAssigner(topk=1, alpha=2.0)",
        "--images", "8", "--samples", "1", "--out", str(out), "--cfg-options", f"data.val.dataset.root='{shapes}'"])
    assert rc == 0
    rows = _rows(out / "assigners.csv")
    assert list(rows) == [
        "TaskAlignedAssigner [one2many]", "TaskAlignedAssigner [one2one]",
        "tal [one2many]", "TaskAlignedAssigner(topk=1, alpha=1.0, beta=6.0) [one2one]",  # tal's one-to-one form
        "atss [one2many]", "TaskAlignedAssigner(topk=1, alpha=2.0) [one2one]"]
    num_gt = float(rows["atss [one2many]"]["num_gt"])
    for name, r in rows.items():
        if name.endswith("[one2one]"):  # at most one positive per GT
            assert float(r["num_pos"]) <= num_gt and float(r["pos_per_gt_median"]) <= 1
        else:
            assert float(r["pos_per_gt_mean"]) > 1
    assert "| atss [one2many] |" in (out / "assigners.md").read_text()


def test_compare_one_branch_of_a_single_branch_head_keeps_its_labels(tmp_path):
    shapes, out = tmp_path / "shapes", tmp_path / "out"
    assert load_tool("compare_assigners").main([
        SINGLE, "--assigners", "config", "atss", "--images", "4", "--samples", "0", "--out", str(out),
        "--cfg-options", f"data.val.dataset.root='{shapes}'"]) == 0
    assert list(_rows(out / "assigners.csv")) == ["TaskAlignedAssigner", "atss"]


@pytest.mark.parametrize("tool", ["compare_assigners", "ablate_assigners"])
@pytest.mark.parametrize("config, argv, message", [
    (SINGLE, ["--branch", "one2one", "--assigners", "tal"], "shapes_tiny_decoupled.py's head has no one-to-one branch"),
    (DUAL, ["--branch", "one2one", "--assigners", "atss"],
     "the one-to-one branch must stay one-to-one: ATSSAssigner gives a GT several positives (a one-to-many rule)"),
    (DUAL, ["--branch", "one2one", "--assigners", "tal"], "TaskAlignedAssigner(topk=13) gives a GT up to 13 positives"),
    (DUAL, ["--branch", "both", "--assigners", "atss"], "--assigners 'atss' with --branch both: the one-to-one branch "
                                                        "takes the rule at topk=1, which only a task-aligned rule has"),
    (DUAL, ["--assigners", "atss:tal"], "a pair ONE2MANY:ONE2ONE sets both branches; add --branch both"),
])
def test_nonsensical_branch_rules_are_one_line_errors(tmp_path, capsys, tool, config, argv, message):
    out = tmp_path / "out"
    flag = "--out" if tool == "compare_assigners" else "--work-dir"
    assert load_tool(tool).main([config, *argv, flag, str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not out.exists()


def test_ablation_rows_set_the_named_branch(tmp_path):
    tool = load_tool("ablate_assigners")
    args = tool.parse_args([DUAL, "--branch", "one2one", "--assigners", "TaskAlignedAssigner(topk=1, alpha=2.0)",
                            "config"])
    rows, _, _, _ = tool.plan(args)
    assert [(r.label, r.branch) for r in rows] == [("TaskAlignedAssigner(topk=1, alpha=2.0) [one2one]", "one2one"),
                                                   ("config [one2one]", "one2one")]
    own = load_config(DUAL)
    cfg = tool.run_config(rows[0], 0, [])
    # exactly the named rule: not merged into the config's TaskAlignedAssigner call (its CIoU metric etc.)
    assert cfg.model.head.one2one_loss.assigner == {"_target_": TaskAlignedAssigner, "topk": 1, "alpha": 2.0}
    assert cfg.model.head.loss.assigner == own.model.head.loss.assigner  # the one-to-many branch untouched
    both = tool.AblationRow("p", DUAL, "tal:TaskAlignedAssigner(topk=1, beta=3.0)", branch="both")
    cfg = tool.run_config(both, 0, [])
    assert tool.rules_text(cfg) == ("one-to-many branch `TaskAlignedAssigner(topk=13, alpha=1.0, beta=6.0)`, "
                                    "one-to-one branch `TaskAlignedAssigner(topk=1, beta=3.0)`")
    # and on the one branch of a single-branch head too: the tal preset over the config's tal-ultralytics
    plain = tool.run_config(tool.AblationRow("tal", SINGLE, "tal"), 0, [])
    assert tool.rules_text(plain) == "assigner `TaskAlignedAssigner(topk=13, alpha=1.0, beta=6.0)`"
    spec_rows = tool.rows_from_spec({"rows": [{"config": DUAL, "assigner": "atss:tal+minpos", "branch": "both"}]},
                                    "s.toml")
    assert spec_rows[0].branch == "both" and spec_rows[0].label == "atss:tal+minpos @ shapes_tiny_one2one"


@pytest.mark.slow
def test_ablation_trains_the_one_to_one_branch_with_the_named_rule(tmp_path):
    shapes, work = tmp_path / "shapes", tmp_path / "abl"
    rc = load_tool("ablate_assigners").main([
        DUAL, "--branch", "one2one", "--assigners", "TaskAlignedAssigner(topk=1, alpha=2.0)", "--work-dir", str(work),
        "--no-progress", "--cfg-options", "train.epochs=1", "train.checkpoint.interval_iters=0",
        f"data.train.dataset.root='{shapes}'", f"data.val.dataset.root='{shapes}'"])
    assert rc == 0
    dumped = load_config(str(work / "TaskAlignedAssigner_topk=1_alpha=2.0_one2one" / "seed0" / "config.py"))
    assert dumped.model.head.one2one_loss.assigner.alpha == 2.0 and dumped.model.head.loss.assigner.alpha == 0.5
    md = (work / "ablation.md").read_text()
    assert ("- TaskAlignedAssigner(topk=1, alpha=2.0) [one2one]: `" + DUAL + "`, one-to-many branch "
            "`TaskAlignedAssigner(topk=10, alpha=0.5, ") in md
    assert "one-to-one branch `TaskAlignedAssigner(topk=1, alpha=2.0)`" in md
