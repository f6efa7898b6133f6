"""The rule conformance kit (detkit.testing.check_assigner): every built-in rule and preset conforms, and
deliberately broken rules are each reported under the check they break, with inputs that show it."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch

from detkit.assigners import MinPositives
from detkit.assigners.base import AssignResult
from detkit.assigners.presets import ASSIGNER_PRESETS, build_preset
from detkit.boxes import valid_gt_mask
from detkit.extras import MissingExtraError
from detkit.testing import CHECKS, check_assigner, random_inputs

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("custom_assigner_example", ROOT / "examples" / "custom_assigner.py")
example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(example)
NearestInsideAssigner = example.NearestInsideAssigner

# Rules whose results depend on GT order where two GTs tie, by design (the contract's gt_order is on tie-free inputs).
ORDER_TIES = {"tal-ultralytics": "a prior of zero metric for several GTs goes to the lowest GT index, as Ultralytics"}


@pytest.mark.parametrize("name", [*ASSIGNER_PRESETS, "atss+minpos", "simota+minpos2"])
def test_every_preset_conforms(name):
    skip = {"gt_order": ORDER_TIES[name]} if name in ORDER_TIES else None
    report = check_assigner(build_preset(name), skip=skip, examples=4)
    report.raise_for_failures()
    expected = set(CHECKS) - set(report.skipped)
    assert set(report.passed) == expected
    assert set(report.skipped) <= {"gt_order", "memory_knob", "grid_vs_all_pairs", "uses_predictions"}
    box_only = getattr(build_preset(name), "uses_predictions", True) is False
    assert ("uses_predictions" in report.passed) == box_only


def test_the_example_rule_conforms_and_is_a_real_rule():
    report = check_assigner(NearestInsideAssigner(k=3), examples=6)
    assert report.ok, str(report)
    # Hand-made case: one 16 px square GT centred on (16, 16), k=3.
    inputs = random_inputs(0, batch=1, num_gts=1)
    inputs.gt_boxes[:] = torch.tensor([8.0, 8.0, 24.0, 24.0])
    res = inputs.run(NearestInsideAssigner(k=3))
    centres = (inputs.priors[:, :2] + inputs.priors[:, 2:]) / 2
    chosen = centres[res.pos_mask[0]]
    # Nearest: the stride-32 cell centred on (16, 16) (2 anchors, distance 0); the 3rd nearest ties among
    # the four stride-8 cells around it (4 px away on each axis): all taken. Stride-16 centres (8, 24) lie on
    # the GT's sides, not inside.
    cells = [(16.0, 16.0)] * 2 + [(12.0, 12.0), (20.0, 12.0), (12.0, 20.0), (20.0, 20.0)] * 2
    assert sorted(map(tuple, chosen.tolist())) == sorted(cells)
    assert res.gt_index[0, res.pos_mask[0]].eq(0).all() and res.num_pos == 10
    assert res.labels[0, res.pos_mask[0]].eq(inputs.gt_labels[0, 0]).all()


# ------------------------------------------------------------------------------------------ broken rules


class LetsPaddingWin(NearestInsideAssigner):
    """Ignores gt_mask: a padding row holding a real-looking box takes priors."""

    def assign(self, priors, gt_boxes, gt_labels, gt_mask, **kw) -> AssignResult:
        return super().assign(priors, gt_boxes, gt_labels, torch.ones_like(gt_mask), **kw)


class DependsOnTheBatch(NearestInsideAssigner):
    """k is the batch's mean count of valid GTs: an image's result depends on its batch-mates."""

    def assign(self, priors, gt_boxes, gt_labels, gt_mask, **kw) -> AssignResult:
        k = max(1, int(valid_gt_mask(gt_boxes, gt_mask).sum()) // gt_mask.shape[0])
        return NearestInsideAssigner(k=k).assign(
            priors, gt_boxes, gt_labels, gt_mask, **kw)


class CrashesWithoutGT(NearestInsideAssigner):
    """Reduces over an empty GT dimension when M = 0."""

    def assign(self, priors, gt_boxes, gt_labels, gt_mask, **kw) -> AssignResult:
        if gt_boxes.shape[1] == 0:
            gt_boxes.new_zeros(gt_boxes.shape[0], 0, 8).max(dim=1)  # IndexError: a reduction over M = 0
        return super().assign(priors, gt_boxes, gt_labels, gt_mask, **kw)


class WrongDtype(NearestInsideAssigner):
    """Returns gt_index as int32 and iou as float64."""

    def assign(self, priors, gt_boxes, gt_labels, gt_mask, **kw) -> AssignResult:
        res = super().assign(priors, gt_boxes, gt_labels, gt_mask, **kw)
        res.gt_index, res.iou = res.gt_index.int(), res.iou.double()
        return res


class TwoBugs(NearestInsideAssigner):
    """k from the batch's valid GTs and from the padded row count M: both bugs reported, not just the first."""

    def assign(self, priors, gt_boxes, gt_labels, gt_mask, **kw) -> AssignResult:
        k = int(valid_gt_mask(gt_boxes, gt_mask).sum()) // gt_mask.shape[0] + gt_mask.shape[1]
        return NearestInsideAssigner(k=k).assign(priors, gt_boxes, gt_labels, gt_mask, **kw)


