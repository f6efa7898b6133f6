"""Work-dir ownership (detkit.engine.workdir): the lock, stale locks, earlier runs, --overwrite,
output-path checks, rank 0 only under torch.distributed; checkpoint temporaries of live writers kept."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from detkit.cli import cli_message
from detkit.engine.checkpoint import CheckpointManager, atomic_save
from detkit.engine.output_paths import OutputPathError, check_output_dir, check_output_file
from detkit.engine.weights import load_weights
from detkit.engine.workdir import LOCK_NAME, WorkDirError, claim_work_dir, clear_previous_run, previous_run_files

ROOT = Path(__file__).resolve().parents[2]
HOLD = ("import sys; from detkit.engine.workdir import claim_work_dir; lock = claim_work_dir(sys.argv[1]); "
        "print('held', flush=True); sys.stdin.read()")


@pytest.fixture
def holder(tmp_path):
    """Another process holding ``tmp_path / 'work'`` (killed with SIGKILL at the end)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "work")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "held"
    yield proc
    proc.kill()
    proc.wait()


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_process_is_refused_naming_the_holder_then_a_killed_holder_is_stale(tmp_path, holder):
    work = tmp_path / "work"
    with pytest.raises(WorkDirError) as info:
        claim_work_dir(work)
    msg = str(info.value)
    assert f"in use by process {holder.pid} on {socket.gethostname()}" in msg and "\n" not in msg
    holder.kill()  # kill -9: the lock file stays behind
    holder.wait()
    assert json.loads((work / LOCK_NAME).read_text())["pid"] == holder.pid
    lock = claim_work_dir(work)
    assert lock.held and json.loads((work / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert len(lock.notes) == 1 and f"stale lock of process {holder.pid}" in lock.notes[0]
    lock.release()
    assert not (work / LOCK_NAME).exists()


def test_a_lock_from_another_host_is_refused_with_the_file_to_delete(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / LOCK_NAME).write_text(json.dumps({"pid": dead_pid(), "host": "elsewhere", "run_id": "x",
                                              "started": "2026-01-01 00:00:00", "command": "train.py"}))
    with pytest.raises(WorkDirError, match=f"on elsewhere .*if that run is gone, delete {work / LOCK_NAME}"):
        claim_work_dir(work)


def test_in_one_process_a_newer_claim_takes_over(tmp_path):
    first = claim_work_dir(tmp_path)
    second = claim_work_dir(tmp_path)  # a notebook re-creating its Trainer
    assert second.held and not first.held and second.notes == []
    first.release()  # the older one no longer owns the file: it stays
    assert json.loads((tmp_path / LOCK_NAME).read_text())["run_id"] == second.holder.run_id
    del second  # garbage-collected: released
    assert not (tmp_path / LOCK_NAME).exists()


def test_an_earlier_run_is_refused_unless_resume_or_overwrite(tmp_path):
    names = ["epoch_2.pth", "best.pth", "last_checkpoint", "metrics.csv", "metrics.jsonl", "train.log",
             "config.py", "losses.png", ".epoch_3.pth.h-1.x.tmp", "notes.txt", "my_weights.pth"]
    for n in names:
        (tmp_path / n).write_text("x")
    (tmp_path / "config.py").write_text("# detkit config dump\nx = 1\n")  # a run's dump: deleted with the run
    (tmp_path / "tb").mkdir()
    (tmp_path / "tb" / "events.out.tfevents.1.h").write_text("x")
    assert [p.name for p in previous_run_files(tmp_path)] == [
        "best.pth", "epoch_2.pth", "last_checkpoint", "metrics.csv", "metrics.jsonl"]
    with pytest.raises(WorkDirError) as info:
        claim_work_dir(tmp_path)
    remedy = "continue it with {}, pick a new {}, or pass {} to delete its checkpoints and metrics first"
    start = f"work dir {tmp_path} holds an earlier run (best.pth, epoch_2.pth, last_checkpoint, metrics.csv, ...); "
    # the library names its own arguments (Trainer(resume=..., work_dir=..., overwrite=...)); a tool, its flags
    assert str(info.value) == start + remedy.format("resume='auto'", "work_dir", "overwrite=True")
    assert cli_message(info.value) == start + remedy.format("--resume", "--work-dir", "--overwrite")
    assert not (tmp_path / LOCK_NAME).exists()  # the refused claim let go of the lock
    claim_work_dir(tmp_path, resume="auto").release()  # continuing it is fine
    with pytest.raises(WorkDirError) as info:
        claim_work_dir(tmp_path, resume="auto", overwrite=True)
    assert str(info.value) == "resume continues the run in the work dir and overwrite deletes it: pass one of them"
    assert cli_message(info.value) == "--resume continues the run in the work dir and --overwrite deletes it: pass " \
                                      "one of them"
    lock = claim_work_dir(tmp_path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my_weights.pth", "notes.txt", LOCK_NAME]
    assert "deleted 10 file(s)" in lock.notes[0]
    lock.release()
    assert clear_previous_run(tmp_path / "missing") == []


def test_output_paths_are_checked_without_creating_anything(tmp_path):
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    with pytest.raises(OutputPathError, match=f"--work-dir {a_file}: is a file, not a folder"):
        check_output_dir(a_file, "--work-dir")
    with pytest.raises(OutputPathError, match=f"--out {a_file / 'x' / 'r.json'}: {a_file} is a file"):
        check_output_file(a_file / "x" / "r.json", "--out")
    with pytest.raises(OutputPathError, match="is a folder, expected a file path"):
        check_output_file(tmp_path, "--pr-curve")
    with pytest.raises(OutputPathError) as info:
        claim_work_dir(a_file / "work")
    assert str(info.value) == f"work_dir {a_file / 'work'}: {a_file} is a file, not a folder"
    assert cli_message(info.value) == f"--work-dir {a_file / 'work'}: {a_file} is a file, not a folder"
    assert check_output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "ro"
        locked.mkdir(mode=0o500)
        with pytest.raises(OutputPathError, match="no permission to write"):
            check_output_dir(locked / "w", "--work-dir")


def test_other_ranks_neither_lock_nor_refuse(tmp_path, holder):
    work = tmp_path / "work"
    (work / "epoch_1.pth").write_text("x")
    lock = claim_work_dir(work, rank=1)  # without torch.distributed: no verdict to wait for
    assert not lock.held and json.loads((work / LOCK_NAME).read_text())["pid"] == holder.pid


def _ddp_claim(rank: int, work: str, out: str, init: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    result = {}
    try:
        claim_work_dir(work, rank=rank)
    except WorkDirError as e:
        result["refused"] = str(e)
    lock = claim_work_dir(work, overwrite=True, rank=rank)
    result["held"] = lock.held
    result["lock_pid"] = json.loads((Path(work) / LOCK_NAME).read_text())["pid"]
    result["pid"] = os.getpid()
    torch.distributed.barrier()
    lock.release()
    torch.distributed.destroy_process_group()
    Path(out, f"rank{rank}.json").write_text(json.dumps(result))


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not available")
def test_under_distributed_rank_0_holds_the_lock_and_every_rank_gets_its_verdict(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "iter_4.pth").write_text("x")
    init = f"file://{tmp_path / 'rendezvous'}"
    torch.multiprocessing.start_processes(_ddp_claim, args=(str(work), str(tmp_path), init), nprocs=2,
                                          start_method="fork")
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert "holds an earlier run" in r0["refused"] and r1["refused"] == r0["refused"]
    assert r0["held"] and not r1["held"] and r0["lock_pid"] == r1["lock_pid"] == r0["pid"]
    assert not (work / "iter_4.pth").exists() and not (work / LOCK_NAME).exists()


def test_checkpoint_clean_up_removes_only_temporaries_of_dead_writers(tmp_path):
    host = socket.gethostname()
    live = tmp_path / f".best.pth.{host}-{os.getppid()}.abc123.tmp"  # another live process writing
    dead = tmp_path / f".epoch_1.pth.{host}-{dead_pid()}.k2j3h4.tmp"  # left by a killed run
    remote = tmp_path / f".iter_2.pth.otherhost-{dead_pid()}.z9y8x7.tmp"  # cannot be checked from here
    legacy = tmp_path / ".iter_3.pth.q1w2e3.tmp"  # no writer in the name
    for p in (live, dead, remote, legacy):
        p.write_bytes(b"partial")
    CheckpointManager(tmp_path).save({"model": {}}, "epoch_1.pth")
    assert sorted(p.name for p in tmp_path.glob(".*.tmp")) == sorted(p.name for p in (live, remote, legacy))


class _Net(torch.nn.Module):
    def __init__(self, classes: int, extra: bool = False) -> None:
        super().__init__()
        self.backbone = torch.nn.Conv2d(3, 4, 1)
        self.cls = torch.nn.Conv2d(4, classes, 1)
        if extra:
            self.obj = torch.nn.Conv2d(4, 1, 1)


def test_strict_weights_must_fill_the_model_and_nothing_is_loaded_otherwise(tmp_path):
    atomic_save({"model": _Net(80).state_dict()}, tmp_path / "coco.pth")
    dst = _Net(5)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(ValueError) as info:
        load_weights(dst, tmp_path / "coco.pth", strict=True)
    msg = str(info.value)
    assert msg.startswith(f"{tmp_path / 'coco.pth'} does not fit the model: 2 tensor(s) of another shape (")
    assert "cls.weight: checkpoint (80, 4, 1, 1) vs model (5, 4, 1, 1)" in msg and "cls.bias: checkpoint (80,)" in msg
    assert "\n" not in msg
    assert all(torch.equal(before[k], v) for k, v in dst.state_dict().items())  # the backbone was not loaded
    with pytest.raises(ValueError, match=r"2 model tensor\(s\) missing \(obj.bias, obj.weight\)"):
        load_weights(_Net(80, extra=True), tmp_path / "coco.pth", strict=True)
    atomic_save({"model": _Net(80, extra=True).state_dict()}, tmp_path / "more.pth")
    with pytest.raises(ValueError, match=r"2 tensor\(s\) the model does not have \(obj.bias, obj.weight\)"):
        load_weights(_Net(80), tmp_path / "more.pth", strict=True)
    assert load_weights(_Net(80), tmp_path / "coco.pth", strict=True)["shape_mismatch"] == []
    assert load_weights(dst, tmp_path / "coco.pth")["shape_mismatch"] == ["cls.bias", "cls.weight"]  # fine-tuning


def test_overwrite_deletes_the_earlier_runs_report_files_too(tmp_path):
    """A new run over an old one must not leave the old run's figures beside its own (if it fails early)."""
    from detkit.engine.run_report import ERRORS_FILE, REPORT_FILES

    (tmp_path / "epoch_1.pth").write_bytes(b"x")
    for name in (*REPORT_FILES, ERRORS_FILE, "notes.txt"):
        (tmp_path / name).write_text("old")
    clear_previous_run(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_rank_0s_verdict_keeps_its_type_and_a_bug_keeps_its_traceback(tmp_path, monkeypatch):
    from detkit.engine import workdir
    from detkit.errors import ConfigError

    def bug(*args):
        raise ZeroDivisionError("a bug while claiming")

    monkeypatch.setattr(workdir, "_claim", bug)
    with pytest.raises(ZeroDivisionError):  # rank 0: the error itself, not a user error
        claim_work_dir(tmp_path)
    monkeypatch.setattr(workdir, "_agree", lambda verdict: "ZeroDivisionError: a bug while claiming")
    with pytest.raises(RuntimeError, match="rank 0 failed to claim the work dir .*ZeroDivisionError"):
        claim_work_dir(tmp_path, rank=1)  # what the other ranks get
    sent = ConfigError("a user error of some class")
    monkeypatch.setattr(workdir, "_agree", lambda verdict: sent)
    with pytest.raises(ConfigError) as info:
        claim_work_dir(tmp_path, rank=1)
    assert info.value is sent  # the class and message rank 0 raised, as sent
