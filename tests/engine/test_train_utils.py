"""Multi-scale resize, the switchable transforms, assigner schedule lookup, device and determinism helpers."""

from __future__ import annotations

import pytest
import torch

from detkit.engine.train_utils import (
    assigner_index,
    find_objects,
    multi_scale_size,
    resize_batch,
    resolve_device,
    seed_everything,
    switch_transforms,
)
from tests.engine.standins import Mosaic


def test_multi_scale_size_is_a_reproducible_multiple_of_32():
    sizes = [multi_scale_size(320, 640, seed=0, step=s) for s in range(50)]
    assert all(s % 32 == 0 and 320 <= s <= 640 for s in sizes)
    assert len(set(sizes)) > 3
    assert sizes == [multi_scale_size(320, 640, seed=0, step=s) for s in range(50)]
    with pytest.raises(ValueError, match="no multiple"):
        multi_scale_size(33, 40, seed=0, step=0)


def test_resize_batch_scales_images_and_boxes():
    batch = {"images": torch.rand(2, 3, 64, 128), "gt_boxes": torch.tensor([[[8.0, 4.0, 72.0, 36.0]]] * 2),
             "ignore_boxes": torch.zeros(2, 1, 4), "image_ids": torch.tensor([1, 2])}
    out = resize_batch(batch, 256)
    assert out["images"].shape == (2, 3, 128, 256)
    assert torch.equal(out["gt_boxes"][0, 0], torch.tensor([16.0, 8.0, 144.0, 72.0]))
    assert out["image_ids"] is batch["image_ids"]
    assert resize_batch(batch, 128) is batch  # already that size: untouched


def test_switch_transforms_calls_set_enabled_on_whatever_transform_has_it():
    class StrongAug:  # any name: found by its set_enabled method
        def __init__(self) -> None:
            self.on = True

        def set_enabled(self, enabled: bool) -> None:
            self.on = enabled

    class NamedMosaic:  # a class called like a mix transform but without the method: left alone
        enabled = True

    NamedMosaic.__name__ = "Mosaic"

    class Pipeline:
        def __init__(self) -> None:
            self.transforms = [Mosaic(), {"inner": [StrongAug()]}, NamedMosaic()]
            self.annotations = [Mosaic() for _ in range(1000)]  # long lists are not searched

    class Data:
        def __init__(self) -> None:
            self.pipeline = Pipeline()

    data = Data()
    assert switch_transforms(data, False) == 2
    assert data.pipeline.transforms[0].enabled is False and data.pipeline.transforms[1]["inner"][0].on is False
    assert data.pipeline.transforms[2].enabled is True and data.pipeline.annotations[0].enabled is True
    assert switch_transforms(data, True) == 2 and data.pipeline.transforms[0].enabled is True
    assert find_objects(data, lambda o: isinstance(o, Pipeline)) == [data.pipeline]


def test_mosaic_and_mixup_are_switchable_transforms():
    from detkit.data.transforms import MixUp
    from detkit.data.transforms import Mosaic as RealMosaic
    from detkit.data.transforms.compose import SwitchableTransform

    for t in (RealMosaic(size=64), MixUp()):
        assert isinstance(t, SwitchableTransform)
        t.set_enabled(False)
        assert t.enabled is False


def test_assigner_index():
    schedule = [(0, "atss"), (4, "tal")]
    assert [assigner_index(schedule, e) for e in (0, 3, 4, 9)] == [0, 0, 1, 1]
    assert assigner_index([(2, "tal")], 1) == -1


def test_resolve_device_and_deterministic():
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="accepted: auto, cpu"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    try:
        seed_everything(1, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
        a = torch.rand(3)
        seed_everything(1)
        assert torch.equal(a, torch.rand(3))
    finally:
        torch.use_deterministic_algorithms(False)

