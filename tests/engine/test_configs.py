"""The schedule and runtime configs load, merge and pass the engine's key checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from detkit.config import TARGET_KEY, load_config
from detkit.engine.schedules import LRSchedule
from detkit.engine.settings import RuntimeSettings, ScheduleSettings, TrainSettings

COMMON = Path(__file__).resolve().parents[2] / "configs" / "common"
SCHEDULES = sorted((COMMON / "schedules").glob("*.py"))


@pytest.mark.parametrize("schedule", SCHEDULES, ids=[p.stem for p in SCHEDULES])
def test_schedule_with_runtime_is_valid(schedule, tmp_path):
    leaf = tmp_path / "leaf.py"
    leaf.write_text(f"_base_ = [{str(COMMON / 'runtime.py')!r}, {str(schedule)!r}]\n")
    cfg = load_config(leaf)
    s = TrainSettings.from_config(cfg.train)
    assert s.epochs >= 1 and s.optimizer["lr"] > 0 and s.checkpoint.keep_last == 3
    schedule = ScheduleSettings.from_config(cfg.schedule, epochs=s.epochs)
    assert schedule.lr[TARGET_KEY] is LRSchedule and 0 <= schedule.no_mosaic_last_epochs < s.epochs
    assert RuntimeSettings.from_config(cfg.runtime).device == "auto"


def test_step_schedule_values():
    cfg = load_config(COMMON / "schedules" / "step_12e.py")
    s = TrainSettings.from_config(cfg.train)
    assert cfg.schedule.lr.policy == "step" and tuple(cfg.schedule.lr.steps) == (8, 11) and s.ema.enabled is False
    assert s.ema.decay == 0.9999  # defaults fill what the config leaves out
