import pytest
import torch

from detkit.anchors import YOLOV4_COCO_ANCHORS, PointGenerator, PriorGrid, YOLOAnchorGenerator


def test_yolo_anchor_order_level_location_anchor():
    gen = YOLOAnchorGenerator(base_sizes=[[(2, 4), (6, 2)], [(10, 10), (20, 8)]], strides=[4, 8])
    priors, strides, counts = gen.grid_priors([(2, 3), (1, 1)])
    assert gen.num_base_priors == 2
    assert counts == [12, 2]
    assert priors.shape == (14, 4) and priors.dtype == torch.float32
    # Level 0, location (y=0, x=0): centre (2, 2), anchors (2, 4) then (6, 2).
    assert torch.equal(priors[0], torch.tensor([1.0, 0.0, 3.0, 4.0]))
    assert torch.equal(priors[1], torch.tensor([-1.0, 1.0, 5.0, 3.0]))
    # Location (y=0, x=1) comes next (row-major): centre (6, 2).
    assert torch.equal(priors[2], torch.tensor([5.0, 0.0, 7.0, 4.0]))
    # Location (y=1, x=2) is the last of level 0: centre (10, 6), second anchor.
    assert torch.equal(priors[11], torch.tensor([7.0, 5.0, 13.0, 7.0]))
    # Level 1, single cell, centre (4, 4).
    assert torch.equal(priors[12], torch.tensor([-1.0, -1.0, 9.0, 9.0]))
    assert torch.equal(priors[13], torch.tensor([-6.0, 0.0, 14.0, 8.0]))
    assert torch.equal(strides, torch.tensor([4.0] * 12 + [8.0] * 2))


def test_yolo_anchor_order_matches_head_flatten():
    """A raw map flattened the head's way lines up with the priors' order."""
    gen = YOLOAnchorGenerator(base_sizes=[[(1, 1), (2, 2), (3, 3)]], strides=[16])
    priors, _, _ = gen.grid_priors([(3, 5)])
    h, w, a = 3, 5, 3
    # Fake raw map (1, A*5, H, W) whose channels hold [cx, cy, w, h, 0] of each prior.
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    raw = torch.zeros(1, a, 5, h, w)
    for k in range(a):
        raw[0, k, 0] = (xs + 0.5) * 16
        raw[0, k, 1] = (ys + 0.5) * 16
        raw[0, k, 2] = k + 1
        raw[0, k, 3] = k + 1
    # (1, A*5, H, W) -> (1, A, 5, H, W) -> (1, H, W, A, 5) -> (1, H*W*A, 5)
    flat = raw.view(1, a * 5, h, w).view(1, a, 5, h, w).permute(0, 3, 4, 1, 2).reshape(1, h * w * a, 5)
    centres = (priors[:, :2] + priors[:, 2:]) / 2
    assert torch.equal(flat[0, :, :2], centres)
    assert torch.equal(flat[0, :, 2], priors[:, 2] - priors[:, 0])


def test_default_anchors_are_yolov4_coco():
    gen = YOLOAnchorGenerator()
    assert gen.base_sizes[2][2] == (459.0, 401.0)
    assert len(YOLOV4_COCO_ANCHORS) == 3 and all(len(level) == 3 for level in YOLOV4_COCO_ANCHORS)
    priors, strides, counts = gen.grid_priors([(80, 80), (40, 40), (20, 20)])
    assert counts == [19200, 4800, 1200]
    assert priors.shape == (25200, 4) and strides.shape == (25200,)


def test_grid_priors_cached_per_sizes_and_device():
    gen = YOLOAnchorGenerator()
    a = gen.grid_priors([(4, 4), (2, 2), (1, 1)], "cpu")
    b = gen.grid_priors([(4, 4), (2, 2), (1, 1)], torch.device("cpu"))
    c = gen.grid_priors([(8, 8), (4, 4), (2, 2)], "cpu")
    assert a is b
    assert c.boxes is not a.boxes and c.num_priors == 3 * (64 + 16 + 4)


