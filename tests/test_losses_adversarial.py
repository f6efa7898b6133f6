"""Losses and the YOLO loss pipeline under adversarial inputs (hypothesis): extreme logits, boxes
of extreme size and aspect ratio, degenerate and inverted boxes, fp16. Values and gradients stay
finite, IoU-family losses stay in their range, no exception.

Derandomized and without an example database (CI runs the same examples every time); small
example counts keep the whole file to a few seconds.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detkit.coders import YOLOCoder
from detkit.losses import (
    FocalLoss,
    L1Loss,
    bce_with_logits_loss,
    iou_loss,
    l1_loss,
    quality_focal_loss,
    sigmoid_focal_loss,
    smooth_l1_loss,
    varifocal_loss,
)
from detkit.models.heads.yolo_loss import YOLOLossPipeline
from detkit.samplers import RandomSampler
from tests.fixtures.heads import yolo_predictions

_spec = importlib.util.spec_from_file_location(
    "assigner_adversarial", Path(__file__).parent / "assigners" / "test_adversarial.py")
adversarial = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(adversarial)

PROFILE = settings(max_examples=30, deadline=None, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
DTYPES = st.sampled_from([torch.float32, torch.float16])


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def finite_loss_and_grad(loss: torch.Tensor, *inputs: torch.Tensor) -> None:
    assert loss.dtype == torch.float32 and torch.isfinite(loss).all(), loss
    loss.sum().backward()
    for x in inputs:
        assert x.grad is not None and torch.isfinite(x.grad).all()


@st.composite
def logits_and_targets(draw) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits from 0 to +-6e4 (near fp16's largest), hard or soft targets in [0, 1]."""
    g = seeded(draw(st.integers(0, 2**31 - 1)))
    shape = (draw(st.integers(0, 7)), draw(st.integers(1, 5)))
    scale = draw(st.sampled_from([0.0, 1.0, 20.0, 100.0, 6e4]))
    dtype = draw(DTYPES)
    pred = (torch.randn(shape, generator=g) * scale).clamp(-6e4, 6e4).to(dtype).requires_grad_()
    target = torch.rand(shape, generator=g)
    if draw(st.booleans()):
        target = target.round()
    return pred, target.to(dtype)


@st.composite
def box_pairs(draw) -> tuple[torch.Tensor, torch.Tensor]:
    """Pred / target xyxy boxes: sizes 0 to 1e4 px, aspect up to 1e4, up to 3e4 px away, some
    inverted predictions, some identical pairs."""
    g = seeded(draw(st.integers(0, 2**31 - 1)))
    n = draw(st.integers(0, 8))
    dtype = draw(DTYPES)

    def boxes() -> torch.Tensor:
        lo, hi = sorted(draw(st.lists(st.sampled_from([0.0, 1e-3, 1.0, 100.0, 1e4]), min_size=2, max_size=2)))
        wh = lo + torch.rand(n, 2, generator=g) * (hi - lo)
        if draw(st.booleans()):  # extreme aspect ratios
            wh[:, 1] = (wh[:, 0] / draw(st.sampled_from([1e-4, 1e4]))).clamp(max=1e4)
        xy = (torch.rand(n, 2, generator=g) * 2 - 1) * draw(st.sampled_from([0.0, 64.0, 3e4]))
        return torch.cat([xy, xy + wh], -1)  # within fp16's range (65504)

    pred, target = boxes(), boxes()
    if draw(st.booleans()):  # inverted predictions (x2 < x1), as an untrained head emits
        pred = pred[:, [2, 3, 0, 1]]
    if n and draw(st.booleans()):
        target[: n // 2] = pred[: n // 2]
    return pred.to(dtype).requires_grad_(), target.to(dtype)


REDUCE = st.sampled_from([("mean", None), ("sum", None), ("mean", 7.0), ("none", None)])


@PROFILE
@given(data=logits_and_targets(), reduce=REDUCE, gamma=st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0]),
       smoothing=st.sampled_from([0.0, 0.1]))
def test_classification_losses_are_finite_with_finite_gradients(data, reduce, gamma, smoothing):
    pred, target = data
    reduction, avg = reduce
    weight = torch.rand(pred.shape[-1])
    losses = [
        bce_with_logits_loss(pred, target, weight, reduction, avg, label_smoothing=smoothing, pos_weight=2.0),
        sigmoid_focal_loss(pred, target, weight, reduction, avg, gamma=gamma, label_smoothing=smoothing),
        sigmoid_focal_loss(pred, target, None, reduction, avg, alpha=-1, gamma=gamma),
        varifocal_loss(pred, target, weight, reduction, avg, gamma=gamma),
        quality_focal_loss(pred, target, weight, reduction, avg, beta=gamma),
    ]
    for loss in losses:
        assert loss.dtype == torch.float32 and torch.isfinite(loss).all()
        assert (loss >= 0).all()
    finite_loss_and_grad(sum(loss.sum() for loss in losses), pred)


@pytest.mark.parametrize("exponent", [0.25, 0.5])
def test_focal_and_quality_focal_gradients_are_finite_at_an_exact_match_with_exponent_below_one(exponent):
    """Found by the test above: d/dx x**g is infinite at 0 for g < 1, times the zero of an exact
    match gave NaN gradients (saturated logits, or a soft target equal to the prediction)."""
    pred = torch.tensor([30.0, -30.0, 0.0], requires_grad=True)
    focal = sigmoid_focal_loss(pred, torch.tensor([1.0, 0.0, 1.0]), gamma=exponent, reduction="sum")
    qfl = quality_focal_loss(pred, torch.tensor([1.0, 0.0, 0.5]), beta=exponent, reduction="sum")
    finite_loss_and_grad(focal + qfl, pred)
    assert pred.grad[:2].abs().max() < 1e-6  # the matched entries contribute nothing
    p = torch.tensor([0.3, -1.2], requires_grad=True)  # away from 0 the value is the plain power
    expect = torch.nn.functional.binary_cross_entropy_with_logits(p, torch.tensor([0.2, 0.9]), reduction="none") \
        * (torch.tensor([0.2, 0.9]) - torch.sigmoid(p)).abs() ** exponent
    torch.testing.assert_close(quality_focal_loss(p, torch.tensor([0.2, 0.9]), beta=exponent, reduction="none"), expect)


