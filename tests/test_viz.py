"""Drawing helpers: detections, assignment pictures, curves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detkit.viz import color_for, draw_assignment, draw_detections, plot_curves, tensor_to_bgr


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
