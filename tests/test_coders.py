import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from detkit.anchors import PointGenerator, YOLOAnchorGenerator
from detkit.coders import DFL_EDGE_EPS, MAX_LOG_SCALE, DeltaXYWHCoder, DFLCoder, DistanceCoder, YOLOCoder, YOLOXCoder


def priors_and_strides(dtype=torch.float64):
    gen = YOLOAnchorGenerator(base_sizes=[[(10, 13), (16, 30)], [(33, 23), (62, 45)]], strides=[8, 16])
    priors, strides, _ = gen.grid_priors([(3, 4), (2, 2)])
    return priors.to(dtype), strides


CODERS = {
    "yolo_exp": (YOLOCoder(), (-6, 6), (-3, 3)),
    "yolo_scaled": (YOLOCoder(scale_x_y=1.2), (-6, 6), (-3, 3)),
    "yolo_sigsq": (YOLOCoder(scale_x_y=2.0, size_mode="sigmoid_square"), (-6, 6), (-6, 6)),
    "delta": (DeltaXYWHCoder(means=(0.1, -0.1, 0, 0), stds=(0.1, 0.1, 0.2, 0.2)), (-5, 5), (-3, 3)),
    "distance_log": (DistanceCoder(log_scale=True), (-3, 3), (-3, 3)),
    "yolox": (YOLOXCoder(), (-3, 3), (-3, 3)),
}


@pytest.mark.parametrize("name", list(CODERS))
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 3))
def test_decode_encode_round_trip(name, seed, batch):
    """deltas -> boxes -> deltas -> boxes reproduces both within 1e-5 (fp64 inputs stay fp64)."""
    coder, (lo_xy, hi_xy), (lo_wh, hi_wh) = CODERS[name]
    priors, strides = priors_and_strides()
    g = torch.Generator().manual_seed(seed)
    n = priors.shape[0]
    xy = torch.rand(batch, n, 2, generator=g, dtype=torch.float64) * (hi_xy - lo_xy) + lo_xy
    wh = torch.rand(batch, n, 2, generator=g, dtype=torch.float64) * (hi_wh - lo_wh) + lo_wh
    deltas = torch.cat([xy, wh], dim=-1)
    boxes = coder.decode(priors, deltas, strides)
    assert boxes.shape == (batch, n, 4) and boxes.dtype == torch.float64
    again = coder.encode(priors, boxes, strides)
    torch.testing.assert_close(again, deltas, atol=1e-5, rtol=0)
    torch.testing.assert_close(coder.decode(priors, again, strides), boxes, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", list(CODERS))
def test_fp32_round_trip_and_half_inputs_decode_in_fp32(name):
    coder = CODERS[name][0]
    priors, strides = priors_and_strides(torch.float32)
    deltas = torch.linspace(-1, 1, priors.shape[0] * 4).view(-1, 4)  # (N*4,) -> (N, 4)
    boxes = coder.decode(priors, deltas, strides)
    assert boxes.dtype == torch.float32
    torch.testing.assert_close(coder.encode(priors, boxes, strides), deltas, atol=1e-4, rtol=1e-5)
    half = coder.decode(priors.half(), deltas.half(), strides)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, boxes, atol=0.05, rtol=1e-2)


def test_yolo_decode_hand_computed():
    # One prior of size (10, 20) in cell (x=2, y=1) at stride 8: centre (20, 12).
    priors = torch.tensor([[15.0, 2.0, 25.0, 22.0]])
    strides = torch.tensor([8.0])
    t = torch.tensor([[0.0, 0.0, math.log(2.0), 0.0]])
    # sigmoid(0) = 0.5 -> centre (2.5 * 8, 1.5 * 8) = (20, 12); size (20, 20).
    assert torch.allclose(YOLOCoder().decode(priors, t, strides), torch.tensor([[10.0, 2.0, 30.0, 22.0]]))
    # scale_x_y = 2: sigmoid(30) ~ 1 -> offset 2 * 1 - 0.5 = 1.5 cells; sigmoid(-30) ~ 0 -> -0.5.
    big = torch.tensor([[30.0, -30.0, 0.0, 0.0]])
    out = YOLOCoder(scale_x_y=2.0, size_mode="sigmoid_square").decode(priors, big, strides)
    # centre x = (1.5 + 2) * 8 = 28, y = (-0.5 + 1) * 8 = 4; size (2*0.5)^2 * anchor = anchor.
    assert torch.allclose(out, torch.tensor([[23.0, -6.0, 33.0, 14.0]]))


