import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.ops as tvops

from detkit.losses import (
    BCEWithLogitsLoss,
    DistributionFocalLoss,
    FocalLoss,
    IoULoss,
    L1Loss,
    QualityFocalLoss,
    SmoothL1Loss,
    VarifocalLoss,
    bce_with_logits_loss,
    distribution_focal_loss,
    iou_loss,
    l1_loss,
    quality_focal_loss,
    reduce_loss,
    sigmoid_focal_loss,
    smooth_l1_loss,
    varifocal_loss,
)


def sig(x):
    return 1 / (1 + math.exp(-x))


def logits_and_targets(seed=0, shape=(6, 5)):
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn(shape, generator=g) * 3
    target = (torch.rand(shape, generator=g) < 0.3).float()
    return pred, target


# ----- reduction -----------------------------------------------------------------------------


def test_reduce_loss_modes_and_avg_factor():
    loss = torch.tensor([1.0, 2.0, 3.0, 6.0])
    w = torch.tensor([1.0, 0.0, 1.0, 0.5])
    assert torch.equal(reduce_loss(loss, w, "none"), torch.tensor([1.0, 0.0, 3.0, 3.0]))
    assert reduce_loss(loss, w, "sum").item() == 7.0
    assert reduce_loss(loss, w, "mean").item() == 1.75
    assert reduce_loss(loss, w, "mean", avg_factor=2).item() == 3.5
    assert reduce_loss(torch.zeros(0), None, "mean").item() == 0.0  # empty mean is 0, not NaN


def test_reduce_loss_rejects_bad_arguments():
    with pytest.raises(ValueError, match="accepted: none, mean, sum"):
        reduce_loss(torch.ones(2), reduction="avg")
    with pytest.raises(ValueError, match="avg_factor"):
        reduce_loss(torch.ones(2), reduction="sum", avg_factor=2)


# ----- classification ------------------------------------------------------------------------


def test_bce_matches_torch():
    pred, target = logits_and_targets()
    expected = F.binary_cross_entropy_with_logits(pred, target, reduction="sum")
    torch.testing.assert_close(bce_with_logits_loss(pred, target, reduction="sum"), expected)
    torch.testing.assert_close(bce_with_logits_loss(pred, target, avg_factor=3.0), expected / 3)


def test_bce_hand_computed_with_label_smoothing():
    # eps = 0.2: target 1 -> 0.9, target 0 -> 0.1.
    loss = bce_with_logits_loss(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.0]), reduction="none",
                                label_smoothing=0.2)
    exp0 = -math.log(0.5)  # at logit 0 the target does not matter
    exp1 = -(0.1 * math.log(sig(2.0)) + 0.9 * math.log(1 - sig(2.0)))
    torch.testing.assert_close(loss, torch.tensor([exp0, exp1]))


def test_focal_matches_torchvision():
    pred, target = logits_and_targets(1)
    for alpha, gamma in [(0.25, 2.0), (-1, 1.5), (0.5, 0.0)]:
        expected = tvops.sigmoid_focal_loss(pred, target, alpha=alpha, gamma=gamma, reduction="sum")
        got = sigmoid_focal_loss(pred, target, alpha=alpha, gamma=gamma, reduction="sum")
        torch.testing.assert_close(got, expected)


def test_focal_hand_computed():
    # logit 0, target 1: p_t = 0.5 -> 0.25 * 0.5^2 * log 2.
    got = sigmoid_focal_loss(torch.tensor([0.0]), torch.tensor([1.0]), reduction="sum")
    assert got.item() == pytest.approx(0.25 * 0.25 * math.log(2), rel=1e-6)


def test_focal_gamma_zero_no_alpha_equals_bce():
    pred, target = logits_and_targets(2)
    torch.testing.assert_close(
        sigmoid_focal_loss(pred, target, alpha=-1, gamma=0.0), bce_with_logits_loss(pred, target)
    )


def test_varifocal_hand_computed():
    pred = torch.tensor([1.0, -1.0])
    target = torch.tensor([0.6, 0.0])  # one positive of IoU 0.6, one negative
    got = varifocal_loss(pred, target, reduction="none", alpha=0.75, gamma=2.0)
    p0, p1 = sig(1.0), sig(-1.0)
    bce0 = -(0.6 * math.log(p0) + 0.4 * math.log(1 - p0))
    bce1 = -math.log(1 - p1)
    torch.testing.assert_close(got, torch.tensor([0.6 * bce0, 0.75 * p1**2 * bce1]))
    unweighted = varifocal_loss(pred, target, reduction="none", iou_weighted=False)
    assert unweighted[0].item() == pytest.approx(bce0, rel=1e-6)