def test_a_padding_row_that_wins_is_reported_as_padding_rows():
    report = check_assigner(LetsPaddingWin(), examples=4)
    assert report.failed == ["no_gt", "padding_rows"]  # an image whose rows are all padding gets positives too
    failure = next(f for f in report.failures if f.check == "padding_rows")
    assert "gt_index on a padding or invalid GT row" in failure.message
    assert "random boxes" in failure.reproducer and "inserted at row 2" in failure.reproducer
    # the failure carries its inputs: running them again shows the padding row winning
    again = failure.inputs.run(LetsPaddingWin())
    padded = ~failure.inputs.gt_mask.gather(1, again.gt_index.clamp(min=0))
    assert (padded & again.pos_mask).any()


def test_a_rule_that_depends_on_the_batch_is_reported_as_batch_per_image():
    report = check_assigner(DependsOnTheBatch(), examples=4)
    assert "batch_per_image" in report.failed
    assert set(report.failed) <= {"batch_per_image", "adversarial"}
    failure = next(f for f in report.failures if f.check == "batch_per_image")
    assert re.match(r"image \d alone differs from its row of the batch: \w+ differs at", failure.message)
    assert failure.reproducer.startswith("image ")


def test_a_rule_that_crashes_without_gt_is_reported_as_no_gt():
    report = check_assigner(CrashesWithoutGT(), use_hypothesis=False, examples=4, seed=3)
    assert "no_gt" in report.failed
    failure = next(f for f in report.failures if f.check == "no_gt")
    assert failure.message.startswith("raised IndexError") and "test_conformance.py" in failure.message
    assert "M = 0 GT rows" in failure.reproducer
    assert {"invariants", "padding_rows", "batch_per_image", "fp16", "gt_order"} <= set(report.passed)


def test_a_failure_only_hypothesis_finds_is_reported_once_with_its_knobs():
    class CrashesOnManyGTs(NearestInsideAssigner):
        def assign(self, priors, gt_boxes, *args, **kw):
            if gt_boxes.shape[1] > 100:
                raise RuntimeError("too many GTs")
            return super().assign(priors, gt_boxes, *args, **kw)

    report = check_assigner(CrashesOnManyGTs(), examples=12)
    assert report.failed == ["adversarial"] and len(report.failures) == 1
    failure = report.failures[0]
    assert failure.message.startswith("raised RuntimeError: too many GTs")
    assert failure.reproducer.startswith("adversarial _Knobs(") and failure.inputs.gt_boxes.shape[1] > 100
    with pytest.raises(RuntimeError, match="too many GTs"):
        failure.inputs.run(CrashesOnManyGTs())