def test_yolo_encode_hand_computed_and_clamps_unreachable_targets():
    priors = torch.tensor([[15.0, 2.0, 25.0, 22.0]])  # centre (20, 12), cell (2, 1), stride 8
    strides = torch.tensor([8.0])
    gt = torch.tensor([[8.0, 2.0, 28.0, 12.0]])  # centre (18, 7), size (20, 10)
    t = YOLOCoder().encode(priors, gt, strides)
    # x offset 18/8 - 2 = 0.25 -> logit(0.25) = log(1/3); y offset 7/8 - 1 = -0.125 -> clamped.
    assert t[0, 0].item() == pytest.approx(math.log(1 / 3), abs=1e-6)
    assert t[0, 1].item() == pytest.approx(math.log(1e-6), abs=1e-3)
    assert t[0, 2].item() == pytest.approx(math.log(2.0), abs=1e-6)
    assert t[0, 3].item() == pytest.approx(math.log(0.5), abs=1e-6)
    # sigmoid_square cannot exceed 4x the anchor: the target clamps to a finite logit.
    huge = torch.tensor([[0.0, 0.0, 200.0, 200.0]])
    t2 = YOLOCoder(size_mode="sigmoid_square").encode(priors, huge, strides)
    assert torch.isfinite(t2).all() and t2[0, 2] > 10


def test_exp_clamped_for_untrained_outputs():
    priors, strides = priors_and_strides(torch.float32)
    wild = torch.full((priors.shape[0], 4), 1e4)
    for coder in (YOLOCoder(), DeltaXYWHCoder(), DistanceCoder(log_scale=True)):
        out = coder.decode(priors, wild, strides)
        assert torch.isfinite(out).all()
    width = YOLOCoder().decode(priors, wild, strides)[:, 2] - YOLOCoder().decode(priors, wild, strides)[:, 0]
    anchor_w = priors[:, 2] - priors[:, 0]
    torch.testing.assert_close(width, anchor_w * math.exp(MAX_LOG_SCALE), rtol=1e-5, atol=1e-3)


def test_degenerate_targets_encode_finite():
    priors, strides = priors_and_strides(torch.float32)
    flat = priors.clone()
    flat[:, 2] = flat[:, 0]  # zero width
    for coder in (YOLOCoder(), YOLOCoder(size_mode="sigmoid_square"), DeltaXYWHCoder(), DistanceCoder(log_scale=True)):
        assert torch.isfinite(coder.encode(priors, flat, strides)).all()


def test_delta_coder_matches_faster_rcnn_formula():
    priors = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    gt = torch.tensor([[5.0, 0.0, 25.0, 10.0]])  # centre (15, 5) size (20, 10); prior centre (5, 10)
    d = DeltaXYWHCoder().encode(priors, gt, torch.tensor([8.0]))
    expected = torch.tensor([[1.0, -0.25, math.log(2.0), math.log(0.5)]])
    torch.testing.assert_close(d, expected)
    norm = DeltaXYWHCoder(stds=(0.1, 0.1, 0.2, 0.2)).encode(priors, gt, None)
    torch.testing.assert_close(norm, expected / torch.tensor([0.1, 0.1, 0.2, 0.2]))


