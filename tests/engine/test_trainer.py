"""Trainer on stand-ins: a full run, the kill-and-resume equality, best checkpoint, schedule hooks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from detkit.config import load_config
from detkit.engine.checkpoint import load_checkpoint
from detkit.engine.train_utils import move_batch
from detkit.engine.trainer import Trainer
from tests.fixtures.runs import train_losses

CFG = Path(__file__).parent / "configs" / "tiny.py"


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("full")
    trainer = Trainer(load_config(CFG, ["schedule.assigner_switches=[(1, 'atss')]"]), work_dir=work)
    result = trainer.train()
    return work, trainer, result


def test_full_run_writes_everything(full_run):
    work, trainer, result = full_run
    assert trainer.accumulate == 2 and trainer.iters_per_epoch == 4 and trainer.iter == 8
    names = sorted(p.name for p in work.iterdir())
    for expected in ("best.pth", "config.py", "epoch_1.pth", "epoch_2.pth", "iter_2.pth", "iter_6.pth",
                     "last_checkpoint", "losses.png", "metrics.csv", "metrics.jsonl", "metrics.png",
                     "assignment.png", "train.log"):
        assert expected in names
    ckpt = load_checkpoint(work / "epoch_2.pth")
    assert ckpt["epoch"] == 2 and ckpt["iter"] == 8 and ckpt["epoch_iter"] == 0
    assert ckpt["ema"]["updates"] == 4  # 8 iterations / accumulate 2
    assert "TinyDetector" in ckpt["config"]
    assert 0.0 <= result["best"]["value"] <= 1.0 and "AP" in result["last_metrics"]
    assert type(trainer.detector.head.assigner).__name__ == "ATSSAssigner"  # the schedule switched at epoch 1
    assert trainer.train_set.transforms[0].enabled is False  # Mosaic off for the last epoch
    assert len(train_losses(work)) == 8


def test_kill_and_resume_gives_identical_losses(full_run, tmp_path):
    work, _, _ = full_run
    # A run killed after iteration 3 (of 8) left iter_2.pth as its newest checkpoint.
    shutil.copy(work / "iter_2.pth", tmp_path / "iter_2.pth")
    (tmp_path / "last_checkpoint").write_text("iter_2.pth\n")
    trainer = Trainer(load_config(CFG), work_dir=tmp_path, resume="auto")
    assert (trainer.epoch, trainer.iter, trainer.epoch_iter) == (0, 2, 2)
    trainer.train()
    ref, got = train_losses(work), train_losses(tmp_path)
    assert sorted(got) == list(range(3, 9))
    for step in got:
        assert got[step] == ref[step], f"iteration {step}"
    rows = [(work / "metrics.csv").read_text(), (tmp_path / "metrics.csv").read_text()]
    first_epoch = [r.splitlines()[1].split(",")[:4] for r in rows]  # epoch, loss means: whole epoch 1 on both
    assert first_epoch[0] == first_epoch[1]
    a, b = load_checkpoint(work / "epoch_2.pth"), load_checkpoint(tmp_path / "epoch_2.pth")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k])


def test_config_mistakes_raise_value_error(tmp_path):
    with pytest.raises(ValueError, match="unknown key.*accepted"):
        Trainer(load_config(CFG, ["train.epoch=3"]), work_dir=tmp_path)
    with pytest.raises(ValueError, match="train.optimizer: expected a lazy call of an optimizer class"):
        Trainer(load_config(CFG, ["train.optimizer='Adam'"]), work_dir=tmp_path)


def test_adamw_step_schedule_without_ema(tmp_path):
    cfg = load_config(CFG, ["train.optimizer=AdamW(lr=0.001, weight_decay=0.05)",
                            "schedule.lr.policy='step'", "schedule.lr.steps=[1]", "train.ema.enabled=False",
                            "train.epochs=1", "train.multi_scale=None", "train.eval_interval=0"])
    trainer = Trainer(cfg, work_dir=tmp_path)
    trainer.train()
    assert isinstance(trainer.optimizer, torch.optim.AdamW) and trainer.ema is None
    assert load_checkpoint(tmp_path / "epoch_1.pth")["ema"] is None


def test_missing_dataset_names_the_expected_layout(tmp_path):
    pytest.importorskip("detkit.data")
    from detkit.engine.trainer import build_dataset

    cfg = load_config(CFG, [f"data.val.dataset=detkit.data.CocoDataset(ann_file='{tmp_path}/none.json', "
                            f"img_dir='{tmp_path}/val2017')"])
    with pytest.raises(ValueError, match="dataset not found(.|\n)*instances_"):
        build_dataset(cfg, "val")


def _first_step_grads(tmp_path, loss_scale: str) -> dict[str, torch.Tensor]:
    cfg = load_config(CFG, [f"train.loss_scale='{loss_scale}'", "train.grad_clip=None", "train.nominal_batch=2",
                            "train.multi_scale=None", "train.amp=False"])
    trainer = Trainer(cfg, work_dir=tmp_path / loss_scale)
    assert trainer.accumulate == 1
    batch = next(iter(trainer.loader))
    torch.manual_seed(0)
    trainer.optimizer.zero_grad()
    out = trainer.forward(move_batch(batch, trainer.device))
    loss = sum(v for k, v in out.items() if k.startswith("loss_"))
    (loss * trainer.loss_multiplier).backward()
    return {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}


def test_loss_scale_batch_multiplies_gradients_by_the_batch_size(tmp_path):
    mean = _first_step_grads(tmp_path, "mean")
    batch = _first_step_grads(tmp_path, "batch")  # YOLOv5: loss x batch size (2 here)
    assert mean.keys() == batch.keys() and mean
    for name in mean:
        torch.testing.assert_close(batch[name], 2.0 * mean[name])


def test_unknown_loss_scale_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="loss_scale"):
        Trainer(load_config(CFG, ["train.loss_scale='sum'"]), work_dir=tmp_path)


def test_compile_setting_compiles_the_trained_model_not_the_ema(tmp_path, monkeypatch):
    import detkit.engine.trainer as trainer_mod

    calls = []
    monkeypatch.setattr(trainer_mod, "maybe_compile", lambda module, mode: calls.append((module, mode)) or module)
    trainer = Trainer(load_config(CFG, ["train.compile='default'"]), work_dir=tmp_path)
    assert len(calls) == 1 and calls[0][0] is trainer.model and calls[0][1] == "default"
    assert trainer.ema is None or trainer.ema.module is not trainer.model
    with pytest.raises(ValueError, match="train.compile must be None or one of default"):
        Trainer(load_config(CFG, ["train.compile='fast'"]), work_dir=tmp_path / "bad")
