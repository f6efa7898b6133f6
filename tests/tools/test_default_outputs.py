"""Outputs the user did not name never replace an earlier run's: ``detkit infer`` without ``--out``
writes a new numbered folder per run (``work_dirs/infer``, ``infer2``, ...); a named ``--out``
holding files is refused unless ``--overwrite``. (Export: tests/deploy/test_export_default_out.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detkit.engine.output_paths import numbered_dir
from tests.fixtures.tools import load_tool
from tests.tools.test_user_data_safety import CFG, tiny_checkpoint, write_images

INFER = ["--score-thr", "0", "--img-size", "64", "--device", "cpu"]


def test_numbered_dir_is_the_first_free_name(tmp_path: Path) -> None:
    base = tmp_path / "work_dirs" / "infer"
    assert numbered_dir(base) == base and not base.exists()  # nothing is created
    base.mkdir(parents=True)
    assert numbered_dir(base) == base.with_name("infer2")
    (tmp_path / "work_dirs" / "infer2").write_text("a file takes the name too")
    (tmp_path / "work_dirs" / "infer4").mkdir()
    assert numbered_dir(base) == base.with_name("infer3")


def test_numbered_dir_create_skips_a_name_another_run_took(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs started together: both saw infer2 free, the other made it first; this one takes infer3."""
    import os

    base = tmp_path / "work_dirs" / "infer"
    assert numbered_dir(base, create=True) == base and base.is_dir()  # parents made too
    other = base.with_name("infer2")
    real_lexists = os.path.lexists

    def racing_lexists(path: object) -> bool:
        if Path(str(path)) == other and not other.exists():
            exists = real_lexists(path)
            other.mkdir()  # the other run makes it right after this one looked
            return exists
        return real_lexists(path)

    monkeypatch.setattr(os.path, "lexists", racing_lexists)
    assert numbered_dir(base, create=True) == base.with_name("infer3")
    assert other.is_dir() and not any(other.iterdir()) and base.with_name("infer3").is_dir()


def test_infer_without_out_writes_a_new_folder_per_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    write_images(tmp_path / "images", 1)
    ckpt = tiny_checkpoint(tmp_path / "m.pth")
    monkeypatch.chdir(tmp_path)
    infer = load_tool("infer")
    for folder in ("infer", "infer2", "infer3"):
        assert infer.main([CFG, str(ckpt), "images", *INFER]) == 0
        assert capsys.readouterr().out.rstrip().endswith(f"written to {Path('work_dirs') / folder}/")
    first = tmp_path / "work_dirs" / "infer"
    (first / "detections.json").write_text("[] kept")  # the first run's results: never touched again
    assert infer.main([CFG, str(ckpt), "images", *INFER]) == 0
    assert (first / "detections.json").read_text() == "[] kept"
    assert [r["file"] for r in json.loads((tmp_path / "work_dirs" / "infer4" / "detections.json").read_text())] \
        == ["im0.png"]


def test_a_named_out_holding_files_needs_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_images(tmp_path / "images", 1)
    ckpt = tiny_checkpoint(tmp_path / "m.pth")
    infer = load_tool("infer")
    out = tmp_path / "out"
    out.mkdir()  # an empty folder is fine
    assert infer.main([CFG, str(ckpt), str(tmp_path / "images"), "--out", str(out), *INFER]) == 0
    capsys.readouterr()
    (out / "detections.json").write_text("earlier")
    assert infer.main([CFG, str(ckpt), str(tmp_path / "images"), "--out", str(out), *INFER]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: --out {out}: holds files (an earlier run's?); pass --overwrite to write into it "
                   "(files of the same name are replaced), or name another --out\n")
    assert (out / "detections.json").read_text() == "earlier"
    assert infer.main([CFG, str(ckpt), str(tmp_path / "images"), "--out", str(out), "--overwrite", *INFER]) == 0
    assert json.loads((out / "detections.json").read_text())[0]["file"] == "im0.png"
