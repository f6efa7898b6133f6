"""Faults: SIGINT/SIGTERM stop cleanly with a resumable checkpoint, a second signal aborts,
kill -9 at random moments never leaves a corrupt latest checkpoint, truncated files are named."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from detkit.cli import cli_message
from detkit.config import load_config
from detkit.engine.checkpoint import (
    CheckpointError,
    CheckpointManager,
    atomic_save,
    find_latest_checkpoint,
    load_checkpoint,
    load_latest_checkpoint,
)
from detkit.engine.guards import StopSignals, TrainingAborted
from detkit.engine.trainer import Trainer, TrainingInterrupted
from tests.engine.standins import TinyDetector
from tests.fixtures.runs import run_torchrun, train_losses
from tests.fixtures.tools import load_tool

ROOT = Path(__file__).resolve().parents[2]
CFG = Path(__file__).parent / "configs" / "tiny.py"
# 4 iterations per epoch, accumulate 2 (an optimizer step every second iteration), 2 epochs.
OPTS = ["train.checkpoint.interval_iters=0"]

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def signal_at_calls(monkeypatch, calls: dict[int, list[int]]) -> None:
    """Send the listed signals to this process from inside TinyDetector.loss at the given calls."""
    original = TinyDetector.loss
    count = {"n": 0}

    def loss(self, batch):
        n = count["n"]
        count["n"] += 1
        for signum in calls.get(n, []):
            os.kill(os.getpid(), signum)
        return original(self, batch)

    monkeypatch.setattr(TinyDetector, "loss", loss)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of the tiny config."""
    work = tmp_path_factory.mktemp("reference")
    trainer = Trainer(load_config(CFG, OPTS), work_dir=work)
    trainer.train()
    return work, trainer


@pytest.mark.parametrize("signal_call, saved_iter, epoch_iter", [
    (0, 2, 2),  # mid-epoch: the optimizer step (iterations 0-1) finishes, then iter_2.pth
    (2, 4, 4),  # the epoch's last step: iter_4.pth before the epoch's evaluation; --resume evaluates
])
def test_sigint_finishes_the_step_saves_and_resume_is_exact(tmp_path, monkeypatch, reference, signal_call,
                                                            saved_iter, epoch_iter):
    ref_work, ref_trainer = reference
    previous = signal.getsignal(signal.SIGINT)
    signal_at_calls(monkeypatch, {signal_call: [signal.SIGINT]})
    trainer = Trainer(load_config(CFG, OPTS), work_dir=tmp_path)
    with pytest.raises(TrainingInterrupted) as info:
        trainer.train()
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGINT) is previous  # handler restored
    err = info.value
    assert err.signum == signal.SIGINT and err.exit_code == 130
    assert err.checkpoint == tmp_path / f"iter_{saved_iter}.pth"
    assert str(err).startswith(f"stopped by SIGINT after iteration {saved_iter}")
    assert str(err).endswith(f"; saved {err.checkpoint}; continue with resume='auto'")  # Trainer(resume="auto")
    ckpt = load_checkpoint(err.checkpoint)
    assert (ckpt["iter"], ckpt["epoch"], ckpt["epoch_iter"]) == (saved_iter, 0, epoch_iter)
    assert find_latest_checkpoint(tmp_path) == err.checkpoint

    resumed = Trainer(load_config(CFG, OPTS), work_dir=tmp_path, resume="auto")
    assert resumed.iter == saved_iter
    resumed.train()
    ref, got = train_losses(ref_work), train_losses(tmp_path)
    for step in range(saved_iter + 1, 9):
        assert got[step] == ref[step], step
    for k, v in ref_trainer.detector.state_dict().items():
        assert torch.equal(resumed.detector.state_dict()[k], v), k
    first_epoch = [(w / "metrics.csv").read_text().splitlines()[1].split(",")[:4] for w in (ref_work, tmp_path)]
    assert first_epoch[0] == first_epoch[1]


def test_signal_during_evaluation_stops_after_the_epoch_checkpoint(tmp_path, monkeypatch):
    original = TinyDetector.predict
    sent = []

    def predict(self, batch):
        if not sent:  # once: a second signal would abort
            sent.append(os.kill(os.getpid(), signal.SIGTERM))
        return original(self, batch)

    monkeypatch.setattr(TinyDetector, "predict", predict)
    trainer = Trainer(load_config(CFG, OPTS), work_dir=tmp_path)
    with pytest.raises(TrainingInterrupted) as info:
        trainer.train()
    assert info.value.checkpoint == tmp_path / "epoch_1.pth" and info.value.exit_code == 143
    assert (trainer.epoch, trainer.iter) == (1, 4)  # the evaluation finished, the epoch was saved
    assert (tmp_path / "best.pth").exists() and not list(tmp_path.glob("iter_*.pth"))


