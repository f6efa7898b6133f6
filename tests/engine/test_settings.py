"""Typed settings per concern: each optimizer type keeps its own defaults, the schedule's keys sit
side by side in ``train``, and the values reach the built objects."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from detkit.config import ConfigError, load_config
from detkit.engine.optim import AdamWSettings, SGDSettings, build_optimizer
from detkit.engine.schedules import LRSchedule, ScheduleSettings
from detkit.engine.settings import RuntimeSettings, TrainSettings

COMMON = Path(__file__).resolve().parents[2] / "configs" / "common"


def _sgd_config(tmp_path) -> Path:
    path = tmp_path / "run.py"
    path.write_text(f"_base_ = [{str(COMMON / 'runtime.py')!r}, {str(COMMON / 'schedules' / 'cosine_300e.py')!r}]\n")
    return path


def test_adamw_on_the_command_line_gets_adamws_defaults_not_sgds(tmp_path):
    cfg = load_config(_sgd_config(tmp_path), ['train.optimizer=dict(type="adamw", lr=1e-3)'])
    s = TrainSettings.from_config(cfg.train)
    assert s.optimizer == AdamWSettings(lr=1e-3)
    assert (s.optimizer.momentum, s.optimizer.weight_decay, s.optimizer.beta2) == (0.9, 0.05, 0.999)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    opt = build_optimizer(model, s.optimizer, weight_decay_scale=0.5)
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.param_groups[0]["betas"] == (0.9, 0.999) and opt.param_groups[0]["weight_decay"] == 0.025
    assert opt.param_groups[0]["initial_momentum"] == 0.9 and opt.param_groups[0]["eps"] == 1e-8


def test_sgd_keeps_the_configs_values_and_a_missing_type_means_sgd(tmp_path):
    cfg = load_config(_sgd_config(tmp_path), ["train.optimizer.lr=0.02"])
    assert TrainSettings.from_config(cfg.train).optimizer == SGDSettings(lr=0.02, momentum=0.937, weight_decay=5e-4,
                                                                         nesterov=True)
    assert TrainSettings.from_config({"optimizer": {"lr": 0.1}}).optimizer == SGDSettings(lr=0.1)
    with pytest.raises(ConfigError, match=r"train.optimizer: unknown key\(s\) \['nesterov'\]; accepted: type, lr, "):
        TrainSettings.from_config({"optimizer": {"type": "adamw", "nesterov": True}})


def test_settings_classes_hold_the_defaults_once():
    s = TrainSettings.from_config({})
    assert s.optimizer == SGDSettings() and s.schedule == ScheduleSettings()
    assert (s.ema.enabled, s.ema.decay, s.ema.tau) == (True, 0.9999, 2000.0)
    assert (s.checkpoint.keep_last, s.checkpoint.interval_iters) == (3, 0)
    default = LRSchedule(total_iters=10)  # LRSchedule's own defaults are ScheduleSettings'
    assert (default.policy, default.min_lr_ratio, default.gamma, default.warmup_ratio) == (
        ScheduleSettings.lr_schedule, ScheduleSettings.min_lr_ratio, ScheduleSettings.gamma,
        ScheduleSettings.warmup_ratio)
    r = RuntimeSettings.from_config({})
    assert (r.device, r.logging.progress, r.logging.plot_interval, r.logging.loggers) == ("auto", True, 1, ["tensorboard"])


def test_schedule_keys_are_read_side_by_side_in_train():
    s = TrainSettings.from_config({"lr_schedule": "step", "steps": [8, 11], "warmup_epochs": 2, "min_warmup_iters": 5})
    assert s.schedule.lr_schedule == "step" and s.schedule.steps == (8, 11)
    assert s.schedule.warmup_length(iters_per_epoch=10) == 20
    assert s.schedule.warmup_length(iters_per_epoch=2) == 5  # at least min_warmup_iters
    assert ScheduleSettings(warmup_iters=7, warmup_epochs=3).warmup_length(100) == 7  # iterations win
    assert ScheduleSettings(warmup_epochs=0).warmup_length(100) == 0


def test_lr_schedule_from_settings_equals_the_keyword_construction():
    settings = ScheduleSettings(lr_schedule="linear", min_lr_ratio=0.2, warmup_iters=4, warmup_ratio=0.1,
                                warmup_bias_lr=0.05, warmup_momentum=0.8)
    a = LRSchedule.from_settings(settings, total_iters=40, iters_per_epoch=10)
    b = LRSchedule(total_iters=40, policy="linear", iters_per_epoch=10, min_lr_ratio=0.2, warmup_iters=4,
                   warmup_ratio=0.1, warmup_bias_lr=0.05, warmup_momentum=0.8)
    assert a.state_dict() == b.state_dict()
    assert [a.lr(i, 1.0, "bias") for i in range(8)] == [b.lr(i, 1.0, "bias") for i in range(8)]


def test_runtime_logging_keys_are_read_side_by_side_in_runtime():
    r = RuntimeSettings.from_config({"progress": False, "plot_interval": 0, "loggers": ["mlflow"], "device": "cpu"})
    assert (r.device, r.logging.progress, r.logging.plot_interval, r.logging.loggers) == ("cpu", False, 0, ["mlflow"])
    with pytest.raises(ConfigError, match=r"runtime: unknown key\(s\) \['tensorboard'\]; accepted: device, "):
        RuntimeSettings.from_config({"tensorboard": True})
