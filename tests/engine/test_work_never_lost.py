"""Work never lost (issue 24 item 3, issue 23 item 4): an epoch saved before it is evaluated, --resume
refusing a changed run (and --resume-anyway restarting at an epoch boundary), checkpoint meta, lean
final weights, a full disk while saving."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from detkit.cli import cli_message
from detkit.config import load_config
from detkit.engine import checkpoint as ck
from detkit.engine.checkpoint import CheckpointError, find_latest_checkpoint, load_checkpoint
from detkit.engine.run_checkpoints import check_resume
from detkit.engine.trainer import Trainer
from detkit.engine.weights import load_weights
from tests.engine.standins import TinyDataset, TinyDetector
from tests.fixtures.runs import train_losses
from tests.fixtures.tools import load_tool

ROOT = Path(__file__).resolve().parents[2]
CFG = Path(__file__).parent / "configs" / "tiny.py"
# 8 images, batch 2: 4 iterations per epoch, accumulate 2; 2 epochs; img_size recorded in the meta.
OPTS = ["train.checkpoint.interval_iters=2", "data.img_size=64"]
FULL_KEYS = {"optimizer", "scheduler", "rng", "scaler", "epoch_iter"}


def _trainer(work: Path, opts: tuple[str, ...] = (), **kw) -> Trainer:
    return Trainer(load_config(CFG, OPTS + list(opts)), work_dir=work, **kw)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 2-epoch run."""
    work = tmp_path_factory.mktemp("reference")
    trainer = _trainer(work)
    trainer.train()
    return work, trainer


def _copy_run(src: Path, dst: Path, checkpoint: str) -> None:
    """A work dir as a kill after ``checkpoint`` left it (that checkpoint newest, metrics up to then)."""
    shutil.copy(src / checkpoint, dst / checkpoint)
    (dst / "last_checkpoint").write_text(checkpoint + "\n")


# ----------------------------------------------------------------------------------------------
# 1. an epoch is saved before it is evaluated
# ----------------------------------------------------------------------------------------------


def test_an_evaluation_error_keeps_the_epoch_and_resume_evaluates_it(tmp_path, monkeypatch):
    seen = []

    def broken_evaluate(self):
        seen.append(sorted(p.name for p in tmp_path.glob("*.pth")))
        raise RuntimeError("evaluator crashed")

    monkeypatch.setattr(Trainer, "evaluate", broken_evaluate)
    with pytest.raises(RuntimeError, match="evaluator crashed"):
        _trainer(tmp_path, ["train.epochs=1", "schedule.assigner_switches=[]"]).train()
    assert seen == [["epoch_1.pth", "iter_2.pth"]]  # written before the evaluation started
    ckpt = load_checkpoint(tmp_path / "epoch_1.pth")
    assert (ckpt["epoch"], ckpt["iter"], ckpt["epoch_iter"], ckpt["epoch_end_pending"]) == (1, 4, 0, True)
    assert not (tmp_path / "best.pth").exists()
    monkeypatch.undo()

    resumed = _trainer(tmp_path, ["train.epochs=1", "schedule.assigner_switches=[]"], resume="auto")
    result = resumed.train()
    assert resumed.iter == 4 and "AP" in result["last_metrics"]  # evaluated, no iteration repeated
    assert result["best"]["epoch"] == 1 and (tmp_path / "best.pth").is_file()
    assert [r["epoch"] for r in resumed.writer.epochs] == [1] and "AP" in resumed.writer.epochs[0]


KILLED_IN_EVALUATION = """
import os, signal, sys
from detkit.config import load_config
from detkit.engine.trainer import Trainer
Trainer.evaluate = lambda self: os.kill(os.getpid(), signal.SIGKILL)
Trainer(load_config(sys.argv[1], sys.argv[3:]), work_dir=sys.argv[2]).train()
"""


