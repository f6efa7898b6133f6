"""Figures and the analysis written by ``tools/test.py`` on a full disk (issue 24.3, found in QA):
``--pr-curve`` / ``--analysis`` used to end in an ``OSError: [Errno 28]`` traceback from PIL after the
evaluation, leaving a 0-byte ``pr.png``. Now each is written atomically: one line, exit 2, the
previous file intact, no temporary. ``tools/infer.py`` likewise: its ``detections.json`` ended in a traceback
and a 0-byte file, and a drawn image that could not be written was silently missing (``cv2.imwrite``
returns False). The training plots (``losses.png``, ``metrics.png``) on a full disk were an ``OSError``
traceback at the end of a run whose checkpoints were all written; now a warning, and the run ends well."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import matplotlib
import pytest

from detkit.io import OutputWriteError, atomic_save_figure
from tests.fixtures.tools import load_tool
from tests.tools.test_inputs_never_outputs import CFG, FAST, tiny_checkpoint, write_images

matplotlib.use("Agg")

PNG = b"\x89PNG\r\n\x1a\n"


def disk_full_for(monkeypatch, name: str) -> None:
    """``os.fsync`` fails with ENOSPC for the temporaries of files called ``name``; others are written."""
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if f".{name}." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_atomic_save_figure_writes_the_suffixs_format_and_keeps_the_old_file_on_a_full_disk(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(1, 1))
    atomic_save_figure(fig, tmp_path / "a.png", dpi=20)
    atomic_save_figure(fig, tmp_path / "a.svg")
    assert (tmp_path / "a.png").read_bytes().startswith(PNG)
    assert b"<svg" in (tmp_path / "a.svg").read_bytes()
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    before = (tmp_path / "a.png").read_bytes()
    with pytest.raises(OutputWriteError, match=f"cannot write {tmp_path / 'a.png'}: disk full"):
        atomic_save_figure(fig, tmp_path / "a.png")
    plt.close(fig)
    assert (tmp_path / "a.png").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "a.svg"]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd to tell the file written")
@pytest.mark.parametrize("flag, name", [("--pr-curve", "pr.png"), ("--analysis", "confusion_matrix.png"),
                                        ("--analysis", "errors_by_size.png"), ("--analysis", "analysis.md")])
def test_test_tool_figures_on_a_full_disk_are_one_line_and_keep_the_old_file(tmp_path, capsys, monkeypatch,
                                                                            flag, name):
    out = tmp_path / "out"
    out.mkdir()
    target = out / name
    target.write_bytes(b"old")
    ckpt = tiny_checkpoint(tmp_path / "m.pth")
    disk_full_for(monkeypatch, name)
    path = str(target) if flag == "--pr-curve" else str(out)
    argv = [CFG, str(ckpt), "--device", "cpu", "--no-progress", flag, path, "--analysis-score-thr", "0"]
    assert load_tool("test").main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        next(line for line in err.splitlines() if line.startswith(f"error: cannot write {target}: disk full"))]
    assert target.read_bytes() == b"old"
    assert not [p for p in Path(out).iterdir() if p.name.endswith(".tmp")]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd to tell the file written")
@pytest.mark.parametrize("name", ["detections.json", "im1.png"])
def test_infer_on_a_full_disk_is_one_line_and_keeps_the_old_file(tmp_path, capsys, monkeypatch, name):
    photos = tmp_path / "photos"
    write_images(photos, 2)
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_bytes(b"old")
    ckpt = tiny_checkpoint(tmp_path / "m.pth")
    disk_full_for(monkeypatch, name)
    # the folder holds an earlier run's file: writing into it is asked for by name (--overwrite)
    argv = [CFG, str(ckpt), str(photos), "--out", str(out), "--overwrite", "--img-size", "64", "--device", "cpu"]
    assert load_tool("infer").main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith(f"error: cannot write {out / name}: disk full"), err
    assert (out / name).read_bytes() == b"old"
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd to tell the file written")
def test_training_plots_on_a_full_disk_are_a_warning_and_the_run_ends_well(tmp_path, capsys, monkeypatch):
    work = tmp_path / "work"
    disk_full_for(monkeypatch, "losses.png")
    assert load_tool("train").main([CFG, "--work-dir", str(work), "--cfg-options", *FAST,
                                    "runtime.plot_interval=0"]) == 0
    assert (work / "best.pth").is_file() and (work / "epoch_1.pth").is_file() and not (work / "losses.png").exists()
    log = (work / "train.log").read_text()
    assert f"WARNING plots not written: cannot write {work / 'losses.png'}: disk full" in log
    assert not [p for p in work.iterdir() if p.name.endswith(".tmp")]
    capsys.readouterr()
