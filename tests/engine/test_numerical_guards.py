"""Non-finite losses and gradients: skipped and counted, BatchNorm statistics undone, training
stopped after ``train.max_nonfinite_steps`` in a row with the last good checkpoint kept."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from detkit.config import load_config
from detkit.engine.checkpoint import find_latest_checkpoint, load_checkpoint
from detkit.engine.guards import BufferSnapshot, NonFiniteGuard, guarded_optimizer_step
from detkit.engine.trainer import Trainer, TrainingDiverged
from tests.engine.standins import TinyDetector
from tests.fixtures.tools import load_tool

CFG = Path(__file__).parent / "configs" / "tiny.py"
# One optimizer step per iteration, 4 iterations per epoch, no evaluation: short and easy to count.
FAST = ["train.nominal_batch=2", "train.multi_scale=None", "train.eval_interval=0"]


def records(work: Path, kind: str) -> list[dict]:
    lines = (work / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def nan_loss_at(monkeypatch, bad_calls: set[int] | None = None, from_call: int | None = None,
                nan_images: bool = False) -> None:
    """Make TinyDetector.loss non-finite at the given training calls (0-based), by NaN images
    (which also put NaN into BatchNorm's running statistics) or by a NaN loss_box."""
    original = TinyDetector.loss
    calls = {"n": 0}

    def loss(self, batch):
        n = calls["n"]
        calls["n"] += 1
        bad = (bad_calls is not None and n in bad_calls) or (from_call is not None and n >= from_call)
        if bad and nan_images:
            batch = dict(batch, images=batch["images"] * math.nan)
        out = original(self, batch)
        if bad and not nan_images:
            out["loss_box"] = out["loss_box"] * math.nan
        return out

    monkeypatch.setattr(TinyDetector, "loss", loss)


def all_finite(module: nn.Module) -> bool:
    return all(torch.isfinite(t).all() for t in module.state_dict().values() if t.is_floating_point())


def test_nonfinite_loss_skips_the_batch_counts_it_and_undoes_batchnorm(tmp_path, monkeypatch):
    nan_loss_at(monkeypatch, bad_calls={1}, nan_images=True)
    cfg = load_config(CFG, FAST + ["train.epochs=1", "train.checkpoint.interval_iters=1"])
    trainer = Trainer(cfg, work_dir=tmp_path)
    trainer.train()
    assert all_finite(trainer.detector) and all_finite(trainer.ema.module)  # no NaN reached a buffer
    assert trainer.ema.updates == 3  # 4 iterations, one skipped
    assert (trainer.guard.loss_total, trainer.guard.grad_total, trainer.guard.streak) == (1, 0, 0)
    train = {r["step"]: r for r in records(tmp_path, "train")}
    assert train[2]["loss"] is None and train[2]["nonfinite_loss_total"] == 1  # iteration 1, logged as step 2
    assert train[1]["nonfinite_loss_total"] == 0 and train[4]["nonfinite_grad_total"] == 0
    epoch = records(tmp_path, "epoch")[0]
    assert epoch["nonfinite_loss"] == 1 and epoch["nonfinite_grad"] == 0
    assert math.isfinite(epoch["loss"])  # the epoch mean leaves the skipped batch out
    assert "nonfinite_loss" in (tmp_path / "metrics.csv").read_text().splitlines()[0]
    log = (tmp_path / "train.log").read_text()
    assert "iteration 1: non-finite loss (loss_box=nan" in log and "batch skipped (1 so far, 1 in a row)" in log
    # No checkpoint during the streak (iter_2 would follow the skipped iteration); the others are fine.
    assert not (tmp_path / "iter_2.pth").exists() and (tmp_path / "iter_3.pth").exists()
    ckpt = load_checkpoint(tmp_path / "epoch_1.pth")
    assert ckpt["guard"]["loss_total"] == 1


def test_nonfinite_gradients_drop_the_optimizer_step(tmp_path):
    trainer = Trainer(load_config(CFG, FAST + ["train.ema.enabled=False"]), work_dir=tmp_path)
    batches = iter(trainer.loader)
    trainer._train_step(next(batches))
    before = {n: p.detach().clone() for n, p in trainer.detector.named_parameters()}
    weight = trainer.detector.head.out.weight
    handle = weight.register_hook(lambda g: torch.full_like(g, math.inf))  # finite loss, inf gradient
    values, finite, step_now = trainer._train_step(next(batches))
    handle.remove()
    assert finite and step_now and math.isfinite(float(values["loss"]))
    for n, p in trainer.detector.named_parameters():
        assert torch.equal(p, before[n]), n  # the step was dropped, momentum and weight decay included
    assert all(p.grad is None for p in trainer.detector.parameters())
    assert trainer.guard.grad_total == 1 and trainer.guard.streak == 1
    assert trainer.guard.last_grad == (1, ["head.out.weight"])  # the second iteration
    assert "non-finite gradients in head.out.weight; optimizer step dropped" in (tmp_path / "train.log").read_text()
    trainer._train_step(next(batches))
    assert trainer.guard.streak == 0 and not torch.equal(weight, before["head.out.weight"])


def test_consecutive_nonfinite_steps_stop_training_and_keep_the_last_good_checkpoint(tmp_path, monkeypatch):
    nan_loss_at(monkeypatch, from_call=5)
    cfg = load_config(CFG, FAST + ["train.epochs=3", "train.checkpoint.interval_iters=1",
                                   "train.max_nonfinite_steps=3"])
    trainer = Trainer(cfg, work_dir=tmp_path)
    with pytest.raises(TrainingDiverged) as info:
        trainer.train()
    msg = str(info.value)
    assert "3 consecutive" in msg and "iterations 5..7" in msg and "epoch 2" in msg
    assert "last non-finite loss at iteration 7: loss_box=nan, loss_cls=" in msg
    assert "train.max_nonfinite_steps=3" in msg and str(tmp_path / "iter_5.pth") in msg
    assert trainer.iter == 8
    names = sorted(p.name for p in tmp_path.glob("*.pth"))
    assert names == ["epoch_1.pth", "iter_1.pth", "iter_2.pth", "iter_3.pth", "iter_5.pth"]
    assert find_latest_checkpoint(tmp_path).name == "iter_5.pth"
    assert load_checkpoint(tmp_path / "iter_5.pth")["iter"] == 5
    assert "training diverged" in (tmp_path / "train.log").read_text()


def test_train_tool_exits_1_on_divergence(tmp_path, monkeypatch, capsys):
    nan_loss_at(monkeypatch, from_call=0)
    code = load_tool("train").main([str(CFG), "--work-dir", str(tmp_path), "--cfg-options", *FAST,
                                    "train.max_nonfinite_steps=2"])
    assert code == 1
    err = capsys.readouterr().err
    assert "error: training diverged: 2 consecutive" in err and "loss_box=nan" in err and "no checkpoint" in err
    assert not list(tmp_path.glob("*.pth"))


@pytest.mark.parametrize("value", [0, -1, 2.5, True, "20"])
def test_max_nonfinite_steps_must_be_a_positive_int_or_none(tmp_path, value):
    with pytest.raises(ValueError, match="max_nonfinite_steps"):
        Trainer(load_config(CFG, [f"train.max_nonfinite_steps={value!r}"]), work_dir=tmp_path)


def test_max_nonfinite_steps_none_never_stops():
    guard = NonFiniteGuard(max_consecutive=None)
    for it in range(1000):
        guard.loss_skipped(it, {"loss_box": math.nan})
    assert not guard.diverged and guard.streak == 1000


def test_guard_streak_counts_loss_and_gradient_events_until_a_good_step():
    guard = NonFiniteGuard(max_consecutive=3)
    guard.loss_skipped(10, {"loss_box": math.nan, "loss_cls": 0.5})
    guard.grad_skipped(11, ["a.weight"])
    assert guard.streak == 2 and not guard.diverged
    guard.step_ok()
    assert guard.streak == 0 and guard.first_bad_iter == -1
    for it in (20, 21, 22):
        guard.loss_skipped(it, {"loss_box": math.inf})
    assert guard.diverged and guard.run_counters() == {"nonfinite_loss_total": 4, "nonfinite_grad_total": 1}
    msg = guard.divergence_message(22, 0, None)
    assert "iterations 20..22" in msg and "loss_box=inf" in msg and "a.weight" in msg and "no checkpoint" in msg
    back = NonFiniteGuard()
    back.load_state_dict(guard.state_dict())
    assert (back.loss_total, back.grad_total, back.loss_epoch) == (4, 1, 4)
    guard.new_epoch()
    assert guard.epoch_counters() == {"nonfinite_loss": 0, "nonfinite_grad": 0}


def test_buffer_snapshot_undoes_a_nan_forward():
    bn = nn.BatchNorm2d(3).train()
    bn(torch.randn(2, 3, 4, 4))
    snap = BufferSnapshot(bn)
    snap.take()
    reference = {k: v.clone() for k, v in bn.state_dict().items()}
    bn(torch.full((2, 3, 4, 4), math.nan))
    assert torch.isnan(bn.running_mean).all()
    snap.restore()
    for k, v in bn.state_dict().items():
        assert torch.equal(v, reference[k]), k


def test_amp_scaler_overflow_drops_the_step_and_lowers_the_scale():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale(model(torch.randn(4, 3)).sum()).backward()
    model.bias.grad[0] = math.inf  # what an fp16 overflow looks like after scaling
    before = model.weight.detach().clone()
    stepped, bad = guarded_optimizer_step(opt, scaler, list(model.named_parameters()), grad_clip=10.0)
    assert not stepped and bad == ["bias"] and scaler.get_scale() == 512.0
    assert torch.equal(model.weight, before) and model.weight.grad is None
    scaler.scale(model(torch.randn(4, 3)).sum()).backward()
    stepped, bad = guarded_optimizer_step(opt, scaler, list(model.named_parameters()), grad_clip=10.0)
    assert stepped and bad == [] and not torch.equal(model.weight, before)


def test_guarded_step_clips_like_clip_grad_norm():
    torch.manual_seed(0)
    a, b = nn.Linear(4, 4), nn.Linear(4, 4)
    b.load_state_dict(a.state_dict())
    for m in (a, b):
        (m(torch.ones(2, 4)) * 100).sum().backward()
    opt_a = torch.optim.SGD(a.parameters(), lr=0.1)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.1)
    torch.nn.utils.clip_grad_norm_(a.parameters(), 1.0)
    opt_a.step()
    guarded_optimizer_step(opt_b, torch.amp.GradScaler("cpu", enabled=False), list(b.named_parameters()), 1.0)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
