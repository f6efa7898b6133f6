import math

import pytest
import torch
import torchvision.ops as tvops
from hypothesis import given, settings
from hypothesis import strategies as st

from detkit.boxes import (
    aligned_iou,
    box_area,
    box_iou,
    cxcywh_to_xyxy,
    pairwise_iof,
    pairwise_iou,
    valid_gt_mask,
    xywh_to_xyxy,
    xyxy_to_cxcywh,
    xyxy_to_xywh,
)

MODES = ["iou", "giou", "diou", "ciou"]


def random_boxes(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 100
    wh = torch.rand(n, 2, generator=g) * 50 + 1
    return torch.cat([xy, xy + wh], dim=1)


def test_format_conversions_exact():
    b = torch.tensor([[10.0, 20.0, 50.0, 80.0]])
    assert torch.equal(xyxy_to_cxcywh(b), torch.tensor([[30.0, 50.0, 40.0, 60.0]]))
    assert torch.equal(xyxy_to_xywh(b), torch.tensor([[10.0, 20.0, 40.0, 60.0]]))
    assert torch.equal(cxcywh_to_xyxy(xyxy_to_cxcywh(b)), b)
    assert torch.equal(xywh_to_xyxy(xyxy_to_xywh(b)), b)


def test_conversions_keep_leading_dims():
    b = random_boxes(12, 0).view(3, 4, 4)
    assert xyxy_to_cxcywh(b).shape == (3, 4, 4)
    assert torch.allclose(cxcywh_to_xyxy(xyxy_to_cxcywh(b)), b, atol=1e-5)


def test_hand_computed_iou_values():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0]])
    # inter 1, union 7; enclosing 3x3=9 -> giou = 1/7 - 2/9
    assert box_iou(a, b).item() == pytest.approx(1 / 7)
    assert box_iou(a, b, "giou").item() == pytest.approx(1 / 7 - 2 / 9)
    # centres (1,1) and (2,2): rho^2 = 2, diagonal^2 = 18 -> diou = 1/7 - 1/9
    assert box_iou(a, b, "diou").item() == pytest.approx(1 / 7 - 1 / 9, abs=1e-6)
    # same aspect ratio -> v = 0, ciou == diou
    assert box_iou(a, b, "ciou").item() == pytest.approx(1 / 7 - 1 / 9, abs=1e-6)
    assert aligned_iou(a, b, "giou").item() == pytest.approx(1 / 7 - 2 / 9, abs=1e-6)