def test_distance_coder_hand_computed_normalised_and_clamped():
    gen = PointGenerator(strides=[8], scale=1.0)
    priors, strides, _ = gen.grid_priors([(1, 1)])  # centre (4, 4)
    gt = torch.tensor([[0.0, 2.0, 20.0, 12.0]])
    torch.testing.assert_close(DistanceCoder().encode(priors, gt, strides), torch.tensor([[0.5, 0.25, 2.0, 1.0]]))
    torch.testing.assert_close(
        DistanceCoder(normalize=False).encode(priors, gt, strides), torch.tensor([[4.0, 2.0, 16.0, 8.0]])
    )
    outside = torch.tensor([[6.0, 2.0, 40.0, 12.0]])  # centre (4, 4) left of the box
    clamped = DistanceCoder(max_distance=3.0).encode(priors, outside, strides)
    torch.testing.assert_close(clamped, torch.tensor([[0.0, 0.25, 3.0, 1.0]]))
    torch.testing.assert_close(DistanceCoder().decode(priors, DistanceCoder().encode(priors, gt, strides), strides), gt)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: YOLOCoder(scale_x_y=0.5), "scale_x_y"),
        (lambda: YOLOCoder(size_mode="linear"), "size_mode"),
        (lambda: DeltaXYWHCoder(stds=(1, 1, 0, 1)), "stds"),
        (lambda: DistanceCoder(max_distance=0), "max_distance"),
    ],
)
def test_invalid_arguments_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_wrong_last_dim_raises():
    priors, strides = priors_and_strides(torch.float32)
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        YOLOCoder().decode(priors, torch.zeros(priors.shape[0], 5), strides)


def test_yolox_coder_hand_computed():
    # Prior of the cell (x=2, y=1) at stride 8: centre (20, 12). YOLOX adds the raw offset to the
    # cell index, so zeros decode to a one-stride box centred on the cell's corner (16, 8).
    priors = torch.tensor([[16.0, 8.0, 24.0, 16.0]])
    strides = torch.tensor([8.0])
    box = YOLOXCoder().decode(priors, torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.5, 0.25, math.log(2), 0.0]]), strides)
    assert box.tolist() == [[12.0, 4.0, 20.0, 12.0], [12.0, 6.0, 28.0, 14.0]]
    target = YOLOXCoder().encode(priors, torch.tensor([[12.0, 6.0, 28.0, 14.0]]), strides)
    torch.testing.assert_close(target, torch.tensor([[0.5, 0.25, math.log(2), 0.0]]))


def _dfl_logits(distances, reg_max):
    """Bin logits whose softmax puts weights (i + 1 - d, d - i) on the bins around each distance."""
    d = torch.as_tensor(distances, dtype=torch.float64)
    left = d.floor().long().clamp(max=reg_max - 2)
    probs = torch.zeros(*d.shape, reg_max, dtype=torch.float64)
    probs.scatter_(-1, left[..., None], (left + 1 - d)[..., None])
    probs.scatter_add_(-1, (left + 1)[..., None], (d - left)[..., None])
    return probs.clamp(min=1e-300).log().flatten(-2)  # (..., 4, reg_max) -> (..., 4 * reg_max)


def test_dfl_coder_integral_decode_and_encode():
    coder = DFLCoder(reg_max=4)
    assert coder.num_params == 16
    priors = torch.tensor([[0.0, 0.0, 16.0, 16.0]], dtype=torch.float64)  # centre (8, 8)
    strides = torch.tensor([8.0])
    uniform = torch.zeros(1, 16, dtype=torch.float64)  # expectation (0 + 1 + 2 + 3) / 4 = 1.5 strides
    assert coder.decode(priors, uniform, strides).tolist() == [[-4.0, -4.0, 20.0, 20.0]]
    logits = _dfl_logits([[0.5, 1.25, 2.0, 2.99]], 4)
    boxes = coder.decode(priors, logits, strides)
    torch.testing.assert_close(boxes, torch.tensor([[4.0, -2.0, 24.0, 31.92]], dtype=torch.float64))
    torch.testing.assert_close(coder.encode(priors, boxes, strides), torch.tensor([[0.5, 1.25, 2.0, 2.99]],
                                                                                   dtype=torch.float64))
    # A side beyond the bins' reach is clamped just below the last bin.
    far = coder.encode(priors, torch.tensor([[-100.0, 8.0, 9.0, 100.0]], dtype=torch.float64), strides)
    assert far.tolist() == [[3 - DFL_EDGE_EPS, 0.0, 0.125, 3 - DFL_EDGE_EPS]]


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_dfl_coder_round_trip_on_representable_boxes(seed):
    coder = DFLCoder(reg_max=16)
    priors, strides = priors_and_strides()
    g = torch.Generator().manual_seed(seed)
    d = torch.rand(2, priors.shape[0], 4, generator=g, dtype=torch.float64) * (15 - DFL_EDGE_EPS)
    boxes = coder.decode(priors, _dfl_logits(d, 16), strides)
    torch.testing.assert_close(coder.encode(priors, boxes, strides), d, rtol=0, atol=1e-9)


