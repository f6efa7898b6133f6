"""Configs from before the schedule section: config files are refused naming the new form (tests/test_config_values.py);
the stored config of an older checkpoint, which a user cannot edit, is converted."""

from __future__ import annotations

import pytest
import torch

from detkit.config import TARGET_KEY, L, load_config
from detkit.engine.checkpoint_config import stored_config
from detkit.engine.schedules import LRSchedule
from detkit.engine.settings import ScheduleSettings, TrainSettings, upgrade_legacy_sections

# What format_config wrote for a run of shapes_atss.py before this version (train and model parts).
OLD_DUMP = """from detkit.config import L
from detkit.models.detector import Detector

model = L(Detector)()
train = dict(
    epochs=17,
    nominal_batch=16,
    optimizer=dict(type='sgd', lr=0.02, momentum=0.9, weight_decay=0.0005, nesterov=True),
    warmup_iters=50,
    warmup_ratio=0.01,
    warmup_bias_lr=None,
    warmup_momentum=0.8,
    lr_schedule='cosine',
    min_lr_ratio=0.05,
    no_mosaic_last_epochs=3,
    assigner_schedule=[(1, 'atss')],
    eval_interval=17,
)
"""


def test_an_old_train_section_becomes_the_new_train_and_schedule_sections():
    from detkit.engine.checkpoint_config import config_from_dump

    cfg = config_from_dump(OLD_DUMP, "old.pth")
    changed = upgrade_legacy_sections(cfg)
    assert sorted(changed) == sorted(["train.optimizer", "train.warmup_iters", "train.warmup_ratio",
                                      "train.warmup_bias_lr", "train.warmup_momentum", "train.lr_schedule",
                                      "train.min_lr_ratio", "train.no_mosaic_last_epochs", "train.assigner_schedule"])
    assert cfg.train == {"epochs": 17, "nominal_batch": 16, "eval_interval": 17,
                         "optimizer": L(torch.optim.SGD)(lr=0.02, momentum=0.9, weight_decay=0.0005, nesterov=True)}
    assert cfg.schedule == {"lr": L(LRSchedule)(warmup_iters=50, warmup_ratio=0.01, warmup_bias_lr=None,
                                                warmup_momentum=0.8, policy="cosine", min_lr_ratio=0.05),
                            "no_mosaic_last_epochs": 3, "assigner_switches": [(1, "atss")]}
    assert TrainSettings.from_config(cfg.train).optimizer[TARGET_KEY] is torch.optim.SGD
    assert ScheduleSettings.from_config(cfg.schedule, epochs=17).assigner_switches[0][1][TARGET_KEY].__name__ == \
        "ATSSAssigner"
    assert upgrade_legacy_sections(cfg) == []  # the new form is left as it is


def test_the_shipped_schedule_means_what_its_old_form_meant():
    new = load_config("shapes_atss.py")
    old = load_config("shapes_atss.py")
    old.train = dict(new.train, optimizer=dict(type="sgd", lr=0.02, momentum=0.9, weight_decay=5e-4, nesterov=True),
                     warmup_iters=50, warmup_ratio=0.01, warmup_bias_lr=None, warmup_momentum=0.8,
                     lr_schedule="cosine", min_lr_ratio=0.05, no_mosaic_last_epochs=3)
    del old["schedule"]
    upgrade_legacy_sections(old)
    assert old.train == new.train and old.schedule == new.schedule


def test_an_old_checkpoints_stored_config_is_read(tmp_path):
    cfg = stored_config({"config": OLD_DUMP}, tmp_path / "old.pth")
    assert cfg.schedule.lr[TARGET_KEY] is LRSchedule and cfg.train.optimizer[TARGET_KEY] is torch.optim.SGD


@pytest.mark.slow
def test_resume_from_a_checkpoint_whose_stored_config_is_the_old_form(tmp_path):
    """Resuming reads the states (optimizer, schedule's ``last_iter``), not the stored config: a checkpoint
    written before the schedule section continues under a config in the new form."""
    from pathlib import Path

    from detkit.engine.checkpoint import load_checkpoint
    from detkit.engine.trainer import Trainer

    cfg_path = Path(__file__).parent / "configs" / "tiny.py"
    opts = ["train.checkpoint.interval_iters=0", "train.eval_interval=0", "train.multi_scale=None"]
    Trainer(load_config(cfg_path, [*opts, "train.epochs=1"]), work_dir=tmp_path).train()
    ckpt = load_checkpoint(tmp_path / "epoch_1.pth")
    assert ckpt["scheduler"] == {"last_iter": 3} and len(ckpt["optimizer"]["param_groups"]) == 3
    ckpt["config"] = OLD_DUMP  # as an older detkit wrote it
    torch.save(ckpt, tmp_path / "epoch_1.pth")
    trainer = Trainer(load_config(cfg_path, [*opts, "train.epochs=2"]), work_dir=tmp_path, resume="auto")
    assert (trainer.epoch, trainer.iter, trainer.schedule.last_iter) == (1, 4, 3)
    trainer.train()
    assert trainer.epoch == 2 and trainer.iter == 8
    assert [g["initial_lr"] for g in trainer.optimizer.param_groups] == [0.05] * 3
