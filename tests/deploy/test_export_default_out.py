"""``detkit export CKPT`` without ``--out`` never replaces the file beside the checkpoint that an
earlier export left (``.onnx``; ``.xml`` / ``.bin``): one line, exit status 2, unless ``--overwrite``;
a named ``--out`` is the user's choice and is written over (as every tool's named output)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.deploy.conftest import CFG
from tests.fixtures.tools import load_tool


def test_export_never_replaces_a_default_output_it_was_not_told_to(tmp_path: Path, checkpoint: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnx")
    export = load_tool("export")
    ckpt = Path(shutil.copy(checkpoint, tmp_path / "m.pth"))
    default = tmp_path / "m.onnx"
    argv = [str(CFG), str(ckpt), "--no-verify"]
    assert export.main(argv) == 0 and default.is_file()
    capsys.readouterr()
    default.write_bytes(b"an earlier export")
    assert export.main(argv) == 2
    assert capsys.readouterr().err == (f"error: {default} exists (an earlier export?); pass --overwrite to replace "
                                       "it, or name the output with --out PATH\n")
    assert default.read_bytes() == b"an earlier export"
    assert export.main([*argv, "--overwrite"]) == 0 and default.read_bytes() != b"an earlier export"
    # a named --out is the user's choice: written over, as every tool's named output (check_output_file)
    named = tmp_path / "named.onnx"
    named.write_bytes(b"old")
    assert export.main([*argv, "--out", str(named)]) == 0 and named.read_bytes() != b"old"


def test_export_openvino_default_refuses_a_left_over_bin_too(tmp_path: Path, checkpoint: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = Path(shutil.copy(checkpoint, tmp_path / "m.pth"))
    (tmp_path / "m.bin").write_bytes(b"weights of an earlier IR")
    assert load_tool("export").main([str(CFG), str(ckpt), "--format", "openvino", "--no-verify"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'm.bin'} exists (an earlier export?)")