def test_second_signal_aborts_at_once_without_writing(tmp_path, monkeypatch):
    previous = signal.getsignal(signal.SIGTERM)
    signal_at_calls(monkeypatch, {1: [signal.SIGTERM, signal.SIGTERM]})
    trainer = Trainer(load_config(CFG, OPTS + ["train.checkpoint.interval_iters=2"]), work_dir=tmp_path)
    with pytest.raises(TrainingAborted) as info:
        trainer.train()
    assert info.value.exit_code == 143 and trainer.iter == 1  # aborted inside iteration 1
    assert not list(tmp_path.glob("*.pth")) and not list(tmp_path.glob(".*.tmp"))
    assert signal.getsignal(signal.SIGTERM) is previous


def test_train_tool_sigint_exits_130_and_resume_continues(tmp_path, monkeypatch, capsys):
    signal_at_calls(monkeypatch, {4: [signal.SIGINT]})
    train = load_tool("train")
    args = [str(CFG), "--work-dir", str(tmp_path), "--cfg-options", *OPTS, "train.eval_interval=0"]
    assert train.main(args) == 130
    err = capsys.readouterr().err
    assert "interrupted: stopped by SIGINT after iteration 6" in err
    assert f"; saved {tmp_path / 'iter_6.pth'}; continue with --resume\n" in err  # the tool's flag
    monkeypatch.undo()
    assert train.main(args + ["--resume"]) == 0  # (--resume last: it takes an optional path)
    assert load_checkpoint(tmp_path / "epoch_2.pth")["iter"] == 8
    assert "resumed from" in (tmp_path / "train.log").read_text()


