"""detkit.io: atomic writes (a full disk as one line naming the path and the free space; the old file
kept), the writer of a temporary, lock files naming their holder (live: refused, dead: taken over)."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from detkit.engine.checkpoint import CheckpointManager, load_checkpoint
from detkit.io import (
    LockHolder,
    OutputWriteError,
    PidLock,
    atomic_save,
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    process_gone,
    read_lock,
    temporary_writer,
)


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_atomic_write_text_and_bytes_round_trip(tmp_path):
    atomic_write_text(tmp_path / "a.json", '{"x": 1}\n')
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "a.json").read_text(encoding="utf-8") == '{"x": 1}\n'
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert _names(tmp_path) == ["a.json", "b.bin"]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_full_disk_is_one_line_with_free_space_and_keeps_the_old_file(tmp_path, code):
    path = tmp_path / "results.json"
    atomic_write_text(path, "old")

    def fill(f):
        f.write("new, partly")
        raise OSError(code, os.strerror(code))

    with pytest.raises(OutputWriteError) as info:
        atomic_write(path, "w", fill)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg and "disk full" in msg
    assert " free on " in msg and msg.endswith("the previous file is unchanged")
    assert isinstance(info.value, ValueError)  # tools exit 2
    assert path.read_text() == "old" and _names(tmp_path) == ["results.json"]


def test_other_refused_write_names_the_reason(tmp_path):
    with pytest.raises(OutputWriteError, match=r"cannot write .*missing/x\.json: No such file or directory; "
                                               r"nothing was written"):
        atomic_write_text(tmp_path / "missing" / "x.json", "{}")


def test_a_bug_in_the_writer_keeps_its_traceback(tmp_path):
    with pytest.raises(ZeroDivisionError):
        atomic_write(tmp_path / "x.txt", "w", lambda f: 1 / 0)
    assert _names(tmp_path) == []


def test_torch_short_write_while_saving_a_checkpoint(tmp_path, monkeypatch):
    """torch.save on a full disk: 'unexpected pos' RuntimeError; one line, previous checkpoint intact."""
    mgr = CheckpointManager(tmp_path, keep_last=3)
    mgr.save({"epoch": 1, "w": torch.ones(3)}, "epoch_1.pth")
    real_save = torch.save

    def short_write(obj, f):
        real_save(obj, f)
        raise RuntimeError("[enforce fail at inline_container.cc:783] . PytorchStreamWriter failed writing file "
                           "data/0: unexpected pos 4444672 vs 4444568")

    monkeypatch.setattr(torch, "save", short_write)
    with pytest.raises(OutputWriteError, match=r"epoch_2\.pth: disk full .* free on .*; nothing was written"):
        mgr.save({"epoch": 2, "w": torch.zeros(3)}, "epoch_2.pth")
    monkeypatch.undo()
    assert _names(tmp_path) == ["epoch_1.pth", "last_checkpoint"]
    assert torch.equal(load_checkpoint(tmp_path / "epoch_1.pth")["w"], torch.ones(3))
    assert (tmp_path / "last_checkpoint").read_text() == "epoch_1.pth\n"
    with pytest.raises(OutputWriteError, match="previous file is unchanged"):
        monkeypatch.setattr(torch, "save", short_write)
        atomic_save({"w": torch.zeros(1)}, tmp_path / "epoch_1.pth")


def test_metrics_files_on_a_full_disk_are_one_line(tmp_path, monkeypatch):
    from detkit.engine import logging as run_logging

    writer = run_logging.MetricsWriter(tmp_path)
    writer.log_epoch(1, {"loss": 1.0})
    before = {n: (tmp_path / n).read_text() for n in ("metrics.csv", "metrics.jsonl")}

    def full_open(path, mode="r", *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(run_logging, "open", full_open, raising=False)
    with pytest.raises(OutputWriteError, match=r"metrics\.jsonl: disk full .* free on .*; the lines before are intact"):
        writer.log("train", 5, {"loss": 0.5})
    monkeypatch.undo()

    def fill(obj, *args, **kwargs):
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    monkeypatch.setattr(run_logging.csv, "DictWriter", fill)
    with pytest.raises(OutputWriteError, match=r"metrics\.csv: disk full .*; the previous file is unchanged"):
        writer.log_epoch(2, {"loss": 0.5})
    monkeypatch.undo()
    assert (tmp_path / "metrics.csv").read_text() == before["metrics.csv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv", "metrics.jsonl"]


def test_written_files_get_a_plain_files_permissions_or_keep_the_replaced_ones(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "new.json", "{}")
        assert (tmp_path / "new.json").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
        (tmp_path / "shared.json").write_text("{}")
        os.chmod(tmp_path / "shared.json", 0o664)
        atomic_write_text(tmp_path / "shared.json", "[]")
        assert (tmp_path / "shared.json").stat().st_mode & 0o777 == 0o664
    finally:
        os.umask(old)


# ----------------------------------------------------------------------------------------------
# atomic writes keep the old file; lock files naming their holder
# ----------------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
HOLD = ("import sys; from detkit.io import PidLock; lock = PidLock(sys.argv[1], purpose='test'); "
        "assert lock.acquire(); print('held', flush=True); sys.stdin.read()")


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "results.json"
    atomic_write_text(path, "old")
    with pytest.raises(ZeroDivisionError):
        atomic_write(path, "w", lambda f: (f.write("new, half"), 1 / 0))
    assert path.read_text() == "old" and _names(tmp_path) == ["results.json"]
    atomic_save({"w": torch.ones(2)}, tmp_path / "sub" / "w.pth")  # torch.save through the same write
    assert torch.equal(torch.load(tmp_path / "sub" / "w.pth")["w"], torch.ones(2))


def test_the_writer_of_a_temporary_is_read_back_from_its_name():
    assert temporary_writer(".epoch_1.pth.node-3.cluster-a-4321.x7_k2.tmp", "epoch_1.pth") == ("node-3.cluster-a", 4321)
    assert temporary_writer(".epoch_1.pth.node-3-4321.x7.tmp", "best.pth") is None
    assert temporary_writer("epoch_1.pth", "epoch_1.pth") is None


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_process_gone_only_for_a_dead_pid_of_this_host():
    assert process_gone(socket.gethostname(), _dead_pid())
    assert not process_gone(socket.gethostname(), os.getpid())
    assert not process_gone("another-host", _dead_pid())  # cannot be checked: not known to be gone


def test_a_lock_held_by_a_live_process_refuses_and_a_dead_ones_is_taken_over(tmp_path):
    path = tmp_path / "x.lock"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "held"
        lock = PidLock(path)
        assert not lock.acquire() and not lock.held
        holder = lock.read()
        assert (holder.pid, holder.host, holder.running()) == (proc.pid, socket.gethostname(), True)
        assert json.loads(path.read_text())["purpose"] == "test"  # the claim's info is in the file
    finally:
        proc.kill()  # kill -9: the file stays behind
        proc.wait()
    assert lock.read() == holder and holder.running() is False
    assert lock.remove_stale(holder) and lock.acquire() and lock.held
    assert lock.read().pid == os.getpid() and lock.read().run_id == lock.holder.run_id
    lock.release()
    assert not path.exists() and not lock.held
    lock.release()  # again: nothing


def test_a_lock_is_removed_only_while_it_names_what_was_seen(tmp_path):
    path = tmp_path / "x.lock"
    path.write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    stale = read_lock(path)
    assert stale is not None and stale.run_id == "" and stale.running() is False
    newer = PidLock(path)
    assert newer.remove_stale(stale) and newer.acquire()
    assert not PidLock(path).remove_stale(stale)  # the file now names another claim: left alone
    assert read_lock(path) == newer.holder
    path.write_text("not json")
    assert read_lock(path) is None
    newer.release()  # the file no longer names this claim: not deleted
    assert path.read_text() == "not json"


def test_a_lock_of_another_host_cannot_be_checked(tmp_path):
    path = tmp_path / "x.lock"
    path.write_text(json.dumps({"pid": _dead_pid(), "host": "elsewhere", "run_id": "r", "started": "t",
                                "command": "c"}))
    holder = read_lock(path)
    assert holder == LockHolder(holder.pid, "elsewhere", "r", "t", "c") and holder.running() is None
    assert not PidLock(path).acquire()


def test_a_garbage_collected_lock_releases_its_file_and_a_detached_one_keeps_it(tmp_path):
    first = PidLock(tmp_path / "a.lock")
    assert first.acquire()
    del first
    assert not (tmp_path / "a.lock").exists()
    second = PidLock(tmp_path / "b.lock")
    assert second.acquire()
    second.detach()
    del second
    assert read_lock(tmp_path / "b.lock").pid == os.getpid()