@PROFILE
@given(data=box_pairs(), mode=st.sampled_from(["iou", "giou", "diou", "ciou"]), reduce=REDUCE)
def test_iou_losses_are_finite_in_range_with_finite_gradients(data, mode, reduce):
    pred, target = data
    elementwise = iou_loss(pred, target, mode=mode, reduction="none")
    assert torch.isfinite(elementwise).all()
    # The range holds for well-formed predictions; inverted ones only need to stay finite.
    upper = {"iou": 1.0, "giou": 2.0, "diou": 2.0, "ciou": 3.0}[mode] + 1e-4  # CIoU: + alpha * v <= 1
    ok = (pred[:, 2] >= pred[:, 0]) & (pred[:, 3] >= pred[:, 1])
    assert (elementwise[ok] >= -1e-5).all() and (elementwise[ok] <= upper).all()
    reduction, avg = reduce
    finite_loss_and_grad(iou_loss(pred, target, reduction=reduction, avg_factor=avg, mode=mode), pred)


@PROFILE
@given(data=box_pairs(), beta=st.sampled_from([0.0, 1.0 / 9, 1.0]), reduce=REDUCE)
def test_l1_losses_are_finite_with_finite_gradients(data, beta, reduce):
    pred, target = data
    reduction, avg = reduce
    loss = l1_loss(pred, target, reduction=reduction, avg_factor=avg)
    loss = loss.sum() + smooth_l1_loss(pred, target, reduction=reduction, avg_factor=avg, beta=beta).sum()
    finite_loss_and_grad(loss, pred)


PIPELINES = {
    "default": lambda assigner: dict(assigner=assigner),
    "focal_l1_random": lambda assigner: dict(
        assigner=assigner, loss_cls=FocalLoss(), loss_reg=L1Loss(), sampler=RandomSampler(num=64, pos_fraction=0.5),
        obj_target="one", loss_weights=dict(reg=1.0)),
}


@pytest.mark.parametrize("name", sorted(adversarial.ASSIGNERS))
@settings(max_examples=12, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=adversarial.batches(), raw_scale=st.sampled_from([0.0, 1.0, 30.0, 1e4]),
       variant=st.sampled_from(sorted(PIPELINES)), crowd=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_loss_pipeline_is_finite_on_adversarial_batches(name, data, raw_scale, variant, crowd, seed):
    """Raw head outputs from 0 to 1e4 (an untrained or diverging head), GTs from the assigner
    strategy (0-300, extreme, padded with garbage, fp16); every loss and its gradient finite."""
    grid, strides = data["grid"], data["prior_strides"]  # the head's PriorGrid, fp32 (the rules may need it)
    priors = grid.boxes
    b, n = data["gt_boxes"].shape[0], priors.shape[0]
    g = seeded(seed)
    dtype = data["pred_scores"].dtype  # fp16 examples feed fp16 predictions (autocast)
    preds = (torch.randn(b, n, 5 + adversarial.NUM_CLASSES, generator=g) * raw_scale).to(dtype).requires_grad_()
    batch = {k: data[k] for k in ("gt_boxes", "gt_labels", "gt_mask")}
    if crowd:  # ignore regions, padded with the same garbage as the GTs
        batch["ignore_boxes"] = data["gt_boxes"][:, :3].clone()
        batch["ignore_mask"] = ~data["gt_mask"][:, :3]
    pipeline = YOLOLossPipeline(**PIPELINES[variant](adversarial.ASSIGNERS[name]()))
    out = pipeline(yolo_predictions(preds, grid, strides, data["num_level_priors"], YOLOCoder(scale_x_y=1.1)),
                   batch)
    assert {"loss_cls", "loss_obj", "loss_box"} <= set(out)
    for key, value in out.items():
        assert torch.isfinite(value).all(), key
    finite_loss_and_grad(sum(v for k, v in out.items() if k.startswith("loss_")), preds)


@pytest.mark.parametrize("name", sorted(adversarial.ASSIGNERS))
def test_loss_pipeline_treats_a_gt_with_infinite_coordinates_as_padding(name):
    """Found by the test above: a huge box cast to fp16 became (-inf, inf); assigned like a real GT,
    it made loss_box infinite for every batch holding it."""
    priors, strides, counts = adversarial.ANCHORS
    boxes = torch.tensor([[[10.0, 12.0, 30.0, 40.0], [-300.0, -math.inf, 300.0, math.inf]]])
    batch = dict(gt_boxes=boxes, gt_labels=torch.tensor([[1, 2]]), gt_mask=torch.tensor([[True, True]]))
    preds = torch.zeros(1, priors.shape[0], 5 + adversarial.NUM_CLASSES, requires_grad=True)
    pipeline = YOLOLossPipeline(assigner=adversarial.ASSIGNERS[name]())
    out = pipeline(yolo_predictions(preds, adversarial.ANCHORS, strides, counts, YOLOCoder()), batch)
    finite_loss_and_grad(sum(v for k, v in out.items() if k.startswith("loss_")), preds)
    assert out["stat_num_gt"] == 1 and out["stat_gt_no_pos"] == 0  # the infinite row is not a GT