def test_train_tool_sigterm_in_a_subprocess_exits_143(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    work = tmp_path / "work"
    cmd = [sys.executable, str(ROOT / "tools" / "train.py"), str(CFG), "--work-dir", str(work), "--cfg-options",
           "train.epochs=1000", "train.eval_interval=0", "train.checkpoint.interval_iters=2"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(work.glob("iter_*.pth")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, err[-3000:]
    assert "interrupted: stopped by SIGTERM" in err
    path, ckpt = load_latest_checkpoint(work)
    assert ckpt["iter"] >= 2 and ckpt["iter"] % 2 == 0  # at an optimizer-step boundary
    assert f"saved {path}" in err and path.name in (f"iter_{ckpt['iter']}.pth", f"epoch_{ckpt['epoch']}.pth")


def test_stop_signals_are_installed_in_the_main_thread_only():
    previous = signal.getsignal(signal.SIGINT)
    with StopSignals() as stop:
        assert stop.installed and signal.getsignal(signal.SIGINT) == stop._handle
    assert signal.getsignal(signal.SIGINT) is previous
    seen = {}

    def in_thread():
        with StopSignals() as other:
            seen["installed"] = other.installed

    t = threading.Thread(target=in_thread)
    t.start()
    t.join()
    assert seen == {"installed": False} and signal.getsignal(signal.SIGINT) is previous


# ----------------------------------------------------------------------------------------------
# kill -9
# ----------------------------------------------------------------------------------------------


def _run_child(fn) -> int:
    """Fork; the child runs ``fn`` single-threaded and never returns into pytest."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 0
        try:
            torch.set_num_threads(1)
            fn()
        except BaseException:  # noqa: BLE001
            code = 1
        finally:
            os._exit(code)
    return pid


def _kill_after(pid: int, delay: float) -> None:
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def _save_forever(work: Path) -> None:
    """Continue the numbered checkpoints of ``work`` with 8 MB states, keeping 2."""
    manager = CheckpointManager(work, keep_last=2)
    found = load_latest_checkpoint(work)
    i = int(found[1]["model"]["step"]) + 1 if found else 0
    while True:
        manager.save({"model": {"w": torch.full((2_000_000,), float(i)), "step": torch.tensor(i)}}, f"iter_{i}.pth")
        i += 1


@needs_fork
def test_kill_9_while_saving_never_leaves_a_corrupt_latest_checkpoint(tmp_path):
    rng = random.Random(0)
    last, mid_save = -1, 0
    for _ in range(15):
        _kill_after(_run_child(lambda: _save_forever(tmp_path)), rng.uniform(0.05, 0.4))
        mid_save += bool(list(tmp_path.glob(".*.tmp")))  # killed while writing a file
        latest = find_latest_checkpoint(tmp_path)
        if latest is None:
            continue
        ckpt = load_checkpoint(latest)  # the file last_checkpoint names loads: no fallback needed
        step = int(ckpt["model"]["step"])
        assert latest.name == f"iter_{step}.pth" and torch.all(ckpt["model"]["w"] == step)
        assert step >= last
        last = step
        for other in tmp_path.glob("iter_*.pth"):  # every visible checkpoint is complete
            load_checkpoint(other)
        assert len(list(tmp_path.glob(".*.tmp"))) <= 1  # the last kill's temporary at most
    assert last >= 3 and mid_save >= 2, "too few saves / kills inside a save for the test to mean anything"
    CheckpointManager(tmp_path).save({"model": {}}, f"iter_{last + 1}.pth")
    assert not list(tmp_path.glob(".*.tmp"))  # the next save removes what a kill left behind


@needs_fork
def test_training_killed_9_repeatedly_resumes(tmp_path):
    opts = ["train.nominal_batch=2", "train.multi_scale=None", "train.eval_interval=0", "train.epochs=1000",
            "train.checkpoint.interval_iters=1", "train.checkpoint.keep_last=2", "train.log_interval=1"]

    def train_forever() -> None:
        Trainer(load_config(CFG, opts), work_dir=tmp_path, resume="auto").train()

    rng = random.Random(1)
    iters = []
    for _ in range(4):
        _kill_after(_run_child(train_forever), rng.uniform(0.8, 1.6))
        found = load_latest_checkpoint(tmp_path)
        if found is not None:
            iters.append(int(found[1]["iter"]))
    assert iters and iters == sorted(iters) and iters[-1] > 0
    path, ckpt = load_latest_checkpoint(tmp_path)
    epochs = int(ckpt["epoch"]) + 1
    trainer = Trainer(load_config(CFG, opts + [f"train.epochs={epochs}"]), work_dir=tmp_path, resume="auto")
    assert trainer.iter == iters[-1]
    trainer.train()
    final = load_checkpoint(tmp_path / f"epoch_{epochs}.pth")
    assert final["iter"] == epochs * 4 and final["epoch"] == epochs


# ----------------------------------------------------------------------------------------------
# truncated checkpoints
# ----------------------------------------------------------------------------------------------


def test_truncated_checkpoint_error_names_the_file(tmp_path):
    path = tmp_path / "iter_6.pth"
    atomic_save({"model": {"w": torch.randn(1000)}}, path)
    data = path.read_bytes()
    for size in (0, 10, len(data) // 2, len(data) - 10):
        path.write_bytes(data[:size])
        with pytest.raises(CheckpointError, match=f"{path}: cannot read checkpoint .*truncated or corrupt"):
            load_checkpoint(path)
    assert isinstance(CheckpointError("x"), ValueError)  # tools report it as a user error (exit 2)


def test_resume_auto_falls_back_past_a_truncated_checkpoint(tmp_path, reference):
    ref_work, _ = reference
    for name in ("epoch_1.pth", "epoch_2.pth"):  # written in this order by the reference run
        (tmp_path / name).write_bytes((ref_work / name).read_bytes())
        time.sleep(0.01)
    (tmp_path / "last_checkpoint").write_text("epoch_2.pth\n")
    newest = tmp_path / "epoch_2.pth"
    newest.write_bytes(newest.read_bytes()[:5000])  # a copy cut short, a disk that lied
    trainer = Trainer(load_config(CFG, OPTS), work_dir=tmp_path, resume="auto")
    assert trainer.iter == 4
    log = (tmp_path / "train.log").read_text()
    assert f"{newest}: cannot read checkpoint (5000 bytes)" in log and "trying the previous checkpoint" in log
    assert f"resumed from {tmp_path / 'epoch_1.pth'}" in log

    (tmp_path / "epoch_1.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        Trainer(load_config(CFG, OPTS), work_dir=tmp_path, resume="auto")


def test_train_tool_names_a_truncated_resume_path(tmp_path, reference, capsys):
    ref_work, _ = reference
    bad = tmp_path / "iter_2.pth"
    bad.write_bytes((ref_work / "epoch_1.pth").read_bytes()[:500])  # (the name of a valid one)
    code = load_tool("train").main([str(CFG), "--work-dir", str(tmp_path / "w"), "--resume", str(bad)])
    assert code == 2
    assert f"error: {bad}: cannot read checkpoint (500 bytes)" in capsys.readouterr().err


def test_resume_from_a_file_that_is_not_a_training_checkpoint(tmp_path):
    atomic_save({"backbone.0.weight": torch.zeros(1)}, tmp_path / "weights.pth")
    with pytest.raises(CheckpointError) as info:
        Trainer(load_config(CFG, OPTS), work_dir=tmp_path, resume=str(tmp_path / "weights.pth"))
    assert str(info.value).endswith("not a detkit training checkpoint (missing model, optimizer, scheduler, epoch, "
                                    "iter, epoch_iter, rng); use load_from to start from its weights only")
    assert cli_message(info.value).endswith("; use --load-from to start from its weights only")


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not available")
def test_ddp_ranks_skip_and_stop_together(tmp_path):
    proc = run_torchrun(Path(__file__).parent / "ddp_guard_worker.py", tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r in reports:  # rank 1's NaN skipped iteration 1 everywhere; rank 0's SIGTERM stopped both after 2
        assert r["exception"] == "TrainingInterrupted" and r["iter"] == 3 and r["loss_total"] == 1
        assert r["ema_updates"] == 2 and r["exit_code"] == 143
    assert reports[0]["checkpoint"] == reports[1]["checkpoint"] == str(tmp_path / "work" / "iter_3.pth")
    ckpt = load_checkpoint(tmp_path / "work" / "iter_3.pth")
    assert (ckpt["iter"], ckpt["epoch_iter"], ckpt["guard"]["loss_total"]) == (3, 3, 1)
