"""The rule conformance kit: :func:`check_assigner` runs the contract every assigner keeps.

A rule of your own (or a built-in one, or a preset) is checked on generated inputs, and every
broken promise is reported by the name of the check it broke, with a short description of the
inputs that show it (and the inputs themselves, to run again)::

    from detkit.testing import check_assigner

    report = check_assigner(MyAssigner(k=3))
    print(report)                  # one line per check: passed, FAILED (why, on what), skipped (why)
    report.raise_for_failures()    # in a test: an AssertionError listing every failure

The checks (:data:`CHECKS`), each on a small prior grid (64 px input, strides 8 / 16 / 32,
2 anchors per cell: 168 priors) and padded batches of random GTs with predictions:

* ``invariants``: the result is an :class:`~detkit.assigners.AssignResult` of ``(B, N)`` fields
  with the right dtypes (``gt_index`` / ``labels`` long, masks bool, ``iou`` float32);
  ``pos_mask == gt_index >= 0``; ``gt_index`` -1 where not positive and only ever a valid GT row
  (:func:`detkit.boxes.valid_gt_mask`); ``labels`` the assigned GT's class, -1 elsewhere;
  ``ignore_mask`` never on a positive; ``iou`` finite, in [0, 1], 0 where not positive.
* ``no_gt``: every GT row padding, zero GT rows (``M = 0``), one image of three without GTs:
  nothing positive, nothing ignored in those images, never an exception.
* ``padding_rows``: padding rows inserted among the GTs holding garbage, NaN, 1e30 and inf boxes
  (and rows marked valid whose box is NaN or of zero area) change nothing but the GT indices.
* ``batch_per_image``: each image of a batch assigned alone gives its row of the batch's result.
* ``fp16``: fp16 boxes and predictions give a valid result equal to the fp32 one on the
  fp16-rounded values (assignment runs in fp32).
* ``gt_order``: permuting the GT rows permutes ``gt_index`` and nothing else (random boxes, so
  no ties). Rules where the later GT wins a shared prior by design skip it
  (``skip={"gt_order": "why"}``).
* ``memory_knob``: the candidate tables' pair budget (:func:`detkit.assigners.candidates.pair_budget`:
  1 pair, a few GTs, most of them per chunk), and a memory attribute of the rule's own named by
  ``memory_knob=``, change no bit of the result.
* ``grid_vs_all_pairs``: ``assign(PriorGrid)`` (the grid's candidate windows) equals ``assign`` of
  the grid's bare boxes with the same level counts and strides (the all-pairs table). A rule that
  needs the grid itself and refuses bare priors with a ``ValueError`` skips it (the report gives
  the message).
* ``uses_predictions``: a rule that declares ``uses_predictions = False`` gives the same result
  without ``pred_scores`` (None), as the loss pipeline calls it (it builds no scores for such a rule);
  prediction-aware rules skip it.
* ``adversarial``: batches drawn by `hypothesis <https://hypothesis.works>`_ (0 to 300 GTs of
  extreme sizes and aspect ratios, far outside the image, duplicated, zero-size, padding rows of
  garbage, fp16): never an exception, the invariants, and batch = per image. Without hypothesis
  installed the same knobs are drawn from a seeded generator instead and the report says so in a
  note (``use_hypothesis=True`` makes its absence an error naming the extra that installs it).

Box-only and prediction-aware rules are checked alike: every call passes ``num_level_priors``,
``prior_strides``, ``pred_boxes (B, N, 4)`` and ``pred_scores (B, N, C)`` (probabilities), as the
loss pipeline does. Results are compared field by field, every field of the result's dataclass
(``align_metric``, ``score_target`` and subclass fields such as ``forced_mask`` included), bit for
bit.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
from torch import Tensor

from detkit.anchors import PriorGrid, YOLOAnchorGenerator
from detkit.assigners.base import NOT_ASSIGNED, Assigner, AssignResult
from detkit.assigners.candidates import pair_budget
from detkit.boxes import valid_gt_mask

__all__ = ["CHECKS", "AssignInputs", "CheckFailure", "ConformanceReport", "check_assigner", "random_inputs"]

CHECKS: tuple[str, ...] = ("invariants", "no_gt", "padding_rows", "batch_per_image", "fp16", "gt_order",
                           "memory_knob", "grid_vs_all_pairs", "uses_predictions", "adversarial")
IMAGE = 64  # side of the generated input in pixels
STRIDES = (8, 16, 32)
ANCHORS = [[(6, 8), (12, 10)], [(14, 26), (28, 20)], [(36, 30), (60, 56)]]  # (w, h) per level, 2 per cell
NUM_CLASSES = 4
SHOWN_PER_CHECK = 3  # failures of one check printed by str(report)
PAIR_BUDGETS = (1, 40, 300)  # candidate-table pair budgets to try (one GT per chunk, a few GTs, most of them)


class _Failed(Exception):
    """A check found a broken promise; the message says which."""


@dataclass
class AssignInputs:
    """One call's inputs, described in words for a report.

    Attributes:
        priors: ``Tensor[N, 4]`` xyxy prior boxes, level after level (the grid's boxes).
        prior_strides: ``Tensor[N]`` stride of each prior.
        num_level_priors: priors per level (sums to N).
        gt_boxes: ``Tensor[B, M, 4]`` xyxy, padded.
        gt_labels: ``Tensor[B, M]`` long.
        gt_mask: ``Tensor[B, M]`` bool, False on padding rows.
        pred_boxes: ``Tensor[B, N, 4]`` decoded predicted xyxy boxes.
        pred_scores: ``Tensor[B, N, C]`` class probabilities.
        description: what the inputs are, for a reproducer.
        grid: the :class:`~detkit.anchors.PriorGrid` the priors come from (what heads pass as ``priors``).
    """

    priors: Tensor
    prior_strides: Tensor
    num_level_priors: list[int]
    gt_boxes: Tensor
    gt_labels: Tensor
    gt_mask: Tensor
    pred_boxes: Tensor
    pred_scores: Tensor
    description: str
    grid: PriorGrid

    def run(self, assigner: Assigner, *, as_grid: bool = True, scores: bool = True) -> AssignResult:
        """``assigner.assign(...)`` with every input, as the loss pipeline calls it: the
        :class:`~detkit.anchors.PriorGrid` as ``priors`` (or, ``as_grid=False``, its bare boxes: the
        all-pairs path) with ``num_level_priors``, ``prior_strides``, ``pred_boxes`` and ``pred_scores``
        (None with ``scores=False``, as the pipeline passes it to a rule with ``uses_predictions = False``)."""
        priors: PriorGrid | Tensor = self.grid if as_grid else self.priors
        return assigner.assign(
            priors, self.gt_boxes, self.gt_labels, self.gt_mask, num_level_priors=self.num_level_priors,
            prior_strides=self.prior_strides, pred_boxes=self.pred_boxes,
            pred_scores=self.pred_scores if scores else None)

    @property
    def batch(self) -> int:
        return int(self.gt_boxes.shape[0])

    @property
    def num_priors(self) -> int:
        return int(self.priors.shape[0])

    def image(self, i: int) -> AssignInputs:
        """Image ``i`` alone (a batch of one, the same M)."""
        return replace(self, gt_boxes=self.gt_boxes[i:i + 1], gt_labels=self.gt_labels[i:i + 1],
                       gt_mask=self.gt_mask[i:i + 1], pred_boxes=self.pred_boxes[i:i + 1],
                       pred_scores=self.pred_scores[i:i + 1], description=f"image {i} alone of: {self.description}")


@dataclass
class CheckFailure:
    """One broken promise.

    Attributes:
        check: the check's name (one of :data:`CHECKS`).
        message: what went wrong (the first field that differs and where, or the exception).
        reproducer: the inputs that show it, in words.
        inputs: those inputs, to run again (``failure.inputs.run(assigner)``); None when the failure
            needs no inputs.
    """

    check: str
    message: str
    reproducer: str
    inputs: AssignInputs | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return f"{self.check}: {self.message}\n    on: {self.reproducer}"


@dataclass
class ConformanceReport:
    """What :func:`check_assigner` found.

    Attributes:
        assigner: the rule's repr.
        passed: names of the checks that passed.
        failures: every failure (a check may fail on several inputs; each is listed).
        skipped: check name -> why it did not run.
        notes: remarks that are not failures (e.g. hypothesis absent, seeded batches used).
    """

    assigner: str
    passed: list[str] = field(default_factory=list)
    failures: list[CheckFailure] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no check failed."""
        return not self.failures

    @property
    def failed(self) -> list[str]:
        """Names of the checks that failed, in the order of :data:`CHECKS`."""
        names = {f.check for f in self.failures}
        return [c for c in CHECKS if c in names]

    def __str__(self) -> str:
        """One line per check; at most :data:`SHOWN_PER_CHECK` failures of a check, the rest counted."""
        lines = [f"check_assigner({self.assigner}): {'conforms' if self.ok else 'FAILS ' + ', '.join(self.failed)}"]
        lines += [f"  passed  {name}" for name in self.passed]
        for name in self.failed:
            mine = [f for f in self.failures if f.check == name]
            lines += [f"  FAILED  {failure}" for failure in mine[:SHOWN_PER_CHECK]]
            if len(mine) > SHOWN_PER_CHECK:
                lines.append(f"  FAILED  {name}: {len(mine) - SHOWN_PER_CHECK} more (report.failures lists them)")
        lines += [f"  skipped {name}: {why}" for name, why in self.skipped.items()]
        lines += [f"  note    {note}" for note in self.notes]
        return "\n".join(lines)

    def raise_for_failures(self) -> None:
        """Raise ``AssertionError`` with the whole report when a check failed (for use in tests)."""
        if not self.ok:
            raise AssertionError(str(self))


def _prior_grid(device: torch.device) -> tuple[Tensor, Tensor, list[int], PriorGrid, str]:
    """The kit's priors: boxes, strides, level counts, the grid and their description."""
    gen = YOLOAnchorGenerator(base_sizes=ANCHORS, strides=list(STRIDES))
    grid = gen.grid_priors([(IMAGE // s, IMAGE // s) for s in STRIDES], device)
    text = f"{grid.num_priors} anchor priors ({IMAGE} px input, strides {'/'.join(map(str, STRIDES))}, 2 per cell)"
    return grid.boxes, grid.strides, grid.num_level_priors, grid, text


def random_inputs(seed: int, *, batch: int = 3, num_gts: int = 5, valid_per_image: Sequence[int] | None = None,
                  device: torch.device | str = "cpu") -> AssignInputs:
    """Random GTs of 3 to 43 px inside a 64 px input, with predictions, on the kit's prior grid.

    Args:
        seed: seed of the generator every tensor is drawn from.
        batch: B.
        num_gts: M, the padded GT count.
        valid_per_image: the first ``valid_per_image[i]`` rows of image i are GTs, the rest padding
            (zeros); default all M.
        device: device of the tensors.

    Returns:
        :class:`AssignInputs` with ``C = 4`` classes.
    """
    dev = torch.device(device)
    priors, strides, counts, grid, grid_text = _prior_grid(dev)
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(batch, num_gts, 2, generator=g) * (IMAGE - 8)
    wh = torch.rand(batch, num_gts, 2, generator=g) * 40 + 3
    gt_boxes = torch.cat([xy, xy + wh], -1)  # (B, M, 4)
    gt_labels = torch.randint(0, NUM_CLASSES, (batch, num_gts), generator=g)
    valid = list(valid_per_image) if valid_per_image is not None else [num_gts] * batch
    gt_mask = torch.arange(num_gts)[None] < torch.tensor(valid)[:, None]  # (B, M)
    gt_boxes = torch.where(gt_mask[..., None], gt_boxes, torch.zeros(()))
    pred_boxes, pred_scores = _predictions(g, batch, priors.shape[0])
    text = (f"random_inputs(seed={seed}, batch={batch}, num_gts={num_gts}, valid_per_image={valid}): "
            f"GTs of 3-43 px, C={NUM_CLASSES}, {grid_text}")
    return AssignInputs(priors, strides, counts, gt_boxes.to(dev), gt_labels.to(dev), gt_mask.to(dev),
                        pred_boxes.to(dev), pred_scores.to(dev), text, grid)


def _predictions(g: torch.Generator, batch: int, num_priors: int) -> tuple[Tensor, Tensor]:
    """``pred_boxes (B, N, 4)`` of 1-31 px anywhere in the input and ``pred_scores (B, N, C)`` in [0, 1)."""
    pxy = torch.rand(batch, num_priors, 2, generator=g) * (IMAGE - 4)
    pwh = torch.rand(batch, num_priors, 2, generator=g) * 30 + 1
    return torch.cat([pxy, pxy + pwh], -1), torch.rand(batch, num_priors, NUM_CLASSES, generator=g)


# ---------------------------------------------------------------- comparing and validating results


def _result_fields(res: AssignResult) -> list[str]:
    return [f.name for f in fields(res)]


def _where(mask: Tensor) -> str:
    """``"3 of 504 (first: image 0, prior 17)"`` for a ``(B, N)`` bool mask."""
    first = mask.nonzero()[0].tolist()
    return f"{int(mask.sum())} of {mask.numel()} (first: image {first[0]}, prior {first[1]})"


def _differences(got: AssignResult, want: AssignResult, gt_map: Tensor | None = None) -> str | None:
    """The first field where ``got`` differs from ``want`` (``want.gt_index`` mapped by ``gt_map``), or None."""
    if type(got) is not type(want):
        return f"result type {type(got).__name__} vs {type(want).__name__}"
    for name in _result_fields(want):
        x, y = getattr(got, name), getattr(want, name)
        if name == "gt_index" and gt_map is not None and isinstance(y, Tensor):
            y = torch.where(y >= 0, gt_map.to(y.device)[y.long().clamp(min=0)].to(y.dtype), y)
        if x is None or y is None:
            if (x is None) != (y is None):
                return f"{name} is {'None' if x is None else 'set'} here, {'None' if y is None else 'set'} there"
            continue
        if not isinstance(x, Tensor) or not isinstance(y, Tensor):
            continue
        if x.shape != y.shape or x.dtype != y.dtype:
            return f"{name} is {tuple(x.shape)} {x.dtype} here, {tuple(y.shape)} {y.dtype} there"
        same = (x == y) | (x.isnan() & y.isnan()) if x.is_floating_point() else x == y
        if not bool(same.all()):
            bad = ~same if same.dim() == 2 else ~same.reshape(same.shape[0], -1).all(-1, keepdim=True)
            first = bad.nonzero()[0].tolist()
            return (f"{name} differs at {_where(bad)}: {x[tuple(first)].tolist()} "
                    f"instead of {y[tuple(first)].tolist()}")
    return None


def _structure_problems(res: object, inputs: AssignInputs) -> tuple[list[str], bool]:
    """What ``res`` breaks of the result's types, shapes and dtypes (whatever the inputs' values), and
    whether it can still be read (only dtypes are wrong)."""
    if not isinstance(res, AssignResult):
        return [f"assign returned {type(res).__name__}, not an AssignResult"], False
    b, n = inputs.batch, inputs.num_priors
    problems, readable = [], True
    dtypes = {"gt_index": torch.long, "pos_mask": torch.bool, "ignore_mask": torch.bool, "labels": torch.long,
              "iou": torch.float32, "align_metric": torch.float32, "score_target": torch.float32}
    for name, dtype in dtypes.items():
        value = getattr(res, name)
        if value is None and name in ("align_metric", "score_target"):
            continue
        if not isinstance(value, Tensor) or tuple(value.shape) != (b, n):
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            problems.append(f"{name} must be a (B, N) tensor, got {shape} for (B, N) = ({b}, {n})")
            readable = False
        elif value.dtype != dtype:
            problems.append(f"{name} must be {dtype}, got {value.dtype}")
    return problems, readable


def _value_problems(res: AssignResult, inputs: AssignInputs) -> list[str]:
    """What ``res`` (of the right structure) breaks of the result's invariants on ``inputs``."""
    pos, ignore, gt_index = res.pos_mask.bool(), res.ignore_mask.bool(), res.gt_index.long()
    m = inputs.gt_boxes.shape[1]
    checks: list[tuple[str, Tensor]] = [
        ("pos_mask != (gt_index >= 0)", pos != (gt_index >= 0)),
        (f"gt_index outside [-1, {m})", (gt_index < NOT_ASSIGNED) | (gt_index >= m)),
        ("ignore_mask on a positive", ignore & pos),
        ("iou not finite", ~res.iou.isfinite()),
        ("iou outside [0, 1]", (res.iou < 0) | (res.iou > 1)),
        ("iou not 0 where not positive", ~pos & (res.iou != 0)),
        ("labels not -1 where not positive", ~pos & (res.labels != NOT_ASSIGNED)),
    ]
    if m and not bool(checks[1][1].any()):
        valid = valid_gt_mask(inputs.gt_boxes.float(), inputs.gt_mask).to(gt_index.device)  # (B, M)
        index = gt_index.clamp(0, m - 1)
        checks.append(("gt_index on a padding or invalid GT row", pos & ~valid.gather(1, index)))
        labels = inputs.gt_labels.long().to(gt_index.device).gather(1, index)
        checks.append(("labels not the assigned GT's class", pos & (res.labels != labels)))
    for name in ("align_metric", "score_target"):
        value = getattr(res, name)
        if value is not None:
            checks.append((f"{name} not finite", ~value.isfinite()))
            checks.append((f"{name} not 0 where not positive", ~pos & (value != 0)))
    return [f"{text} at {_where(bad)}" for text, bad in checks if bool(bad.any())]


# ------------------------------------------------------------------------------------------ checks


@dataclass
class _Context:
    assigner: Assigner
    seed: int
    device: torch.device
    examples: int
    use_hypothesis: bool | None
    memory_knob: tuple[str, Sequence[Any]] | None
    report: ConformanceReport
    unjudged: set[str] = field(default_factory=set)

    def fail(self, check: str, message: str, inputs: AssignInputs | None) -> None:
        text = inputs.description if inputs is not None else "(no inputs)"
        self.report.failures.append(CheckFailure(check, message, text, inputs))

    def call(self, check: str, inputs: AssignInputs, assigner: Assigner | None = None,
             as_grid: bool = True, scores: bool = True) -> AssignResult:
        """Run the rule on ``inputs`` for ``check``; raises _Failed after reporting what went wrong.

        An exception, or a value invariant broken on these inputs, is ``check``'s failure; a wrong type,
        shape or dtype is the ``invariants`` check's (reported once), and a check whose results cannot
        be read is not judged.
        """
        try:
            res = inputs.run(self.assigner if assigner is None else assigner, as_grid=as_grid, scores=scores)
        except Exception as e:  # noqa: BLE001 - a rule raising on valid inputs fails the check that fed them
            where = traceback.extract_tb(e.__traceback__)[-1]
            first = str(e).splitlines()[0] if str(e) else ""
            message = f"raised {type(e).__name__}: {first} ({where.filename.rsplit('/', 1)[-1]}:{where.lineno})"
            self.fail(check, message, inputs)
            raise _Failed(message) from None
        structure, readable = _structure_problems(res, inputs)
        known = {f.message for f in self.report.failures if f.check == "invariants"}
        for problem in structure:
            if problem not in known:
                self.fail("invariants", problem, inputs)
        if not readable:  # not an AssignResult of (B, N) tensors: nothing to compare
            self.unjudged.add(check)
            raise _Failed("; ".join(structure))
        problems = _value_problems(res, inputs)
        if problems:
            self.fail(check, "; ".join(problems), inputs)
            raise _Failed(problems[0])
        return res

    def compare(self, check: str, got: AssignResult, want: AssignResult, inputs: AssignInputs, what: str,
                gt_map: Tensor | None = None) -> bool:
        diff = _differences(got, want, gt_map)
        if diff is not None:
            self.fail(check, f"{what}: {diff}", inputs)
        return diff is None


def _check_invariants(ctx: _Context) -> None:
    for k, valid in enumerate(([5, 5, 5], [6, 2, 4], [1, 7, 3])):
        inputs = random_inputs(ctx.seed + k, num_gts=max(valid), valid_per_image=valid, device=ctx.device)
        try:
            res = ctx.call("invariants", inputs)
        except _Failed:
            continue
        if res.num_pos == 0:
            ctx.fail("invariants", "no positive at all on ordinary GTs of 3-43 px", inputs)


def _check_no_gt(ctx: _Context) -> None:
    base = random_inputs(ctx.seed + 10, device=ctx.device)
    empty = replace(base, gt_mask=torch.zeros_like(base.gt_mask),
                    gt_boxes=torch.full_like(base.gt_boxes, math.nan),
                    description=f"every GT row padding (boxes NaN) of: {base.description}")
    zero_rows = replace(base, gt_boxes=base.gt_boxes[:, :0], gt_labels=base.gt_labels[:, :0],
                        gt_mask=base.gt_mask[:, :0], description=f"M = 0 GT rows of: {base.description}")
    one_empty = replace(base, gt_mask=base.gt_mask.clone(), description=f"image 1 without GTs of: {base.description}")
    one_empty.gt_mask[1] = False
    for inputs, images in ((empty, range(base.batch)), (zero_rows, range(base.batch)), (one_empty, [1])):
        try:
            res = ctx.call("no_gt", inputs)
        except _Failed:
            continue
        idx = torch.tensor(list(images))
        if bool(res.pos_mask[idx].any()) or bool(res.ignore_mask[idx].any()):
            what = "positives" if bool(res.pos_mask[idx].any()) else "ignored priors"
            ctx.fail("no_gt", f"{what} in an image without GTs (expected every prior negative)", inputs)


def _insert_rows(inputs: AssignInputs, at: int, boxes: Tensor, labels: Tensor, mask: Tensor,
                 text: str) -> tuple[AssignInputs, Tensor]:
    """``inputs`` with rows inserted before GT row ``at``; also ``Tensor[M]``: old row -> new row."""
    def cat(old: Tensor, new: Tensor) -> Tensor:
        return torch.cat([old[:, :at], new.to(old.device, old.dtype), old[:, at:]], 1)
    k, m = boxes.shape[1], inputs.gt_boxes.shape[1]
    old_to_new = torch.arange(m) + (torch.arange(m) >= at).long() * k
    out = replace(inputs, gt_boxes=cat(inputs.gt_boxes, boxes), gt_labels=cat(inputs.gt_labels, labels),
                  gt_mask=cat(inputs.gt_mask, mask),
                  description=f"{text} inserted at row {at} of: {inputs.description}")
    return out, old_to_new


def _check_padding_rows(ctx: _Context) -> None:
    base = random_inputs(ctx.seed + 20, num_gts=6, valid_per_image=[6, 4, 2], device=ctx.device)
    try:
        ref = ctx.call("padding_rows", base)
    except _Failed:
        return
    b = base.batch
    g = torch.Generator().manual_seed(ctx.seed + 21)
    garbage = {
        "4 padding rows of random boxes (inverted, huge, overlapping the GTs)":
            torch.rand(b, 4, 4, generator=g) * 200 - 50,
        "4 padding rows of NaN boxes": torch.full((b, 4, 4), math.nan),
        "4 padding rows of 1e30 boxes": torch.tensor([-1e30, -1e30, 1e30, 1e30]).expand(b, 4, 4),
        "4 padding rows of inf boxes": torch.tensor([-math.inf, -math.inf, math.inf, math.inf]).expand(b, 4, 4),
    }
    for text, boxes in garbage.items():
        padded, old_to_new = _insert_rows(base, 2, boxes, torch.full((b, 4), 999), torch.zeros(b, 4, dtype=torch.bool),
                                          text + " (label 999)")
        try:
            res = ctx.call("padding_rows", padded)
        except _Failed:
            continue
        ctx.compare("padding_rows", res, ref, padded, "the result changed", old_to_new)
    invalid = {"2 rows marked valid with NaN boxes": torch.full((b, 2, 4), math.nan),
               "2 rows marked valid with zero-area boxes": torch.tensor([10.0, 10.0, 10.0, 30.0]).expand(b, 2, 4)}
    for text, boxes in invalid.items():
        padded, old_to_new = _insert_rows(base, 1, boxes, torch.zeros(b, 2, dtype=torch.long),
                                          torch.ones(b, 2, dtype=torch.bool), text)
        try:
            res = ctx.call("padding_rows", padded)
        except _Failed:
            continue
        ctx.compare("padding_rows", res, ref, padded, "an invalid GT row (valid_gt_mask False) changed the result",
                    old_to_new)


def _check_batch_per_image(ctx: _Context) -> None:
    inputs = random_inputs(ctx.seed + 30, num_gts=7, valid_per_image=[7, 3, 5], device=ctx.device)
    _batch_equals_images(ctx, "batch_per_image", inputs)


def _batch_equals_images(ctx: _Context, check: str, inputs: AssignInputs) -> None:
    try:
        res = ctx.call(check, inputs)
    except _Failed:
        return
    for i in range(inputs.batch):
        one = inputs.image(i)
        try:
            single = ctx.call(check, one)
        except _Failed:
            continue
        row = replace(res, **{f: _row(getattr(res, f), i) for f in _result_fields(res)})
        if not ctx.compare(check, single, row, one, f"image {i} alone differs from its row of the batch"):
            return


def _row(value: Any, i: int) -> Any:
    return value[i:i + 1] if isinstance(value, Tensor) else value


def _check_fp16(ctx: _Context) -> None:
    base = random_inputs(ctx.seed + 40, num_gts=6, valid_per_image=[6, 3, 5], device=ctx.device)
    # The grid is made in fp32 by its generator; boxes and scores come in fp16 under autocast.
    half = replace(base, gt_boxes=base.gt_boxes.half(), pred_boxes=base.pred_boxes.half(),
                   pred_scores=base.pred_scores.half(), description=f"fp16 boxes and scores of: {base.description}")
    rounded = replace(base, gt_boxes=half.gt_boxes.float(),
                      pred_boxes=half.pred_boxes.float(), pred_scores=half.pred_scores.float(),
                      description=f"fp32 of the fp16-rounded values of: {base.description}")
    try:
        res, ref = ctx.call("fp16", half), ctx.call("fp16", rounded)
    except _Failed:
        return
    ctx.compare("fp16", res, ref, half, "fp16 inputs differ from fp32 on the same (rounded) values")


def _check_gt_order(ctx: _Context) -> None:
    base = random_inputs(ctx.seed + 50, num_gts=6, valid_per_image=[6, 5, 4], device=ctx.device)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])  # new row j holds old row perm[j]
    permuted = replace(base, gt_boxes=base.gt_boxes[:, perm], gt_labels=base.gt_labels[:, perm],
                       gt_mask=base.gt_mask[:, perm],
                       description=f"GT rows permuted by {perm.tolist()} (new row j = old row perm[j]) of: "
                                   f"{base.description}")
    try:
        ref, res = ctx.call("gt_order", base), ctx.call("gt_order", permuted)
    except _Failed:
        return
    ctx.compare("gt_order", res, ref, permuted, "the result is not the permuted one", torch.argsort(perm))


def _knob_owners(assigner: object) -> list[object]:
    """The rule and the rules it wraps (one level: ``MinPositives(assigner=...)``)."""
    inner = [v for v in vars(assigner).values() if hasattr(v, "assign")] if hasattr(assigner, "__dict__") else []
    return [assigner, *inner]


def _memory_settings(ctx: _Context) -> list[tuple[str, Callable[[Any], Any], Sequence[Any]]]:
    """``(name, apply, values)`` of each memory setting to vary: the candidate tables' pair budget (a
    context), and the rule's own attribute named by ``memory_knob=`` (set on a copy of the rule, or of
    the rule it wraps)."""
    settings: list[tuple[str, Callable[[Any], Any], Sequence[Any]]] = [
        ("pair_budget", lambda v: (ctx.assigner, pair_budget(v)), PAIR_BUDGETS)]
    if ctx.memory_knob is None:
        return settings
    name, values = ctx.memory_knob
    index = next((i for i, owner in enumerate(_knob_owners(ctx.assigner)) if hasattr(owner, name)), None)
    if index is None:
        ctx.fail("memory_knob", f"the rule has no attribute {name!r} (memory_knob=)", None)
        return settings

    def apply(value: Any) -> tuple[Any, Any]:
        copied = copy.deepcopy(ctx.assigner)
        setattr(_knob_owners(copied)[index], name, value)
        return copied, contextlib.nullcontext()

    return [*settings, (name, apply, values)]


def _check_memory_knob(ctx: _Context) -> None:
    settings = _memory_settings(ctx)
    inputs = random_inputs(ctx.seed + 60, num_gts=7, valid_per_image=[7, 6, 3], device=ctx.device)
    try:
        ref = ctx.call("memory_knob", inputs)
    except _Failed:
        return
    for name, apply, values in settings:
        for value in values:
            rule, context = apply(value)
            try:
                with context:
                    res = ctx.call("memory_knob", inputs, rule)
            except _Failed:
                continue
            ctx.compare("memory_knob", res, ref, inputs, f"{name}={value!r} changed the result")


def _check_grid_vs_all_pairs(ctx: _Context) -> None:
    for k, valid in enumerate(([5, 5, 5], [7, 2, 0])):
        inputs = random_inputs(ctx.seed + 70 + k, num_gts=max(valid), valid_per_image=valid, device=ctx.device)
        try:
            ref = inputs.run(ctx.assigner, as_grid=False)
        except ValueError as e:  # the rule's own refusal of bare priors: the comparison does not apply
            first = str(e).splitlines()[0] if str(e) else ""
            ctx.report.skipped["grid_vs_all_pairs"] = f"the rule refuses bare priors (ValueError: {first})"
            return
        except Exception:  # noqa: BLE001 - any other exception is a failure, reported by ctx.call below
            pass
        try:
            res, ref = ctx.call("grid_vs_all_pairs", inputs), ctx.call("grid_vs_all_pairs", inputs, as_grid=False)
        except _Failed:
            continue
        ctx.compare("grid_vs_all_pairs", res, ref, inputs, "assign(PriorGrid) differs from assign(its bare boxes)")


def _check_uses_predictions(ctx: _Context) -> None:
    if getattr(ctx.assigner, "uses_predictions", True) is not False:
        ctx.report.skipped["uses_predictions"] = "a prediction-aware rule (uses_predictions is not False)"
        return
    inputs = random_inputs(ctx.seed + 80, num_gts=6, valid_per_image=[6, 4, 5], device=ctx.device)
    without = replace(inputs, description=f"pred_scores=None (uses_predictions = False) with: {inputs.description}")
    try:
        ref, res = ctx.call("uses_predictions", inputs), ctx.call("uses_predictions", without, scores=False)
    except _Failed:
        return
    ctx.compare("uses_predictions", res, ref, without, "the result without pred_scores differs")


# ------------------------------------------------------------------------------ adversarial batches


@dataclass(frozen=True)
class _Knobs:
    """What an adversarial batch is made of; the tensors come from ``seed``."""

    batch: int
    num_gts: int
    seed: int
    sizes: tuple[float, float]
    aspect: float
    margin: float
    duplicates: bool
    zero_size: bool
    pad_fraction: float
    garbage: str
    fp16: bool


SIZES = (1e-2, 0.5, 4.0, 32.0, 1e3, 1e4)
ASPECTS = (1.0, 10.0, 1e3)
MARGINS = (0.0, 64.0, 2000.0)
PAD_FRACTIONS = (0.0, 0.3, 0.9, 1.0)
GARBAGE = {"zeros": 0.0, "huge": 1e30, "nan": math.nan, "inf": math.inf}


def _adversarial_inputs(k: _Knobs, device: torch.device) -> AssignInputs:
    priors, strides, counts, grid, grid_text = _prior_grid(device)
    b, m = k.batch, k.num_gts
    g = torch.Generator().manual_seed(k.seed)
    lo, hi = k.sizes
    size = torch.exp(math.log(lo) + torch.rand(b, m, generator=g) * (math.log(hi) - math.log(lo)))  # (B, M)
    ratio = torch.exp((torch.rand(b, m, generator=g) * 2 - 1) * math.log(k.aspect))
    wh = torch.stack([size * ratio.sqrt(), size / ratio.sqrt()], -1)  # (B, M, 2)
    centre = torch.rand(b, m, 2, generator=g) * (IMAGE + 2 * k.margin) - k.margin
    boxes = torch.cat([centre - wh / 2, centre + wh / 2], -1)  # (B, M, 4)
    if m > 1 and k.duplicates:  # exact duplicates: ties everywhere
        boxes[:, 1::2] = boxes[:, 0:-1:2]
    if k.zero_size:  # zero-width rows marked valid
        boxes[:, ::5, 2] = boxes[:, ::5, 0]
    labels = torch.randint(0, NUM_CLASSES, (b, m), generator=g)
    mask = torch.rand(b, m, generator=g) >= k.pad_fraction
    boxes = torch.where(mask[..., None], boxes, torch.full_like(boxes, GARBAGE[k.garbage]))
    pred_boxes, pred_scores = _predictions(g, b, priors.shape[0])
    if k.fp16:
        boxes, pred_boxes, pred_scores = boxes.half(), pred_boxes.half(), pred_scores.half()
    return AssignInputs(priors, strides, counts, boxes.to(device), labels.to(device), mask.to(device),
                        pred_boxes.to(device), pred_scores.to(device), f"adversarial {k}, {grid_text}", grid)


def _adversarial_example(ctx: _Context, knobs: _Knobs) -> bool:
    """Run one adversarial batch; False when it found a failure (already reported)."""
    before = len(ctx.report.failures)
    _batch_equals_images(ctx, "adversarial", _adversarial_inputs(knobs, ctx.device))
    return len(ctx.report.failures) == before


def _seeded_knobs(rng: random.Random) -> _Knobs:
    return _Knobs(batch=rng.randint(1, 3), num_gts=rng.choice([0, 1, 2, 300, rng.randint(0, 300)]),
                  seed=rng.randrange(2**31), sizes=tuple(sorted(rng.sample(SIZES, 2))),  # type: ignore[arg-type]
                  aspect=rng.choice(ASPECTS), margin=rng.choice(MARGINS), duplicates=rng.random() < 0.5,
                  zero_size=rng.random() < 0.5, pad_fraction=rng.choice(PAD_FRACTIONS),
                  garbage=rng.choice(sorted(GARBAGE)), fp16=rng.random() < 0.3)


def _check_adversarial(ctx: _Context) -> None:
    if not _hypothesis_available(ctx):
        rng = random.Random(ctx.seed)
        for _ in range(ctx.examples):
            if not _adversarial_example(ctx, _seeded_knobs(rng)):
                return
        return
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as seeded
    from hypothesis import strategies as st

    knobs = st.builds(
        _Knobs, batch=st.integers(1, 3), num_gts=st.one_of(st.sampled_from([0, 1, 2, 300]), st.integers(0, 300)),
        seed=st.integers(0, 2**31 - 1),
        sizes=st.lists(st.sampled_from(SIZES), min_size=2, max_size=2, unique=True).map(lambda s: tuple(sorted(s))),
        aspect=st.sampled_from(ASPECTS), margin=st.sampled_from(MARGINS), duplicates=st.booleans(),
        zero_size=st.booleans(), pad_fraction=st.sampled_from(PAD_FRACTIONS), garbage=st.sampled_from(sorted(GARBAGE)),
        fp16=st.booleans())
    seen: set[_Knobs] = set()

    @settings(max_examples=ctx.examples, deadline=None, database=None, derandomize=False,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
              report_multiple_bugs=False)
    @seeded(ctx.seed)
    @given(knobs)
    def run(k: _Knobs) -> None:
        if k in seen:  # hypothesis replays a failing example: report it once
            raise _Failed("again")
        if not _adversarial_example(ctx, k):
            seen.add(k)
            raise _Failed("adversarial")

    try:
        run()
    except Exception:  # noqa: BLE001 - hypothesis re-raises the failure, which is in the report already
        if not any(f.check == "adversarial" for f in ctx.report.failures):
            raise


def _hypothesis_available(ctx: _Context) -> bool:
    """Whether hypothesis draws the adversarial batches (else a seeded generator does, and a note says so)."""
    if ctx.use_hypothesis is False:
        ctx.report.notes.append(f"adversarial batches drawn from random.Random({ctx.seed}) (use_hypothesis=False)")
        return False
    if ctx.use_hypothesis:
        from detkit.extras import require
        require("hypothesis", "check_assigner(use_hypothesis=True)")
        return True
    try:
        import hypothesis  # noqa: F401
    except ImportError:
        ctx.report.notes.append(f"hypothesis is not installed: adversarial batches drawn from random.Random("
                                f"{ctx.seed}) instead (pip install hypothesis, or the dev extra)")
        return False
    return True


_RUNNERS: dict[str, Callable[[_Context], None]] = {
    "invariants": _check_invariants, "no_gt": _check_no_gt, "padding_rows": _check_padding_rows,
    "batch_per_image": _check_batch_per_image, "fp16": _check_fp16, "gt_order": _check_gt_order,
    "memory_knob": _check_memory_knob, "grid_vs_all_pairs": _check_grid_vs_all_pairs,
    "uses_predictions": _check_uses_predictions,
    "adversarial": _check_adversarial,
}


def check_assigner(assigner: Assigner, *, checks: Iterable[str] | None = None, skip: Mapping[str, str] | None = None,
                   seed: int = 0, examples: int = 12, use_hypothesis: bool | None = None,
                   memory_knob: tuple[str, Sequence[Any]] | None = None,
                   device: torch.device | str = "cpu") -> ConformanceReport:
    """Run the assigner contract (:data:`CHECKS`, described in this module's docstring) on ``assigner``.

    Every check runs even when an earlier one failed, and each failure is listed with the check's
    name, what went wrong and the inputs that show it. The rule is never modified (the memory check
    works on copies).

    Args:
        assigner: anything with the :class:`~detkit.assigners.Assigner` ``assign`` method.
        checks: the checks to run (default all of :data:`CHECKS`).
        skip: check name -> the reason it does not apply to this rule (shown in the report), e.g.
            ``{"gt_order": "the later GT wins a shared prior, by design"}``.
        seed: seed of every generated input (the same seed gives the same inputs).
        examples: number of adversarial batches.
        use_hypothesis: None: hypothesis draws the adversarial batches when installed, else a seeded
            generator does (and a note says so); True: hypothesis is required; False: seeded.
        memory_knob: ``(attribute, values)``: a memory setting of the rule's own (or of the rule it
            wraps) to vary besides the candidate tables' pair budget, set on copies.
        device: device of the generated inputs.

    Returns:
        A :class:`ConformanceReport`; ``report.ok`` is True when every check that ran passed.

    Raises:
        ValueError: an unknown check name in ``checks`` or ``skip``.
        MissingExtraError: ``use_hypothesis=True`` without hypothesis installed.
    """
    chosen = list(CHECKS if checks is None else checks)
    skip = dict(skip or {})
    unknown = sorted((set(chosen) | set(skip)) - set(CHECKS))
    if unknown:
        raise ValueError(f"unknown checks {unknown}; the checks are: {', '.join(CHECKS)}")
    text = repr(assigner)
    report = ConformanceReport(assigner=text if " object at 0x" not in text else f"{type(assigner).__qualname__}()")
    ctx = _Context(assigner, seed, torch.device(device), examples, use_hypothesis, memory_knob, report)
    ran = []
    for name in CHECKS:
        if name not in chosen:
            continue
        if name in skip:
            report.skipped[name] = skip[name]
            continue
        with contextlib.suppress(_Failed):  # the failure is in the report already
            _RUNNERS[name](ctx)
        ran.append(name)
    failed = set(report.failed)
    for name in ran:
        if name in ctx.unjudged and name not in failed:
            report.skipped[name] = "not judged: the rule's results are not AssignResults of (B, N) tensors"
        elif name not in failed and name not in report.skipped:
            report.passed.append(name)
    return report