def test_quality_focal_hand_computed_and_zero_at_match():
    got = quality_focal_loss(torch.tensor([0.0]), torch.tensor([0.9]), reduction="sum", beta=2.0)
    bce = -(0.9 * math.log(0.5) + 0.1 * math.log(0.5))
    assert got.item() == pytest.approx(0.4**2 * bce, rel=1e-6)
    logit = math.log(0.3 / 0.7)
    assert quality_focal_loss(torch.tensor([logit]), torch.tensor([0.3])).item() == pytest.approx(0.0, abs=1e-12)


def test_classification_losses_accept_half_and_compute_fp32():
    pred, target = logits_and_targets(3)
    for fn in (bce_with_logits_loss, sigmoid_focal_loss, varifocal_loss, quality_focal_loss):
        out = fn(pred.half(), target.half())
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, fn(pred, target), atol=2e-3, rtol=2e-3)


# ----- regression ----------------------------------------------------------------------------


def test_iou_losses_hand_computed():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 0.0, 3.0, 2.0]])  # IoU 2 / 6; enclosing box 3x2 = union
    assert iou_loss(a, b, mode="iou").item() == pytest.approx(1 - 1 / 3, rel=1e-6)
    assert iou_loss(a, b, mode="giou").item() == pytest.approx(1 - 1 / 3, rel=1e-6)
    # DIoU: centre distance^2 = 1, enclosing diagonal^2 = 9 + 4 = 13.
    assert iou_loss(a, b, mode="diou").item() == pytest.approx(1 - 1 / 3 + 1 / 13, rel=1e-6)
    # Same aspect ratio: CIoU's v term is 0, CIoU = DIoU.
    assert iou_loss(a, b, mode="ciou").item() == pytest.approx(1 - 1 / 3 + 1 / 13, rel=1e-6)