def test_point_generator_squares_of_scale_times_stride():
    gen = PointGenerator(strides=[8, 16], scale=2.0)
    priors, strides, counts = gen.grid_priors([(1, 2), (1, 1)])
    assert gen.num_base_priors == 1
    assert counts == [2, 1]
    expected = torch.tensor([[-4.0, -4.0, 12.0, 12.0], [4.0, -4.0, 20.0, 12.0], [-8.0, -8.0, 24.0, 24.0]])
    assert torch.equal(priors, expected)
    assert torch.equal(strides, torch.tensor([8.0, 8.0, 16.0]))


def test_empty_level_gives_zero_priors():
    gen = PointGenerator(strides=[8, 16])
    priors, strides, counts = gen.grid_priors([(0, 5), (1, 1)])
    assert counts == [0, 1] and priors.shape == (1, 4) and strides.tolist() == [16.0]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(base_sizes=[[(1, 1)], [(1, 1), (2, 2)]], strides=[8, 16]),  # unequal anchor counts
        dict(base_sizes=[[(1, 1)]], strides=[8, 16]),  # levels != strides
        dict(base_sizes=[[(0, 1)]], strides=[8]),  # non-positive size
        dict(base_sizes=[[(1, 1)]], strides=[0]),  # non-positive stride
    ],
)
def test_invalid_anchor_config_raises(kwargs):
    with pytest.raises(ValueError, match="must"):
        YOLOAnchorGenerator(**kwargs)


def test_wrong_featmap_count_raises():
    with pytest.raises(ValueError, match="featmap_sizes"):
        PointGenerator(strides=[8, 16]).grid_priors([(2, 2)])
    with pytest.raises(ValueError, match="scale"):
        PointGenerator(scale=0)


def test_prior_grid_levels_as_the_generator_lays_them_out():
    gen = YOLOAnchorGenerator(base_sizes=[[(2, 4), (6, 2)], [(10, 10), (20, 8)]], strides=[4, 8])
    grid = gen.grid_priors([(2, 3), (1, 1)])
    assert isinstance(grid, PriorGrid)
    assert grid.num_priors == 14 and grid.num_level_priors == [12, 2]
    first, second = grid.levels
    assert (first.start, first.height, first.width, first.anchors, first.stride, first.offset) == (0, 2, 3, 2, 4.0, 0.5)
    assert (second.start, second.stop, second.size) == (12, 14, 2)
    assert torch.equal(first.anchor_sizes, torch.tensor([[2.0, 4.0], [6.0, 2.0]]))
    assert torch.equal(first.xs, torch.tensor([2.0, 6.0, 10.0])) and torch.equal(first.ys, torch.tensor([2.0, 6.0]))
    assert first.extent == (3.0, 2.0) and second.extent == (10.0, 5.0)
    assert first.shared_centres and second.shared_centres
    # centres as the assigners compute them, and the prior of cell (y, x), anchor a
    assert torch.equal(grid.centres, (grid.boxes[:, :2] + grid.boxes[:, 2:]) / 2)
    y, x, a = 1, 2, 1
    assert torch.equal(grid.centres[first.start + (y * first.width + x) * first.anchors + a], torch.tensor([10.0, 6.0]))
    boxes, strides, counts = grid  # unpacks as the former tuple
    assert boxes is grid.boxes and strides is grid.strides and counts == [12, 2]


def test_prior_grid_centres_of_anchors_whose_halves_round():
    """xs / ys are read from the boxes: (x1 + x2) / 2 in fp32, which need not be the cell centre exactly."""
    gen = YOLOAnchorGenerator(base_sizes=[[(0.3, 0.7), (16.1, 30.9)]], strides=[8])
    grid = gen.grid_priors([(5, 7)])
    level = grid.levels[0]
    assert torch.equal(level.xs, grid.centres[0:7 * 2:2, 0]) and torch.equal(level.ys, grid.centres[::7 * 2, 1])
    per_anchor_equal = bool((grid.centres.view(5, 7, 2, 2) == grid.centres.view(5, 7, 2, 2)[:, :, :1]).all())
    assert level.shared_centres == per_anchor_equal


def test_prior_grid_keeps_empty_levels():
    grid = PointGenerator(strides=[8, 16]).grid_priors([(0, 5), (1, 1)])
    assert grid.num_level_priors == [0, 1] and len(grid.levels) == 2
    assert grid.levels[0].size == 0 and grid.levels[1].start == 0
