"""Typed settings per concern: the optimizer and the LR schedule are lazy calls of their classes
(``--cfg-options`` merge into them, a new class replaces the call), the schedule is its own section,
and the values reach the built objects."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from detkit.config import TARGET_KEY, ConfigError, L, format_config, load_config
from detkit.engine.optim import DEFAULT_OPTIMIZER, build_optimizer, optimizer_from_legacy
from detkit.engine.schedules import LRSchedule
from detkit.engine.settings import MOVED_TRAIN_KEYS, RuntimeSettings, ScheduleSettings, TrainSettings

COMMON = Path(__file__).resolve().parents[2] / "configs" / "common"


def _sgd_config(tmp_path) -> Path:
    path = tmp_path / "run.py"
    path.write_text(f"_base_ = [{str(COMMON / 'runtime.py')!r}, {str(COMMON / 'schedules' / 'cosine_300e.py')!r}]\n")
    return path


def _model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))


def test_a_new_optimizer_class_replaces_the_call_and_keeps_none_of_sgds_arguments(tmp_path):
    cfg = load_config(_sgd_config(tmp_path), ["train.optimizer=AdamW(lr=1e-3, weight_decay=0.05)"])
    assert cfg.train.optimizer == {TARGET_KEY: torch.optim.AdamW, "lr": 1e-3, "weight_decay": 0.05}
    opt = build_optimizer(_model(), TrainSettings.from_config(cfg.train).optimizer, weight_decay_scale=0.5)
    assert isinstance(opt, torch.optim.AdamW)
    decay, norm, bias = opt.param_groups
    assert (decay["weight_decay"], norm["weight_decay"], bias["weight_decay"]) == (0.025, 0.0, 0.0)
    assert decay["betas"] == (0.9, 0.999) and decay["initial_momentum"] == 0.9 and decay["initial_lr"] == 1e-3
    assert "nesterov" not in decay  # SGD's argument did not leak


def test_cfg_options_merge_into_the_optimizer_and_schedule_calls(tmp_path):
    cfg = load_config(_sgd_config(tmp_path), ["train.optimizer.lr=0.02", "schedule.lr.min_lr_ratio=0.2",
                                              "schedule.lr.policy='step'", "schedule.lr.steps=[2]"])
    assert cfg.train.optimizer == L(torch.optim.SGD)(lr=0.02, momentum=0.937, weight_decay=5e-4, nesterov=True)
    assert cfg.schedule.lr == L(LRSchedule)(policy="step", min_lr_ratio=0.2, warmup_epochs=3.0, min_warmup_iters=100,
                                           warmup_ratio=0.0, warmup_bias_lr=0.1, warmup_momentum=0.8, steps=[2])
    opt = build_optimizer(_model(), cfg.train.optimizer)
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["nesterov"] is True
    assert [g["lr"] for g in opt.param_groups] == [0.02] * 3 and opt.param_groups[0]["weight_decay"] == 5e-4


def test_the_old_dict_type_optimizer_is_refused_with_the_new_form(tmp_path):
    with pytest.raises(ConfigError, match=r"train.optimizer: dict\(type='adamw', \.\.\.\) is the old form of an "
                                          r"optimizer; name the class with a lazy call: "
                                          r"optimizer=L\(torch.optim.AdamW\)"
                                          r"\(lr=0.001, weight_decay=0.05, eps=1e-08, betas=\(0.9, 0.999\)\) "
                                          r"\(see docs/changelog.md\) \(from the override train.optimizer=dict"):
        load_config(_sgd_config(tmp_path), ['train.optimizer=dict(type="adamw", lr=2e-3)'])
    path = tmp_path / "old.py"
    path.write_text("train = dict(optimizer=dict(type='sgd', lr=0.02, momentum=0.9))\n")
    with pytest.raises(ConfigError, match=r"old.py: train.optimizer: dict\(type='sgd', \.\.\.\) is the old form .* "
                                          r"optimizer=L\(torch.optim.SGD\)\(lr=0.02, momentum=0.9, "
                                          r"weight_decay=0.0005, nesterov=True\)"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"train.optimizer: expected a lazy call of an optimizer class"):
        TrainSettings.from_config({"optimizer": {"lr": 0.1}})
    with pytest.raises(ConfigError, match=r"train.optimizer: LRSchedule is not a torch.optim.Optimizer"):
        TrainSettings.from_config({"optimizer": L(LRSchedule)()})


def test_optimizer_from_legacy_means_what_the_old_form_meant():
    assert optimizer_from_legacy({"type": "sgd"}) == DEFAULT_OPTIMIZER
    assert optimizer_from_legacy({"type": "adamw", "momentum": 0.8}) == L(torch.optim.AdamW)(
        lr=0.001, weight_decay=0.05, eps=1e-8, betas=(0.8, 0.999))
    with pytest.raises(ValueError, match="has no key"):
        optimizer_from_legacy({"type": "adamw", "nesterov": True})


@pytest.mark.parametrize("old,new", sorted(MOVED_TRAIN_KEYS.items()))
def test_schedule_keys_left_in_train_are_refused_with_their_new_place(tmp_path, old, new):
    with pytest.raises(ConfigError, match=rf"train.{old}: this key moved to {new} \(see docs/changelog.md\) "
                                          rf"\(from the override train.{old}=1\)"):
        load_config(_sgd_config(tmp_path), [f"train.{old}=1"])


def test_settings_classes_hold_the_defaults_once():
    s = TrainSettings.from_config({})
    assert s.optimizer == DEFAULT_OPTIMIZER and s.optimizer is not DEFAULT_OPTIMIZER
    assert (s.ema.enabled, s.ema.decay, s.ema.tau) == (True, 0.9999, 2000.0)
    assert (s.checkpoint.keep_last, s.checkpoint.interval_iters) == (3, 0)
    schedule = ScheduleSettings.from_config({}, epochs=10)
    assert schedule.lr == L(LRSchedule)() and (schedule.no_mosaic_last_epochs, schedule.assigner_switches) == (0, [])
    r = RuntimeSettings.from_config({})
    assert (r.device, r.logging.progress, r.logging.plot_interval) == ("auto", True, 1)
    assert r.logging.loggers == ["tensorboard"]


def test_warmup_length_from_the_schedule_arguments():
    assert LRSchedule(total_iters=100, iters_per_epoch=10, warmup_epochs=2, min_warmup_iters=5).warmup_iters == 20
    assert LRSchedule(total_iters=100, iters_per_epoch=2, warmup_epochs=2, min_warmup_iters=5).warmup_iters == 5
    assert LRSchedule(total_iters=100, warmup_iters=7, warmup_epochs=3).warmup_iters == 7  # iterations win
    assert LRSchedule(total_iters=100, warmup_epochs=0).warmup_iters == 0
    with pytest.raises(ValueError, match=r"warmup_ratio must be in \[0.0, 1.0\], got 2"):
        LRSchedule(total_iters=10, warmup_ratio=2)


def test_the_trainer_builds_the_schedule_the_lazy_call_describes():
    node = L(LRSchedule)(policy="linear", min_lr_ratio=0.2, warmup_iters=4, warmup_ratio=0.1, warmup_bias_lr=0.05,
                         warmup_momentum=0.8)
    from detkit.config import instantiate

    a = instantiate(node, "schedule.lr", total_iters=40, iters_per_epoch=10)
    b = LRSchedule(total_iters=40, policy="linear", iters_per_epoch=10, min_lr_ratio=0.2, warmup_iters=4,
                   warmup_ratio=0.1, warmup_bias_lr=0.05, warmup_momentum=0.8)
    assert a.state_dict() == b.state_dict()
    assert [a.lr(i, 1.0, "bias") for i in range(8)] == [b.lr(i, 1.0, "bias") for i in range(8)]


def test_config_dump_round_trip_keeps_the_lazy_calls(tmp_path):
    cfg = load_config(_sgd_config(tmp_path), ["train.optimizer=AdamW(lr=1e-3, betas=(0.8, 0.99))",
                                              "schedule.assigner_switches=[(1, 'atss')]"])
    dumped = tmp_path / "dump.py"
    dumped.write_text(format_config(cfg))
    again = load_config(dumped)
    assert again == cfg
    assert again.train.optimizer[TARGET_KEY] is torch.optim.AdamW and again.schedule.lr[TARGET_KEY] is LRSchedule


def test_runtime_logging_keys_are_read_side_by_side_in_runtime():
    r = RuntimeSettings.from_config({"progress": False, "plot_interval": 0, "loggers": ["mlflow"], "device": "cpu"})
    assert (r.device, r.logging.progress, r.logging.plot_interval, r.logging.loggers) == ("cpu", False, 0, ["mlflow"])
    with pytest.raises(ConfigError, match=r"runtime: unknown key\(s\) \['tensorboard'\]; accepted: device, "):
        RuntimeSettings.from_config({"tensorboard": True})


def test_tracker_short_names_expand_to_their_lazy_calls_in_one_place():
    from detkit.engine.trackers import MLflowTracker, TensorBoardTracker, tracker_component

    assert tracker_component("mlflow", "runtime.loggers[0]") == L(MLflowTracker)()
    assert tracker_component("tensorboard", "k") == L(TensorBoardTracker)()
    assert tracker_component(L(MLflowTracker)(experiment="x"), "k") == L(MLflowTracker)(experiment="x")
    with pytest.raises(ConfigError, match=r"^runtime.loggers\[1\]: unknown logger 'mlfow'; accepted: tensorboard, "
                                          r"mlflow, wandb or a lazy call of a tracker class$"):
        tracker_component("mlfow", "runtime.loggers[1]")
    with pytest.raises(ConfigError, match=r"^k: expected a tracker name .* got 3$"):
        tracker_component(3, "k")
