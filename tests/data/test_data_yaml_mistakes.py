"""A newcomer's data.yaml mistakes: ``detkit check`` and ``--data`` (resolve_source) refuse them alike, in
one line naming the file, exit status 2 (before: check passed nc != len(names), said "invalid literal for
int() with base 10: 'train'" for a yaml without names, and printed a YAML syntax error over several lines)."""

from __future__ import annotations

from pathlib import Path

import pytest

from detkit.data.sources import resolve_source
from detkit.errors import DataError
from tests.fixtures.tools import load_tool

GOOD = "train: ../train/images\nval: ../train/images\nnc: 2\nnames: ['cat', 'dog']\n"


def export(tmp_path: Path, write_img, yaml_text: str) -> Path:
    """A Roboflow-style export: data.yaml beside train/images (one image, one box) and train/labels."""
    write_img(tmp_path / "train" / "images" / "a.jpg")
    (tmp_path / "train" / "labels").mkdir(parents=True)
    (tmp_path / "train" / "labels" / "a.txt").write_text("1 0.5 0.5 0.2 0.2\n")
    (tmp_path / "data.yaml").write_text(yaml_text)
    return tmp_path / "data.yaml"


@pytest.mark.parametrize(("yaml_text", "message"), [
    (GOOD.replace("nc: 2", "nc: 3"), "data.yaml: nc is 3 but names has 2 entries"),
    (GOOD.replace("names: ['cat', 'dog']\n", ""), "data.yaml: no 'names' (the class names, a list or {id: name} dict)"),
    (GOOD.replace("['cat', 'dog']", "[]"), "data.yaml: names is empty"),
    (GOOD.replace("['cat', 'dog']", "['cat', 'dog'"),
     "data.yaml: not valid YAML: while parsing a flow sequence (line 4, column 8): "
     "expected ',' or ']', but got '<stream end>' (line 5, column 1)"),
])
def test_check_and_data_refuse_alike_in_one_line(tmp_path, write_img, capsys, yaml_text, message):
    path = export(tmp_path, write_img, yaml_text)
    assert load_tool("check_dataset").main([str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {path.parent / message}"]
    with pytest.raises(DataError) as raised:
        resolve_source(str(path))
    assert str(raised.value) == str(path.parent / message)


def test_dict_names_agreeing_with_nc_check_clean(tmp_path, write_img, capsys):
    path = export(tmp_path, write_img, GOOD.replace("['cat', 'dog']", "{0: cat, 1: dog}"))
    assert load_tool("check_dataset").main([str(path)]) == 0
    assert "1 usable images, 1 boxes" in capsys.readouterr().out
    assert resolve_source(str(path)).class_names == ("cat", "dog")


def test_missing_labels_folder_of_an_export_says_what_to_put_there(tmp_path, write_img, capsys):
    """A data.yaml user cannot pass label_dir: the one line says what the folder must hold (before: "pass
    label_dir, or create that folder ...")."""
    path = export(tmp_path, write_img, GOOD.replace("val: ../train/images", "val: ../valid/images"))
    write_img(tmp_path / "valid" / "images" / "b.jpg")
    assert load_tool("check_dataset").main([str(path)]) == 1
    out = capsys.readouterr().out
    assert (f"{tmp_path / 'valid' / 'images'}: labels folder not found: {tmp_path / 'valid' / 'labels'} (every image "
            "would be background); put each image's <name>.txt there, or create that folder, empty, if these images "
            "are background on purpose (a config's YoloDataset may name another folder: label_dir)\n") in out