def test_ciou_aspect_term_hand_computed():
    a = torch.tensor([[0.0, 0.0, 4.0, 2.0]])  # w/h = 2
    b = torch.tensor([[0.0, 0.0, 2.0, 2.0]])  # w/h = 1
    iou = 0.5
    rho2, diag2 = 1.0, 16.0 + 4.0  # centres (2,1) vs (1,1); enclosing 4x2
    v = 4 / math.pi**2 * (math.atan(1.0) - math.atan(2.0)) ** 2
    alpha = v / (1 - iou + v)
    expected = iou - rho2 / diag2 - alpha * v
    assert aligned_iou(a, b, "ciou").item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_pairwise_matches_torchvision(mode):
    a, b = random_boxes(7, 1), random_boxes(5, 2)
    ref = {"iou": tvops.box_iou, "giou": tvops.generalized_box_iou,
           "diou": tvops.distance_box_iou, "ciou": tvops.complete_box_iou}[mode](a, b)
    assert torch.allclose(box_iou(a, b, mode), ref, atol=1e-5)
    assert torch.allclose(pairwise_iou(a, b, mode), ref, atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_aligned_is_the_diagonal_of_pairwise(mode):
    a, b = random_boxes(6, 3), random_boxes(6, 4)
    assert torch.allclose(aligned_iou(a, b, mode), torch.diagonal(box_iou(a, b, mode)), atol=1e-5)


def test_batched_pairwise_equals_per_image():
    a = random_boxes(10, 5)
    b = random_boxes(8, 6).view(2, 4, 4)
    out = box_iou(a, b)
    assert out.shape == (2, 10, 4)
    for i in range(2):
        assert torch.allclose(out[i], tvops.box_iou(a, b[i]), atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_degenerate_boxes_are_defined(mode):
    zero = torch.tensor([[5.0, 5.0, 5.0, 5.0]])  # zero area
    line = torch.tensor([[0.0, 5.0, 10.0, 5.0]])  # zero height
    box = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    for x, y in [(zero, zero), (zero, box), (line, box), (line, line)]:
        v = box_iou(x, y, mode)
        assert torch.isfinite(v).all()
        assert aligned_iou(x, y, mode).isfinite().all()
    assert box_iou(zero, box).item() == 0.0 and box_iou(zero, zero).item() == 0.0


def test_identical_nested_disjoint():
    box = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    inner = torch.tensor([[2.0, 2.0, 4.0, 4.0]])
    far = torch.tensor([[20.0, 20.0, 30.0, 30.0]])
    for mode in MODES:
        assert aligned_iou(box, box, mode).item() == pytest.approx(1.0, abs=1e-6)
    assert aligned_iou(box, inner).item() == pytest.approx(4 / 100)
    assert aligned_iou(box, far).item() == 0.0
    # disjoint: GIoU = 0 - (900 - 200) / 900
    assert aligned_iou(box, far, "giou").item() == pytest.approx(-700 / 900)


def test_fp16_inputs_compute_in_fp32():
    a = random_boxes(4, 7).half()
    b = random_boxes(3, 8).half()
    for mode in MODES:
        out = box_iou(a, b, mode)
        assert out.dtype == torch.float32
        assert torch.allclose(out, box_iou(a.float(), b.float(), mode), atol=1e-6)
    assert box_area(a).dtype == torch.float32


@pytest.mark.parametrize("mode", MODES)
def test_loss_gradients_finite_on_degenerate_boxes(mode):
    pred = torch.tensor([[5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 0.0, 10.0]], requires_grad=True)
    target = torch.tensor([[5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 3.0, 3.0]])
    (1 - aligned_iou(pred, target, mode)).sum().backward()
    assert torch.isfinite(pred.grad).all()


@pytest.mark.parametrize("mode", ["diou", "ciou"])
def test_centre_term_of_an_inverted_box_is_capped_at_one(mode):
    # Inverted (10,10)-(0,0) against the point box at (20, 20): centres (5, 5) and (20, 20), the
    # "enclosing" box (10,10)-(20,20) does not hold them, rho2 / diag2 = 450 / 200 > 1. The cap gives
    # IoU 0 - 1 (v = 0 for CIoU: both clamped widths are 0); against a zero-size enclosing box the
    # uncapped term would be rho2 / eps.
    pred = torch.tensor([[10.0, 10.0, 0.0, 0.0]], requires_grad=True)
    target = torch.tensor([[20.0, 20.0, 20.0, 20.0]])
    out = aligned_iou(pred, target, mode)
    assert out.tolist() == [-1.0]
    out.sum().backward()
    assert torch.isfinite(pred.grad).all()
    # well-formed boxes never reach the cap: DIoU of two far-apart unit boxes stays above -1
    a, b = torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([[99.0, 99.0, 100.0, 100.0]])
    assert -1.0 < float(aligned_iou(a, b, "diou")) < -0.96


def test_unknown_mode_is_a_value_error():
    with pytest.raises(ValueError, match="accepted: iou, giou, diou, ciou"):
        box_iou(random_boxes(1, 0), random_boxes(1, 1), "xiou")


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(*[st.floats(0, 100, allow_nan=False)] * 4), min_size=1, max_size=6),
       st.lists(st.tuples(*[st.floats(0, 100, allow_nan=False)] * 4), min_size=1, max_size=6))