def test_dfl_coder_rejects_bad_settings_and_shapes():
    with pytest.raises(ValueError, match="reg_max"):
        DFLCoder(reg_max=1)
    with pytest.raises(ValueError, match="4 \\* reg_max"):
        DFLCoder(reg_max=16).decode(torch.zeros(1, 4), torch.zeros(1, 4), torch.ones(1))


CHANNEL_CODERS = {
    "dfl": (DFLCoder(reg_max=16), 64),
    "dfl_4": (DFLCoder(reg_max=4), 16),
    "distance": (DistanceCoder(), 4),
    "distance_log": (DistanceCoder(log_scale=True), 4),
    "distance_pixels": (DistanceCoder(normalize=False), 4),
}


@pytest.mark.parametrize("name", list(CHANNEL_CODERS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_decode_channels_is_decode_with_the_sides_on_dim_1(name, dtype):
    """The exported graph's channel-first decode gives decode's boxes, transposed (fp64 stays fp64)."""
    coder, params = CHANNEL_CODERS[name]
    priors, strides = priors_and_strides(dtype)
    deltas = torch.randn(3, priors.shape[0], params, generator=torch.Generator().manual_seed(1), dtype=dtype) * 3
    expected = coder.decode(priors, deltas, strides)
    got = coder.decode_channels(priors, deltas.transpose(1, 2).contiguous(), strides)
    assert got.shape == (3, 4, priors.shape[0]) and got.dtype == dtype
    torch.testing.assert_close(got.transpose(1, 2), expected, rtol=0, atol=1e-4 if dtype == torch.float32 else 1e-10)


def test_decode_channels_hand_computed_and_shape_errors():
    priors = torch.tensor([[0.0, 0.0, 16.0, 16.0], [16.0, 0.0, 48.0, 32.0]])  # centres (8, 8), (32, 16)
    strides = torch.tensor([8.0, 16.0])
    uniform = torch.zeros(1, 16, 2)  # DFL reg_max 4, uniform bins: 1.5 strides per side
    assert DFLCoder(reg_max=4).decode_channels(priors, uniform, strides).tolist() == [
        [[-4.0, 8.0], [-4.0, -8.0], [20.0, 56.0], [20.0, 40.0]]]
    ltrb = torch.tensor([[[1.0, 0.5], [2.0, 0.0], [0.0, 1.0], [1.0, 2.0]]])  # (1, 4, 2): l, t, r, b per prior
    assert DistanceCoder().decode_channels(priors, ltrb, strides).tolist() == [
        [[0.0, 24.0], [-8.0, 16.0], [8.0, 48.0], [16.0, 48.0]]]
    with pytest.raises(ValueError, match=r"\(B, 16, N\)"):
        DFLCoder(reg_max=4).decode_channels(priors, torch.zeros(1, 2, 16), strides)  # priors-first by mistake
    with pytest.raises(ValueError, match=r"\(B, 4, N\)"):
        DistanceCoder().decode_channels(priors, torch.zeros(4, 2), strides)
