"""collate padding and metadata; build_dataloader seeding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detkit.data import CocoDataset, Compose, RandomFlip, build_dataloader, collate
from detkit.data.base import empty_sample


def sample(h: int, w: int, n: int, image_id: int, ign: int = 0) -> dict:
    s = empty_sample(np.full((h, w, 3), 255, np.uint8), image_id)
    s["boxes"] = np.arange(n * 4, dtype=np.float32).reshape(n, 4) + 1
    s["labels"] = np.arange(n, dtype=np.int64) + 3
    s["ignore_boxes"] = np.ones((ign, 4), np.float32)
    s["scale_factor"], s["pad"] = (0.5, 0.25), (2.0, 3.0)
    return s


def test_collate_pads_targets_and_false_rows_are_zero():
    b = collate([sample(32, 32, 2, 7), sample(32, 32, 0, 8), sample(32, 32, 3, 9, ign=1)])
    assert b["images"].shape == (3, 3, 32, 32) and b["images"].dtype == torch.float32
    assert float(b["images"].max()) == 1.0
    assert b["gt_boxes"].shape == (3, 3, 4) and b["gt_labels"].dtype == torch.long
    np.testing.assert_array_equal(b["gt_mask"].numpy(), [[1, 1, 0], [0, 0, 0], [1, 1, 1]])
    assert (b["gt_boxes"][~b["gt_mask"]] == 0).all() and (b["gt_labels"][~b["gt_mask"]] == 0).all()
    np.testing.assert_array_equal(b["gt_labels"][2].numpy(), [3, 4, 5])
    np.testing.assert_allclose(b["gt_boxes"][0, 1].numpy(), [5, 6, 7, 8])
    assert b["ignore_boxes"].shape == (3, 1, 4)
    np.testing.assert_array_equal(b["ignore_mask"].numpy(), [[0], [0], [1]])
    assert b["image_ids"].tolist() == [7, 8, 9]
    assert b["ori_sizes"].tolist() == [[32, 32]] * 3 and b["ori_sizes"].dtype == torch.long
    assert b["scale_factors"].tolist() == [[0.5, 0.25]] * 3 and b["pads"].tolist() == [[2.0, 3.0]] * 3


def test_collate_no_boxes_anywhere_gives_one_false_row():
    b = collate([sample(8, 8, 0, 1)])
    assert b["gt_boxes"].shape == (1, 1, 4) and not b["gt_mask"].any()
    assert b["ignore_boxes"].shape == (1, 1, 4) and not b["ignore_mask"].any()


def test_collate_pads_mixed_sizes_bottom_right_to_divisor():
    b = collate([sample(40, 20, 1, 1), sample(30, 50, 1, 2)], size_divisor=32)
    assert b["images"].shape == (2, 3, 64, 64)
    assert float(b["images"][0, 0, 39, 19]) == 1.0  # image pixel
    assert float(b["images"][0, 0, 40, 0]) == pytest.approx(114 / 255)  # padding below
    u8 = collate([sample(40, 20, 1, 1)], to_float=False)["images"]
    assert u8.dtype == torch.uint8 and u8.is_contiguous()
    with pytest.raises(ValueError, match="no samples"):
        collate([])


def ids_of(loader) -> list[int]:
    return [i for b in loader for i in b["image_ids"].tolist()]


def test_loader_shuffle_is_seeded_and_images_are_float(coco_dir):
    ds = CocoDataset(str(coco_dir / "ann.json"), str(coco_dir / "images"), pipeline=Compose([RandomFlip()]))
    a = build_dataloader(ds, batch_size=2, num_workers=0, shuffle=True, seed=3)
    b = build_dataloader(ds, batch_size=2, num_workers=0, shuffle=True, seed=3)
    assert ids_of(a) == ids_of(b)
    batch = next(iter(a))
    assert batch["images"].dtype == torch.float32 and batch["images"].shape[1:] == (3, 64, 64)
    assert sorted(ids_of(build_dataloader(ds, batch_size=2, num_workers=0, shuffle=False))) == [1, 2, 3]


def test_loader_workers_seed_augmentation_reproducibly(coco_dir):
    ds = CocoDataset(str(coco_dir / "ann.json"), str(coco_dir / "images"), pipeline=[RandomFlip(p=0.5)])
    runs = []
    for _ in range(2):
        loader = build_dataloader(ds, batch_size=3, num_workers=2, shuffle=False, seed=5, persistent_workers=False)
        runs.append(torch.cat([b["gt_boxes"] for b in loader]))
    assert torch.equal(runs[0], runs[1])


def test_distributed_without_process_group_raises(coco_dir):
    ds = CocoDataset(str(coco_dir / "ann.json"), str(coco_dir / "images"))
    with pytest.raises(ValueError, match="not initialised"):
        build_dataloader(ds, batch_size=2, distributed=True)


def test_distributed_sampler_under_a_process_group(coco_dir, tmp_path):
    import torch.distributed as dist
    from torch.utils.data import DistributedSampler

    ds = CocoDataset(str(coco_dir / "ann.json"), str(coco_dir / "images"))
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        loader = build_dataloader(ds, batch_size=2, num_workers=0, distributed=True, seed=1)
        assert isinstance(loader.sampler, DistributedSampler)
        loader.set_epoch(1)
        assert loader.sampler.epoch == 1
        assert sorted(ids_of(loader)) == [1, 2, 3]
    finally:
        dist.destroy_process_group()


def test_loader_device_and_uint8_options(coco_dir):
    ds = CocoDataset(str(coco_dir / "ann.json"), str(coco_dir / "images"))
    b = next(iter(build_dataloader(ds, batch_size=3, num_workers=0, float_images=False)))
    assert b["images"].dtype == torch.uint8 and int(b["images"].max()) > 1
    f = next(iter(build_dataloader(ds, batch_size=3, num_workers=0, shuffle=False, device="cpu")))
    u = next(iter(build_dataloader(ds, batch_size=3, num_workers=0, shuffle=False, float_images=False)))
    assert torch.equal(f["images"], u["images"].float() / 255)
