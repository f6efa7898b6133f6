"""LRSchedule's options for YOLOv5's / Ultralytics' loop (decay per epoch, warm-up capped at epochs - 1,
accumulation ramped over the warm-up), on hand-computed values."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from detkit.config import L, load_config
from detkit.engine.optim import build_optimizer
from detkit.engine.schedules import LRSchedule
from detkit.engine.trainer import Trainer


def test_epoch_decay_is_constant_within_an_epoch():
    lin = LRSchedule(total_iters=40, iters_per_epoch=4, policy="linear", min_lr_ratio=0.01, warmup_epochs=0,
                     decay_unit="epoch")
    assert [lin.lr(i, 1.0) for i in (0, 3, 4, 7, 39)] == pytest.approx([1.0, 1.0, 0.901, 0.901, 0.109])
    cos = LRSchedule(total_iters=40, iters_per_epoch=4, policy="cosine", min_lr_ratio=0.01, warmup_epochs=0,
                     decay_unit="epoch")
    assert cos.lr(23, 2.0) == pytest.approx(2.0 * 0.505)  # epoch 5 of 10: cos(pi / 2) = 0
    assert cos.lr(4, 1.0) == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi / 10)))
    per_iter = LRSchedule(total_iters=40, iters_per_epoch=4, policy="linear", min_lr_ratio=0.01, warmup_epochs=0)
    assert per_iter.lr(3, 1.0) == pytest.approx(1 - 0.99 * 3 / 40)  # the default moves every iteration


def test_epoch_decay_warmup_aims_at_the_epochs_factor():
    s = LRSchedule(total_iters=40, iters_per_epoch=4, policy="linear", min_lr_ratio=0.01, warmup_epochs=2,
                   min_warmup_iters=0, warmup_ratio=0.0, warmup_bias_lr=0.1, warmup_momentum=0.8,
                   decay_unit="epoch")
    assert s.warmup_iters == 8
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    opt = build_optimizer(model, L(torch.optim.SGD)(lr=0.01, momentum=0.937, nesterov=True))
    s.step(opt, 6)  # epoch 1, 6 / 8 of the warm-up
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["decay"] == pytest.approx(0.01 * 0.901 * 0.75) and lrs["norm"] == lrs["decay"]
    assert lrs["bias"] == pytest.approx(0.1 + (0.01 * 0.901 - 0.1) * 0.75)
    assert all(g["momentum"] == pytest.approx(0.8 + (0.937 - 0.8) * 0.75) for g in opt.param_groups)


def test_warmup_spares_the_last_epoch():
    def length(epochs: int, spare: bool, floor: int = 0) -> int:
        return LRSchedule(total_iters=4 * epochs, iters_per_epoch=4, warmup_epochs=3.0, min_warmup_iters=floor,
                          warmup_spare_last_epoch=spare).warmup_iters

    assert (length(10, True), length(2, True), length(1, True)) == (12, 4, 0)
    assert (length(2, False), length(1, False)) == (12, 12)
    assert length(2, True, floor=100) == 100  # the floor applies after the cap


def test_accumulation_ramps_over_the_warmup():
    s = LRSchedule(total_iters=400, iters_per_epoch=4, warmup_epochs=3, min_warmup_iters=0, warmup_accumulate=True)
    assert s.warmup_iters == 12
    # round(1 + i / 4), halves to even
    assert [s.accumulation(i, 4) for i in range(14)] == [1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 4, 4, 4, 4]
    # a window ends where i - (the last end) >= accumulation(i); after the warm-up every 4th from the last end
    assert [i for i in range(25) if s.ends_window(i, 4)] == [0, 1, 3, 5, 8, 12, 16, 20, 24]
    assert [i for i in range(9) if s.ends_window(i, 1)] == list(range(9))
    plain = LRSchedule(total_iters=400, iters_per_epoch=4, warmup_epochs=3, min_warmup_iters=0)
    assert [plain.accumulation(i, 4) for i in (0, 6)] == [4, 4]
    assert [i for i in range(16) if plain.ends_window(i, 4)] == [3, 7, 11, 15]
    no_warmup = LRSchedule(total_iters=400, iters_per_epoch=4, warmup_epochs=0, warmup_accumulate=True)
    assert [i for i in range(8) if no_warmup.ends_window(i, 4)] == [3, 7]
    assert "_window_ends" not in s.state_dict()


def test_decay_unit_refused_by_name():
    with pytest.raises(ValueError, match="decay_unit must be one of iteration, epoch, got 'step'"):
        LRSchedule(total_iters=10, decay_unit="step")  # type: ignore[arg-type]


@pytest.mark.slow
def test_trainer_steps_at_the_ramps_window_ends(tmp_path):
    cfg = load_config(Path(__file__).parent / "configs" / "tiny.py",
                      ["train.nominal_batch=8", "train.eval_interval=0", "train.checkpoint.interval_iters=1",
                       "schedule.lr.warmup_iters=4", "schedule.lr.warmup_accumulate=True"])
    trainer = Trainer(cfg, work_dir=tmp_path)
    assert (trainer.accumulate, trainer.iters_per_epoch) == (4, 4)
    trainer.train()
    # windows end at 0 and 2 (accumulation 1, 2, 2, 3, 4 over iterations 0..4), then every 4th from 2: 6;
    # and at each epoch's last iteration, 3 and 7: five steps (two without the ramp: 3 and 7)
    assert trainer.ema.updates == 5
    assert sorted(p.name for p in tmp_path.glob("iter_*.pth")) == ["iter_1.pth", "iter_3.pth", "iter_7.pth"]


def test_decay_unit_refused_when_the_config_loads():
    from detkit.config import ConfigError

    with pytest.raises(ConfigError, match=r"schedule.lr.decay_unit: expected one of 'iteration', 'epoch', got 'step'"):
        load_config(Path(__file__).parent / "configs" / "tiny.py", ["schedule.lr.decay_unit=step"])


def test_yolov8_and_yolov5_recipes_warm_up_as_their_home_code():
    v8 = load_config("configs/yolov8n_tal.py").schedule.lr
    assert (v8.decay_unit, v8.warmup_accumulate, v8.warmup_spare_last_epoch, v8.min_warmup_iters) == (
        "epoch", True, True, 0)
    v5 = load_config("configs/yolov5s_yolov5.py").schedule.lr
    assert (v5.decay_unit, v5.warmup_accumulate, v5.warmup_spare_last_epoch, v5.min_warmup_iters) == (
        "epoch", True, False, 100)
