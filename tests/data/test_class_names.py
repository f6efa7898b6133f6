"""check_class_names: a checkpoint's classes against the data's, label by label (issue 24, item 2)."""

from __future__ import annotations

import json

import pytest

from detkit.cli import run_cli
from detkit.config import ConfigError
from detkit.data import CocoDataset
from detkit.data.classes import check_class_names, class_name_mismatches


def test_equal_names_pass_and_unknown_names_skip():
    check_class_names(["cat", "dog"], ["cat", "dog"], "m.pth")
    check_class_names(["cat", " dog\n"], ("cat", "dog"), "m.pth")  # whitespace from a names file
    check_class_names(None, ["cat"], "m.pth")  # a checkpoint without stored names
    check_class_names(["cat"], None, "m.pth")


def test_swapped_names_are_refused_in_one_line():
    with pytest.raises(ConfigError) as info:
        check_class_names(["cat", "dog", "cow"], ["dog", "cat", "cow"], "best.pth on data.val")
    assert str(info.value) == (
        "best.pth on data.val: the checkpoint's classes are not the data's, label by label: the same names in "
        "another order (every box would carry another class's name); checkpoint vs data: 0: 'cat' vs 'dog', "
        "1: 'dog' vs 'cat'"
    )


def test_other_names_and_other_counts_list_the_first_mismatches():
    with pytest.raises(ConfigError, match=r"^m\.pth: .*: 4 of 5 names differ; checkpoint vs data: "
                                          r"1: 'b' vs 'B', 2: 'c' vs 'x', 3: 'd' vs 'y' and 1 more$"):
        check_class_names(list("abcde"), ["a", "B", "x", "y", "z"], "m.pth")
    with pytest.raises(ConfigError, match=r"2 classes in the checkpoint, 3 in the data; checkpoint vs data: "
                                          r"2: '\(none\)' vs 'c'$"):
        check_class_names(["a", "b"], ["a", "b", "c"], "m.pth")
    assert class_name_mismatches(["a", "b", "c"], ["a"]) == [(1, "b", "(none)"), (2, "c", "(none)")]


def test_refusal_is_exit_2_with_one_line(capsys):
    assert run_cli(lambda: check_class_names(["a"], ["b"], "m.pth")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: m.pth: ") and err.count("\n") == 1


def test_coco_categories_sorted_by_id_are_compared_in_that_order(tmp_path, write_img):
    # ids 3 ('dog') and 1 ('cat'): labels follow sorted ids, so label 0 is 'cat' whatever the json's order.
    write_img(tmp_path / "1.jpg")
    data = {"images": [{"id": 1, "file_name": "1.jpg", "width": 64, "height": 48}],
            "categories": [{"id": 3, "name": "dog"}, {"id": 1, "name": "cat"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 1, 10, 10], "iscrowd": 0}]}
    (tmp_path / "a.json").write_text(json.dumps(data))
    ds = CocoDataset(str(tmp_path / "a.json"), str(tmp_path))
    check_class_names(["cat", "dog"], ds.class_names, "m.pth")
    with pytest.raises(ConfigError, match="the same names in another order"):
        check_class_names(["dog", "cat"], ds.class_names, "m.pth")