def test_a_box_only_rule_that_reads_scores_is_reported_as_uses_predictions():
    class ReadsScores(NearestInsideAssigner):  # says box-only, yet reads pred_scores
        def assign(self, priors, gt_boxes, gt_labels, gt_mask, *, pred_scores=None, **kw):
            res = super().assign(priors, gt_boxes, gt_labels, gt_mask, **kw)
            keep = pred_scores.amax(-1) > 0.05  # (B, N)
            res.gt_index = res.gt_index.masked_fill(~keep, -1)
            res.pos_mask &= keep
            res.labels = res.labels.masked_fill(~keep, -1)
            res.iou = res.iou.masked_fill(~keep, 0.0)
            return res

    report = check_assigner(ReadsScores(), examples=2)
    assert report.failed == ["uses_predictions"]
    assert report.failures[0].message.startswith("raised AttributeError: 'NoneType' object has no attribute 'amax'")
    assert report.failures[0].reproducer.startswith("pred_scores=None (uses_predictions = False) with: ")


def test_a_wrong_dtype_is_reported_once_as_invariants():
    report = check_assigner(WrongDtype(), examples=2)
    assert report.failed == ["invariants"]
    messages = sorted(f.message for f in report.failures)
    assert messages == ["gt_index must be torch.int64, got torch.int32", "iou must be torch.float32, got torch.float64"]
    assert str(report).count("FAILED  invariants: ") == 2
    assert "no_gt" in report.passed  # the values are still read and judged


def test_every_failure_is_listed_not_just_the_first():
    report = check_assigner(TwoBugs(), examples=2, use_hypothesis=False)
    assert {"padding_rows", "batch_per_image"} <= set(report.failed)
    text = str(report)
    assert text.startswith("check_assigner(TwoBugs()): FAILS ")
    assert text.count("FAILED  batch_per_image") == 1
    # every padding variant fails (6 inputs), 3 are shown and the rest counted
    assert sum(f.check == "padding_rows" for f in report.failures) == 6
    padding = [line for line in text.splitlines() if line.startswith("  FAILED  padding_rows")]
    assert len(padding) == 4 and padding[-1] == "  FAILED  padding_rows: 3 more (report.failures lists them)"
    with pytest.raises(AssertionError, match="FAILED  padding_rows"):
        report.raise_for_failures()


def test_a_result_that_is_not_an_assign_result_is_not_judged_further():
    class ReturnsATuple(NearestInsideAssigner):
        def assign(self, *args, **kw):
            res = super().assign(*args, **kw)
            return res.gt_index, res.iou

    report = check_assigner(ReturnsATuple(), examples=1)
    assert report.failed == ["invariants"]
    assert [f.message for f in report.failures] == ["assign returned tuple, not an AssignResult"]
    assert report.skipped["no_gt"].startswith("not judged")


# ------------------------------------------------------------------------------------------ options


def test_memory_knob_is_varied_on_a_copy_and_a_knob_that_changes_results_fails():
    class ChunkChangesK(NearestInsideAssigner):
        chunk = None

        def assign(self, *args, **kw):
            return NearestInsideAssigner(k=3 if self.chunk is None else self.chunk).assign(*args, **kw)

    rule = ChunkChangesK()
    report = check_assigner(rule, checks=["memory_knob"], memory_knob=("chunk", [1, 2, 3]))
    assert report.failed == ["memory_knob"] and rule.chunk is None  # the rule itself is left alone
    assert [f.message.split(" changed")[0] for f in report.failures] == ["chunk=1", "chunk=2"]  # 3 is the default
    assert check_assigner(rule, checks=["memory_knob"]).passed == ["memory_knob"]  # the pair budget alone
    wrapped = MinPositives(ChunkChangesK())
    report = check_assigner(wrapped, checks=["memory_knob"], memory_knob=("chunk", [2]))
    assert [f.message.split(" changed")[0] for f in report.failures] == ["chunk=2"] and wrapped.assigner.chunk is None
    named = check_assigner(NearestInsideAssigner(), checks=["memory_knob"], memory_knob=("budget", [1]))
    assert named.failed == ["memory_knob"] and "no attribute 'budget'" in named.failures[0].message


