"""Drawing helpers: detections, assignment pictures, curves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detkit.viz import color_for, draw_assignment, draw_detections, image_grid, plot_curves, tensor_to_bgr


def test_draw_detections_draws_above_threshold_only():
    image = np.zeros((64, 64, 3), np.uint8)
    boxes = torch.tensor([[10.0, 20.0, 40.0, 50.0], [0.0, 0.0, 5.0, 5.0]])
    out = draw_detections(image, boxes, torch.tensor([0.9, 0.1]), torch.tensor([1, 0]), ["a", "b"], score_thr=0.5)
    assert image.sum() == 0  # the input is not modified
    assert tuple(out[50, 25]) == color_for(1)  # bottom edge of the kept box in class 1's colour
    assert out[4, 4].sum() == 0  # the low-score box is not drawn


def test_draw_assignment_colours_positives_by_gt():
    image = np.zeros((64, 64, 3), np.uint8)
    gt = torch.tensor([[4.0, 4.0, 30.0, 30.0], [0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([True, False])
    priors = torch.tensor([[8.0, 8.0, 24.0, 24.0], [40.0, 40.0, 56.0, 56.0]])
    out = draw_assignment(image, gt, mask, priors, torch.tensor([0, -1]), torch.tensor([True, False]))
    assert tuple(out[16, 16]) == color_for(0)  # the positive prior's centre dot
    assert out[48, 48].sum() == 0  # the negative prior is not drawn


def test_tensor_to_bgr_and_curves(tmp_path):
    rgb = torch.zeros(3, 2, 2)
    rgb[0] = 1.0  # red
    assert tensor_to_bgr(rgb)[0, 0].tolist() == [0, 0, 255]
    with pytest.raises(ValueError, match="expected a"):
        tensor_to_bgr(torch.zeros(2, 2))
    plot_curves({"loss": [(1, 2.0), (2, 1.0)], "empty": []}, tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 1000
    plot_curves({"empty": []}, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def test_ground_truth_is_drawn_without_scores():
    image = np.zeros((64, 64, 3), np.uint8)
    out = draw_detections(image, torch.tensor([[10.0, 20.0, 40.0, 50.0]]), None, torch.tensor([2]), ["a", "b", "c"])
    assert tuple(out[50, 25]) == color_for(2)


def test_image_grid_fits_each_image_in_its_tile():
    wide = np.full((50, 100, 3), 200, np.uint8)
    tall = np.full((100, 20, 3), 50, np.uint8)
    grid = image_grid([wide, tall, wide], cols=2, tile=40, fill=114)
    assert grid.shape == (80, 80, 3)
    assert grid[10, 20].tolist() == [200] * 3 and grid[30, 20].tolist() == [114] * 3  # wide: 40 x 20, top-left
    assert grid[20, 44].tolist() == [50] * 3 and grid[20, 60].tolist() == [114] * 3  # tall: 8 x 40 in tile 2
    assert grid[50, 60].tolist() == [114] * 3  # the empty fourth cell
    with pytest.raises(ValueError, match="image_grid needs images"):
        image_grid([], cols=2, tile=40)
