"""detkit.fileio: atomic writes, and a full disk as one line naming the path and the free space."""

from __future__ import annotations

import errno
import os

import pytest
import torch

from detkit.engine.checkpoint import CheckpointManager, atomic_save, load_checkpoint
from detkit.fileio import OutputWriteError, atomic_write, atomic_write_bytes, atomic_write_text


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