def test_iou_loss_matches_torchvision_ciou_and_giou():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(20, 2, generator=g) * 50
    a = torch.cat([xy, xy + torch.rand(20, 2, generator=g) * 30 + 1], 1)
    xy2 = xy + torch.randn(20, 2, generator=g) * 5
    b = torch.cat([xy2, xy2 + torch.rand(20, 2, generator=g) * 30 + 1], 1)
    torch.testing.assert_close(iou_loss(a, b, mode="ciou", reduction="none"),
                               tvops.complete_box_iou_loss(a, b), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(iou_loss(a, b, mode="giou", reduction="none"),
                               tvops.generalized_box_iou_loss(a, b), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["iou", "giou", "diou", "ciou"])
def test_iou_losses_finite_gradients_on_degenerate_boxes(mode):
    pred = torch.tensor([[5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 0.0, 4.0], [1.0, 1.0, 3.0, 3.0], [2.0, 2.0, 2.0, 2.0]],
                        requires_grad=True)
    target = torch.tensor([[5.0, 5.0, 5.0, 5.0], [1.0, 1.0, 3.0, 3.0], [1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 0.0, 0.0]])
    loss = iou_loss(pred, target, mode=mode, reduction="none")
    assert torch.isfinite(loss).all()
    assert loss[2].item() == pytest.approx(0.0, abs=1e-6)  # identical boxes
    loss.sum().backward()
    assert torch.isfinite(pred.grad).all()


def test_l1_and_smooth_l1_hand_computed():
    pred = torch.tensor([0.0, 0.5, 3.0])
    target = torch.zeros(3)
    assert torch.equal(l1_loss(pred, target, reduction="none"), torch.tensor([0.0, 0.5, 3.0]))
    torch.testing.assert_close(smooth_l1_loss(pred, target, reduction="none", beta=1.0),
                               torch.tensor([0.0, 0.125, 2.5]))
    torch.testing.assert_close(smooth_l1_loss(pred, target, reduction="sum", beta=0.0), torch.tensor(3.5))
    torch.testing.assert_close(smooth_l1_loss(pred, target, beta=0.5),
                               F.smooth_l1_loss(pred, target, beta=0.5))


def test_weight_broadcast_over_box_coordinates():
    pred = torch.ones(3, 4)
    w = torch.tensor([1.0, 0.0, 2.0])[:, None]  # (3,) -> (3, 1)
    assert l1_loss(pred, torch.zeros(3, 4), weight=w, reduction="sum").item() == 12.0


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same shape"):
        l1_loss(torch.zeros(2, 4), torch.zeros(3, 4))


# ----- modules -------------------------------------------------------------------------------


def test_modules_apply_loss_weight_and_reduction_override():
    pred, target = logits_and_targets(4)
    m = FocalLoss(loss_weight=2.0, gamma=1.0, label_smoothing=0.1)
    expected = 2.0 * sigmoid_focal_loss(pred, target, gamma=1.0, label_smoothing=0.1, avg_factor=4.0)
    torch.testing.assert_close(m(pred, target, avg_factor=4.0), expected)
    assert m(pred, target, reduction_override="none").shape == pred.shape
    assert BCEWithLogitsLoss(reduction="sum")(pred, target).item() == pytest.approx(
        F.binary_cross_entropy_with_logits(pred, target, reduction="sum").item(), rel=1e-6)
    soft = target * 0.7
    torch.testing.assert_close(VarifocalLoss()(pred, soft), varifocal_loss(pred, soft))
    torch.testing.assert_close(QualityFocalLoss(beta=1.0)(pred, soft), quality_focal_loss(pred, soft, beta=1.0))


def test_regression_modules_input_space():
    assert IoULoss().input_space == "boxes"
    assert L1Loss().input_space == "deltas" and SmoothL1Loss(input_space="boxes").input_space == "boxes"
    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    assert IoULoss(mode="iou", loss_weight=3.0)(boxes, boxes).item() == pytest.approx(0.0, abs=1e-6)
    assert "mode='ciou'" in repr(IoULoss())


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: IoULoss(mode="eiou"), "IoU mode"),
        (lambda: FocalLoss(reduction="avg"), "reduction"),
        (lambda: BCEWithLogitsLoss(label_smoothing=1.0), "label_smoothing"),
        (lambda: L1Loss(input_space="pixels"), "input_space"),
        (lambda: SmoothL1Loss(beta=-1.0), "beta"),
    ],
)
def test_invalid_module_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_iou_loss_penalties_hand_computed():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 0.0, 3.0, 2.0]])  # IoU = 2 / 6
    assert iou_loss(a, b, mode="iou", penalty="square").item() == pytest.approx(1 - 1 / 9, rel=1e-6)
    assert iou_loss(a, b, mode="iou", penalty="log").item() == pytest.approx(math.log(3), rel=1e-6)
    far = torch.tensor([[10.0, 10.0, 11.0, 11.0]])  # IoU 0: -log clamps at 1e-6
    assert iou_loss(a, far, mode="iou", penalty="log").item() == pytest.approx(-math.log(1e-6), rel=1e-6)
    with pytest.raises(ValueError, match="mode='iou' only"):
        IoULoss(mode="giou", penalty="square")
    with pytest.raises(ValueError, match="penalty"):
        IoULoss(mode="iou", penalty="cubic")


def test_distribution_focal_loss_hand_computed():
    # Uniform logits over 4 bins: every CE is log 4, so the loss is log 4 whatever the target.
    loss = distribution_focal_loss(torch.zeros(3, 4), torch.tensor([0.0, 1.3, 2.99]), reduction="none")
    assert loss.tolist() == pytest.approx([math.log(4)] * 3, rel=1e-6)
    # Target 1.25 between bins 1 and 2: 0.75 * CE(bin 1) + 0.25 * CE(bin 2).
    logits = torch.tensor([[0.0, 2.0, 1.0, -1.0]])
    log_p = torch.log_softmax(logits, -1)[0]
    expected = -(0.75 * log_p[1] + 0.25 * log_p[2]).item()
    assert distribution_focal_loss(logits, torch.tensor([1.25])).item() == pytest.approx(expected, rel=1e-6)
    # Minimised by the distribution that puts (0.75, 0.25) on those bins: gradient zero there.
    best = torch.tensor([[-30.0, math.log(0.75), math.log(0.25), -30.0]], requires_grad=True)
    distribution_focal_loss(best, torch.tensor([1.25])).backward()
    assert best.grad.abs().max().item() < 1e-6
    module = DistributionFocalLoss(loss_weight=2.0)
    assert module.input_space == "distribution"
    assert module(torch.zeros(2, 4), torch.tensor([0.5, 1.5]), reduction_override="sum").item() == pytest.approx(
        4 * math.log(4), rel=1e-6)
    with pytest.raises(ValueError, match="bins dimension"):
        distribution_focal_loss(torch.zeros(3, 4), torch.zeros(4))