def test_iou_bounds_property(raw_a, raw_b):
    def to_boxes(raw):
        t = torch.tensor(raw)
        return torch.cat([torch.minimum(t[:, :2], t[:, 2:]), torch.maximum(t[:, :2], t[:, 2:])], 1)

    a, b = to_boxes(raw_a), to_boxes(raw_b)
    iou = box_iou(a, b)
    assert (iou >= 0).all() and (iou <= 1 + 1e-6).all()
    # GIoU, DIoU in [-1, IoU]; CIoU subtracts alpha*v <= 1/2 more (v <= 1), so [-1.5, IoU]
    for mode, low in (("giou", -1.0), ("diou", -1.0), ("ciou", -1.5)):
        v = box_iou(a, b, mode)
        assert (v >= low - 1e-6).all() and (v <= iou + 1e-6).all()


@pytest.mark.parametrize("mode", MODES)
def test_pairwise_batched_and_aligned_agree_bit_for_bit(mode):
    # One body for the family: the same pair gives the same fp32 value in every shape.
    a = random_boxes(12, 9).view(3, 4, 4)
    b = random_boxes(15, 10).view(3, 5, 4)
    batched = pairwise_iou(a, b, mode)  # (3, 4, 5)
    for i in range(3):
        assert torch.equal(batched[i], pairwise_iou(a[i], b[i], mode))
        assert torch.equal(batched[i], box_iou(a[i], b[i], mode))
        rows, cols = torch.meshgrid(torch.arange(4), torch.arange(5), indexing="ij")
        assert torch.equal(batched[i], aligned_iou(a[i][rows], b[i][cols], mode))
    shared = pairwise_iou(a, b[0], mode)  # GTs (3, 4, 4) against shared boxes (5, 4)
    assert torch.equal(shared[1], pairwise_iou(a[1], b[0], mode))


def test_iof_hand_computed():
    priors = torch.tensor([[0.0, 0.0, 4.0, 4.0], [10.0, 10.0, 12.0, 12.0], [3.0, 3.0, 3.0, 8.0]])
    crowd = torch.tensor([[2.0, 0.0, 8.0, 8.0], [11.0, 11.0, 20.0, 20.0]])
    # prior 0: 2x4 of its 16 inside crowd 0; prior 1: 1x1 of its 4 inside crowd 1; prior 2 has no area
    expected = torch.tensor([[0.5, 0.0], [0.0, 0.25], [0.0, 0.0]])
    assert torch.equal(pairwise_iof(priors, crowd), expected)
    batched = pairwise_iof(priors, torch.stack([crowd, crowd.flip(0)]))  # (N, 4) with (2, J, 4) -> (2, N, J)
    assert torch.equal(batched[0], expected) and torch.equal(batched[1], expected.flip(1))


@pytest.mark.parametrize("mode", MODES)
def test_degenerate_pairs_give_zero_iou_never_nan(mode):
    zero = torch.tensor([[5.0, 5.0, 5.0, 5.0], [0.0, 5.0, 10.0, 5.0]])  # a point, a line
    box = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 5.0, 5.0]])
    assert torch.equal(pairwise_iou(zero, box), torch.zeros(2, 2))
    assert torch.equal(aligned_iou(zero, box), torch.zeros(2))
    assert torch.equal(pairwise_iof(zero, box), torch.zeros(2, 2))
    assert not pairwise_iou(zero, box, mode).isnan().any()


def test_batched_nms_runs_on_this_torch_torchvision_pair():
    """A broken torch/torchvision pairing fails here ('operator torchvision::nms does not exist')."""
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    labels = torch.tensor([0, 0, 1])
    keep = tvops.batched_nms(boxes, scores, labels, 0.5)
    assert keep.tolist() == [0, 2]  # box 1 suppressed by box 0 (same class); box 2 other class


def test_valid_gt_mask_rule():
    boxes = torch.tensor([[[0.0, 0, 10, 10], [0, 0, 0, 10], [5, 5, 4, 9], [0, 0, float("inf"), 5],
                           [float("nan"), 0, 3, 3], [1, 1, 2, 2]]])
    mask = torch.tensor([[True, True, True, True, True, False]])
    assert valid_gt_mask(boxes, mask).tolist() == [[True, False, False, False, False, False]]
