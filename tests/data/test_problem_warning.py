"""The load-time warning of a dataset's skipped inputs names the first file, not only the folder."""

from __future__ import annotations

import logging

from detkit.data import YoloDataset
from detkit.data.problems import ProblemLog


def test_warning_names_the_first_file_with_a_problem(tmp_path, write_img, caplog):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for stem, text in (("a", "0 0.5 0.5 0.2 0.2\n"), ("b", "0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n")):
        write_img(tmp_path / "images" / f"{stem}.jpg", 100, 100)
        (tmp_path / "labels" / f"{stem}.txt").write_text(text)
    with caplog.at_level(logging.WARNING, logger="detkit.data"):
        YoloDataset(str(tmp_path / "images"), ["a", "b"])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    label = tmp_path / "labels" / "b.txt"
    assert warnings == [f"1 problem(s) in {tmp_path / 'images'}: 1 x class id out of range 0..1; "
                        f"first: {label} (class id out of range 0..1); 'detkit check' lists each one"]


def test_warning_without_a_recorded_path_is_the_summary_alone(caplog):
    log = ProblemLog("data.yaml")
    log.add("duplicate image id")
    with caplog.at_level(logging.WARNING, logger="detkit.data"):
        log.log_summary()
    assert [r.getMessage() for r in caplog.records] == ["1 problem(s) in data.yaml: 1 x duplicate image id"]
