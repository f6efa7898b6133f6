"""The trainer turns the switchable transforms off for the last ``schedule.no_mosaic_last_epochs`` epochs,
finding them by their ``set_enabled`` method (Mosaic and a transform of any other name alike)."""

from __future__ import annotations

from pathlib import Path

import pytest

from detkit.config import load_config
from detkit.data.transforms import Mosaic
from detkit.engine.trainer import Trainer

CFG = Path(__file__).parent / "configs" / "shapes_tiny.py"
PIPELINE = ("data.train.dataset.pipeline=[Mosaic(size=128), tests.engine.standins.PassThroughSwitch(), "
            "RandomFlip(), LetterBox(size=128)]")


def _run(tmp_path, epochs: int, last: int) -> Trainer:
    cfg = load_config(CFG, [PIPELINE, f"train.epochs={epochs}", f"schedule.no_mosaic_last_epochs={last}",
                            "train.eval_interval=0", "train.checkpoint.interval_iters=0"])
    trainer = Trainer(cfg, work_dir=tmp_path / f"run{epochs}_{last}")
    trainer.train()
    return trainer


@pytest.mark.slow
def test_switchable_transforms_go_off_at_the_start_of_the_last_epochs(tmp_path):
    trainer = _run(tmp_path, epochs=2, last=1)
    mosaic, switch = trainer.train_set.pipeline.transforms[:2]
    assert isinstance(mosaic, Mosaic) and type(switch).__name__ == "PassThroughSwitch"
    assert mosaic.enabled is False and switch.calls == [False]  # once, at epoch 2 of 2
    log = (trainer.work_dir / "train.log").read_text()
    assert "epoch 2: switchable transforms (Mosaic/MixUp) off for the last 1 epochs (2 transform(s))" in log
    assert "epoch 1: switchable" not in log
    rerun = load_config(trainer.work_dir / "config.py")  # the work dir's dump loads back to the same config
    assert rerun == trainer.cfg and rerun.schedule.no_mosaic_last_epochs == 1
    assert "optimizer=L(SGD)(" in (trainer.work_dir / "config.py").read_text()


@pytest.mark.slow
def test_without_no_mosaic_last_epochs_nothing_is_switched(tmp_path):
    trainer = _run(tmp_path, epochs=1, last=0)
    mosaic, switch = trainer.train_set.pipeline.transforms[:2]
    assert mosaic.enabled is True and switch.calls == []