def test_skip_checks_and_unknown_names():
    report = check_assigner(NearestInsideAssigner(), checks=["no_gt", "gt_order"], skip={"gt_order": "why"})
    assert report.passed == ["no_gt"] and report.skipped == {"gt_order": "why"}
    assert "skipped gt_order: why" in str(report)
    with pytest.raises(ValueError, match=r"unknown checks \['no_such'\]"):
        check_assigner(NearestInsideAssigner(), checks=["no_such"])


def test_seeded_batches_without_hypothesis(monkeypatch):
    monkeypatch.setitem(sys.modules, "hypothesis", None)  # import hypothesis -> ImportError
    report = check_assigner(NearestInsideAssigner(), checks=["adversarial"], examples=3, seed=5)
    assert report.passed == ["adversarial"]
    assert report.notes == ["hypothesis is not installed: adversarial batches drawn from random.Random(5) instead "
                            "(pip install hypothesis, or the dev extra)"]
    with pytest.raises(MissingExtraError, match="check_assigner.use_hypothesis=True. needs the hypothesis package"):
        check_assigner(NearestInsideAssigner(), checks=["adversarial"], use_hypothesis=True)


def test_the_same_seed_gives_the_same_report():
    a = check_assigner(DependsOnTheBatch(), seed=7, examples=3, use_hypothesis=False)
    b = check_assigner(DependsOnTheBatch(), seed=7, examples=3, use_hypothesis=False)
    assert [(f.check, f.message, f.reproducer) for f in a.failures] == [
        (f.check, f.message, f.reproducer) for f in b.failures]


# ------------------------------------------------------------------------------------------ the README's rule


def readme_rule_block() -> str:
    """The python block of the README's "A rule of your own" section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### A rule of your own", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```python\n(.*?)^```", section, flags=re.S | re.M)
    assert len(blocks) == 1, "the section holds one python block"
    return blocks[0]


def test_the_readme_rule_is_the_example_file_and_passes(capsys):
    block = readme_rule_block()
    assert block in (ROOT / "examples" / "custom_assigner.py").read_text(encoding="utf-8")
    rule_lines = block[block.index("class "):block.index('if __name__')].strip().splitlines()
    assert len(rule_lines) <= 30
    exec(compile(block, "README.md", "exec"), {"__name__": "__main__"})  # runs check_assigner, prints its report
    out = capsys.readouterr().out
    assert out.startswith("check_assigner(NearestInsideAssigner()): conforms\n")
    assert [line.split()[1] for line in out.splitlines()[1:]] == list(CHECKS)  # every check ran and passed


def test_the_example_rule_trains_from_a_config_override(monkeypatch):
    from detkit.config import instantiate, load_config

    monkeypatch.syspath_prepend(str(ROOT))  # examples/ importable, as from a checkout's root
    cfg = load_config("shapes_atss.py",
                      overrides=["model.head.loss.assigner=examples.custom_assigner.NearestInsideAssigner(k=4)"])
    model = instantiate(cfg.model)
    assert type(model.head.assigner).__name__ == "NearestInsideAssigner" and model.head.assigner.k == 4
    torch.manual_seed(0)
    batch = dict(images=torch.rand(2, 3, 64, 64),
                 gt_boxes=torch.tensor([[[4.0, 6, 40, 44], [0, 0, 0, 0]], [[10.0, 10, 30, 26], [36, 30, 62, 60]]]),
                 gt_labels=torch.tensor([[1, 0], [0, 2]]), gt_mask=torch.tensor([[True, False], [True, True]]))
    model.train()
    out = model.loss(batch)
    total = sum(v for k, v in out.items() if k.startswith("loss_"))
    assert torch.isfinite(total) and total > 0
    assert out["stat_num_gt"].item() == 3 and out["stat_gt_no_pos"].item() == 0
