"""``tools/export.py`` on a full disk (issue 24.3, found in QA): the ONNX file is built in memory and
written once, atomically; a full disk is one line, exit 2, the previous file kept, no temporary (it was
an ``OSError`` traceback from torch's exporter and a 0-byte ``.onnx``)."""

from __future__ import annotations

import errno
import os

import pytest

from tests.deploy.conftest import CFG
from tests.fixtures.tools import load_tool

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd to tell the file written")
def test_export_on_a_full_disk_is_one_line_and_keeps_the_old_file(tmp_path, checkpoint, capsys, monkeypatch):
    out = tmp_path / "tiny.onnx"
    out.write_bytes(b"old")
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if ".tiny.onnx." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    assert load_tool("export").main([str(CFG), str(checkpoint), "--out", str(out)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith(f"error: cannot write {out}: disk full"), err
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.onnx"]
