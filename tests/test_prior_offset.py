"""Point priors at a chosen place in their cell (``PointGenerator(offset=)``): RTMDet's corner grid
(offset 0) next to detkit's centre grid (0.5), assignment on corner grids, and RTMDet-s training on it."""

from __future__ import annotations

import math
from dataclasses import fields, replace
from pathlib import Path

import pytest
import torch

from detkit.anchors import PointGenerator
from detkit.assigners.presets import ASSIGNER_PRESETS, build_preset
from detkit.config import instantiate, load_config
from detkit.testing import random_inputs


@pytest.mark.parametrize("offset, first", [(0.0, 0.0), (0.5, 4.0)])
def test_point_generator_2x2_grid_at_offset(offset, first):
    grid = PointGenerator(strides=[8], scale=1.0, offset=offset).grid_priors([(2, 2)])
    # points (x + offset) * 8, (y + offset) * 8, row-major; squares of side 1 * 8 around them
    points = torch.tensor([[first, first], [first + 8, first], [first, first + 8], [first + 8, first + 8]])
    assert torch.equal(grid.boxes, torch.cat([points - 4, points + 4], 1))
    assert torch.equal(grid.centres, points)
    level = grid.levels[0]
    assert level.offset == offset
    assert torch.equal(level.xs, torch.tensor([first, first + 8])) and torch.equal(level.ys, level.xs)
    assert grid.to("cpu").levels[0].offset == offset


def test_point_generator_default_offset_is_the_cell_centre():
    gen = PointGenerator(strides=[16])
    assert gen.offset == 0.5 and "offset=0.5" in repr(gen)
    assert torch.equal(gen.grid_priors([(1, 1)]).centres, torch.tensor([[8.0, 8.0]]))


@pytest.mark.parametrize("offset", [-0.25, 1.0, 1.5, math.nan])
def test_point_generator_refuses_offsets_outside_a_cell(offset):
    with pytest.raises(ValueError, match="offset must be in \\[0, 1\\)"):
        PointGenerator(strides=[8], offset=offset)


def _corner_grid_inputs(seed: int, valid: list[int]):
    """The conformance kit's random GTs (64 px input) on a corner-point grid (strides 8 / 16 / 32)."""
    grid = PointGenerator(strides=[8, 16, 32], offset=0.0).grid_priors([(8, 8), (4, 4), (2, 2)])
    base = random_inputs(seed, num_gts=max(valid), valid_per_image=valid)
    g = torch.Generator().manual_seed(seed + 1)
    n, b = grid.num_priors, base.batch
    xy = torch.rand(b, n, 2, generator=g) * 60
    pred_boxes = torch.cat([xy, xy + torch.rand(b, n, 2, generator=g) * 30 + 1], -1)
    pred_scores = torch.rand(b, n, base.pred_scores.shape[-1], generator=g)
    return replace(base, priors=grid.boxes, prior_strides=grid.strides, num_level_priors=grid.num_level_priors,
                   pred_boxes=pred_boxes, pred_scores=pred_scores, grid=grid, description="corner grid")


@pytest.mark.parametrize("name", [*ASSIGNER_PRESETS, "atss+minpos", "simota+minpos2"])
def test_corner_grid_assignment_equals_the_all_pairs_form(name):
    rule = build_preset(name)
    compared = positives = 0
    for seed, valid in ((3, [5, 5, 5]), (4, [7, 2, 0]), (5, [12, 9, 1])):
        inputs = _corner_grid_inputs(seed, valid)
        try:
            ref = inputs.run(rule, as_grid=False)
        except ValueError as e:  # grid / YOLOv5: cell arithmetic, bare priors refused by design
            assert "PriorGrid" in str(e)
            continue
        res = inputs.run(rule)
        positives += int(res.pos_mask.sum())
        for f in fields(res):
            got, want = getattr(res, f.name), getattr(ref, f.name)
            if isinstance(want, torch.Tensor):
                assert torch.equal(got, want), f"{name}: {f.name} differs (seed {seed})"
            else:
                assert got == want, f"{name}: {f.name} differs (seed {seed})"
        compared += 1
    if name in ("grid", "yolov5"):
        assert compared == 0
    else:
        assert compared == 3 and positives > 0


def test_rtmdet_s_trains_on_corner_priors_and_its_loss_differs_from_centre_priors():
    config = Path(__file__).resolve().parents[1] / "configs/rtmdet_s_dsl.py"
    torch.manual_seed(0)
    corner = instantiate(load_config(config, ["model.head.num_classes=3"]).model).train()
    centre = instantiate(load_config(config, ["model.head.num_classes=3",
                                              "model.head.prior_generator.offset=0.5"]).model).train()
    centre.load_state_dict(corner.state_dict())
    assert corner.head.prior_generator.offset == 0.0 and centre.head.prior_generator.offset == 0.5
    batch = {
        "images": torch.rand(2, 3, 96, 128),
        "gt_boxes": torch.tensor([[[10.0, 12.0, 60.0, 70.0], [70.0, 20.0, 90.0, 36.0]],
                                  [[0.0, 0.0, 128.0, 96.0], [0.0, 0.0, 0.0, 0.0]]]),
        "gt_labels": torch.tensor([[0, 2], [1, 0]]),
        "gt_mask": torch.tensor([[True, True], [True, False]]),
    }
    totals = []
    for model in (corner, centre):
        losses = model.loss(batch)
        total = sum(v for k, v in losses.items() if k.startswith("loss_"))
        assert torch.isfinite(total) and total > 0
        total.backward()
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
        totals.append(float(total.detach()))
    grid = corner.head.priors([torch.zeros(1, 1, 12, 16), torch.zeros(1, 1, 6, 8), torch.zeros(1, 1, 3, 4)])
    assert torch.equal(grid.centres[:2], torch.tensor([[0.0, 0.0], [8.0, 0.0]]))  # corners of the first cells
    assert abs(totals[0] - totals[1]) > 1e-4 * totals[1]