@pytest.mark.slow
def test_kill_9_during_evaluation_loses_no_epoch(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    opts = OPTS + ["train.epochs=1", "schedule.assigner_switches=[]"]
    done = subprocess.run([sys.executable, "-c", KILLED_IN_EVALUATION, str(CFG), str(tmp_path), *opts], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert load_checkpoint(tmp_path / "epoch_1.pth")["epoch_end_pending"] is True
    assert find_latest_checkpoint(tmp_path).name == "epoch_1.pth"
    resumed = Trainer(load_config(CFG, opts), work_dir=tmp_path, resume="auto")
    assert "AP" in resumed.train()["last_metrics"] and resumed.iter == 4 and (tmp_path / "best.pth").is_file()


def test_resume_from_an_epoch_checkpoint_repeats_its_evaluation_and_the_same_training(reference, tmp_path):
    """The re-run evaluation leaves the RNGs alone: epoch 2 has the uninterrupted run's losses."""
    ref_work, ref = reference
    _copy_run(ref_work, tmp_path, "epoch_1.pth")
    resumed = _trainer(tmp_path, resume="auto")
    assert resumed.epoch_end_pending and (resumed.epoch, resumed.iter) == (1, 4)
    resumed.train()
    ref_losses, got = train_losses(ref_work), train_losses(tmp_path)
    assert sorted(got) == [5, 6, 7, 8] and all(got[s] == ref_losses[s] for s in got)
    assert resumed.best == ref.best
    a, b = load_checkpoint(ref_work / "epoch_2.pth"), load_checkpoint(tmp_path / "epoch_2.pth")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    rows = [r for r in resumed.writer.epochs]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[0]["AP"] == ref.writer.epochs[0]["AP"]


# ----------------------------------------------------------------------------------------------
# 2. --resume refuses a changed run; --resume-anyway restarts at an epoch boundary
# ----------------------------------------------------------------------------------------------


def test_resume_after_a_finished_epoch_end_does_not_evaluate_it_again(tmp_path, monkeypatch):
    """The epoch's row is in the metrics: its evaluation, best.pth and row were done before the stop, so a
    resume (here: a finished 1-epoch run continued to 2 epochs) evaluates epoch 2 only and keeps epoch 1's best."""
    opts = ["schedule.assigner_switches=[]"]
    first = _trainer(tmp_path, [*opts, "train.epochs=1"])
    first.train()
    evaluated = []
    original = Trainer.evaluate

    def counting(self):
        evaluated.append(self.epoch)
        return original(self)

    monkeypatch.setattr(Trainer, "evaluate", counting)
    resumed = _trainer(tmp_path, [*opts, "train.epochs=2"], resume="auto")
    assert not resumed.epoch_end_pending and resumed.best == first.best
    resumed.train()
    assert evaluated == [2]
    records = [line for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"kind": "epoch"' in line]
    assert [int(r.split('"epoch": ')[1].split(",")[0]) for r in records] == [1, 2]


def test_resume_with_another_batch_size_is_refused_naming_both_values(reference, tmp_path):
    _copy_run(reference[0], tmp_path, "iter_2.pth")
    with pytest.raises(CheckpointError) as info:
        _trainer(tmp_path, ["data.train.batch_size=4"], resume="auto")
    msg = str(info.value)
    assert "\n" not in msg and "iter_2.pth" in msg
    assert "data.train.batch_size 4 (checkpoint: 2)" in msg and "accumulation steps" in msg
    assert msg.endswith("restore them, or pass resume_anyway=True to continue from the next epoch boundary with the "
                        "new settings")  # the Trainer's argument; a tool prints its flag
    assert cli_message(info.value).endswith(" or pass --resume-anyway to continue from the next epoch boundary with "
                                            "the new settings") and "resume_anyway" not in cli_message(info.value)


def test_resume_anyway_restarts_at_the_next_epoch_without_repeating_images(reference, tmp_path, monkeypatch):
    _copy_run(reference[0], tmp_path, "iter_2.pth")  # epoch 1, 2 of 4 iterations done (batch 2)
    trainer = _trainer(tmp_path, ["data.train.batch_size=1"], resume="auto", resume_anyway=True)
    # batch 1: 8 iterations per epoch; the rest of epoch 1 is skipped (continuing it with the skip counted
    # in batches of 1 would draw 4 of its images a second time), epoch 2 starts at iteration 8
    assert (trainer.iters_per_epoch, trainer.epoch, trainer.epoch_iter, trainer.iter) == (8, 0, 8, 8)
    drawn, train_set, original = [], trainer.train_set, TinyDataset.__getitem__

    def getitem(self, i):
        if self is train_set:  # (not the evaluation's)
            drawn.append(i)
        return original(self, i)

    monkeypatch.setattr(TinyDataset, "__getitem__", getitem)
    trainer.train()
    assert sorted(drawn) == list(range(8))  # epoch 2 only: each training image once
    assert sorted(train_losses(tmp_path)) == list(range(9, 17)) and trainer.iter == 16
    assert load_checkpoint(tmp_path / "epoch_2.pth")["meta"]["run"]["batch_size"] == 1


def test_resume_of_another_model_is_the_one_line_refusal_of_load_weights(reference, tmp_path):
    _copy_run(reference[0], tmp_path, "epoch_1.pth")
    with pytest.raises(CheckpointError) as info:
        _trainer(tmp_path, ["model.width=16"], resume="auto")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("cannot resume: ") and "does not fit the model" in msg
    assert "backbone.0.weight: checkpoint (8, 3, 3, 3) vs model (16, 3, 3, 3)" in msg
    # another class count: the same refusal (not torch's "size mismatch" RuntimeError)
    ckpt = load_checkpoint(tmp_path / "epoch_1.pth")
    with pytest.raises(CheckpointError, match=r"head\.out\.weight: checkpoint \(6, 8, 1, 1\) vs model \(7, 8, 1, 1\)"):
        check_resume(tmp_path / "epoch_1.pth", ckpt, TinyDetector(num_classes=3), ckpt["meta"]["run"], False)


def test_train_tool_refuses_a_changed_resume_with_exit_2(reference, tmp_path, capsys):
    _copy_run(reference[0], tmp_path, "iter_2.pth")
    train = load_tool("train")
    args = [str(CFG), "--work-dir", str(tmp_path), "--resume", "--cfg-options", *OPTS, "data.train.batch_size=4"]
    assert train.main(args) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # (the log lines before it go to stderr too)
    assert last.startswith("error: cannot resume from") and "batch_size 4" in last and "Traceback" not in err
    args = [a for a in args if a != "--resume"] + ["--resume-anyway"]  # accepted, at the next epoch boundary
    assert train.main(args) == 0
    assert "--resume-anyway: data.train.batch_size 4 (checkpoint: 2)" in (tmp_path / "train.log").read_text()


# ----------------------------------------------------------------------------------------------
# 3. meta in every checkpoint; 4. lean final weights
# ----------------------------------------------------------------------------------------------


def test_every_checkpoint_carries_meta_and_config(reference):
    work, _ = reference
    for name in ("iter_2.pth", "epoch_1.pth", "epoch_2.pth", "best.pth", "last.pth"):
        ckpt = load_checkpoint(work / name)
        meta = ckpt["meta"]
        assert (meta["class_names"], meta["num_classes"], meta["img_size"]) == (["c0", "c1"], 2, 64), name
        assert meta["run"] == {"batch_size": 2, "accumulate": 2, "world_size": 1, "img_size": 64,
                               "num_classes": 2, "dataset_size": 8}
        assert "TinyDetector" in ckpt["config"]


def test_final_weights_are_lean_ema_weights_and_resume_still_finds_a_full_one(reference):
    work, trainer = reference
    full = load_checkpoint(work / "epoch_2.pth")
    for name in ("best.pth", "last.pth"):
        lean = load_checkpoint(work / name)
        assert not FULL_KEYS & set(lean) and lean["ema"] is None and lean["meta"]["weights"] == "ema", name
    last = load_checkpoint(work / "last.pth")
    assert all(torch.equal(last["model"][k], v) for k, v in full["ema"]["module"].items())
    assert last["epoch"] == 2 and last["best"] == trainer.best
    assert (work / "last.pth").stat().st_size < (work / "epoch_2.pth").stat().st_size
    assert find_latest_checkpoint(work).name == "epoch_2.pth"
    model = TinyDetector()
    load_weights(model, work / "last.pth", strict=True)  # what test / infer / export do
    assert all(torch.equal(model.state_dict()[k], v) for k, v in last["model"].items())
    with pytest.raises(CheckpointError) as info:
        _trainer(work, resume=str(work / "last.pth"))
    assert str(info.value).endswith("holds the final weights only (no optimizer, schedule or RNG state); resume from "
                                    "an epoch_*.pth / iter_*.pth checkpoint, or use load_from to start a new run from "
                                    "these weights")
    assert "or use --load-from to start a new run" in cli_message(info.value)


def test_final_weights_in_fp16_when_asked(tmp_path):
    _trainer(tmp_path, ["train.epochs=1", "schedule.assigner_switches=[]", "train.checkpoint.final_fp16=True"]).train()
    full = load_checkpoint(tmp_path / "epoch_1.pth")
    for name in ("best.pth", "last.pth"):
        lean = load_checkpoint(tmp_path / name)
        assert lean["meta"]["dtype"] == "float16"
        floats = [v for v in lean["model"].values() if v.is_floating_point()]
        assert floats and all(v.dtype == torch.float16 for v in floats)
        assert lean["model"]["backbone.1.num_batches_tracked"].dtype == torch.int64
    model = TinyDetector()
    load_weights(model, tmp_path / "last.pth", strict=True)
    w = full["ema"]["module"]["backbone.0.weight"]
    assert torch.equal(model.backbone[0].weight.detach(), w.half().float())


# ----------------------------------------------------------------------------------------------
# 5. a full disk while saving a checkpoint
# ----------------------------------------------------------------------------------------------


def test_full_disk_while_saving_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys):
    real_save = torch.save
    calls = []

    def fill_disk(obj, f):
        calls.append(1)
        if len(calls) == 3:  # iter_2, epoch_1 (no evaluation: eval_interval=0), then iter_6 fills the disk
            f.write(b"x" * 1000)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f)

    monkeypatch.setattr(ck.torch, "save", fill_disk)
    train = load_tool("train")
    args = [str(CFG), "--work-dir", str(tmp_path), "--cfg-options", *OPTS, "train.eval_interval=0"]
    assert train.main(args) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot write {tmp_path / 'iter_6.pth'}: disk full") and "Traceback" not in err
    assert " free on " in last and last.endswith("nothing was written")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["epoch_1.pth", "iter_2.pth"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert load_checkpoint(tmp_path / "epoch_1.pth")["iter"] == 4
    assert find_latest_checkpoint(tmp_path).name == "epoch_1.pth"
