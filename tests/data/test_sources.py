"""--data: a dataset found from one path (data.yaml, YOLO root, COCO json, VOC root), a config's data
section rebuilt for it, and the start-up checks of one image size and one class count."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from detkit.cli import cli_message
from detkit.config import ConfigError, L, format_config, instantiate, load_config
from detkit.data import LetterBox, Mosaic, RandomAffine, YoloDataset
from detkit.data.adopt import adopt_dataset, check_data_config, check_dataset_classes, set_img_size
from detkit.data.sources import resolve_source, resolve_yaml_entry
from detkit.errors import DataError
from tests.data.conftest import write_image

NAMES = ["person", "car", "dog"]


def roboflow_export(root: Path, names=NAMES, yaml_text: str | None = None) -> Path:
    """A Roboflow YOLO export: train/ and valid/ with images/ + labels/, data.yaml with ``../`` paths."""
    for split, n in (("train", 3), ("valid", 2)):
        for i in range(n):
            write_image(root / split / "images" / f"{split}{i}.jpg")
            (root / split / "labels").mkdir(parents=True, exist_ok=True)
            (root / split / "labels" / f"{split}{i}.txt").write_text(f"{i % len(names)} 0.5 0.5 0.25 0.25\n")
    text = yaml_text or (f"train: ../train/images\nval: ../valid/images\nnc: {len(names)}\nnames: {names}\n")
    (root / "data.yaml").write_text(text)
    return root / "data.yaml"


# ----- finding the data -------------------------------------------------------------------------


def test_roboflow_yaml_dot_dot_paths_resolve_inside_the_export(tmp_path):
    data = roboflow_export(tmp_path / "rf")
    src = resolve_source(data)
    assert src.fmt == "yolo" and src.class_names == tuple(NAMES)
    assert src.splits["train"].kwargs["img_dir"] == str(tmp_path / "rf" / "train" / "images")
    assert src.splits["val"].kwargs["img_dir"] == str(tmp_path / "rf" / "valid" / "images")
    assert resolve_source(tmp_path / "rf").splits == src.splits  # the export's folder finds its data.yaml


def test_roboflow_yaml_given_by_a_relative_path(tmp_path, monkeypatch):
    """`--data rf/data.yaml` from the folder holding the export (a relative path, as users type it)."""
    roboflow_export(tmp_path / "rf")
    monkeypatch.chdir(tmp_path)
    src = resolve_source("rf/data.yaml")
    assert src.splits["train"].kwargs["img_dir"] == os.path.join("rf", "train", "images")
    assert src.splits["val"].kwargs["img_dir"] == os.path.join("rf", "valid", "images")
    (tmp_path / "rf" / "data.yaml").write_text("path: .\ntrain: train/images\nval: valid/images\nnames: [a, b, c]\n")
    assert resolve_source("rf/data.yaml").splits["train"].kwargs["img_dir"] == os.path.join("rf", "train", "images")


def test_yaml_entry_rule_prefers_the_path_that_exists(tmp_path):
    (tmp_path / "root" / "train").mkdir(parents=True)
    (tmp_path / "train").mkdir()
    # ../train exists relative to the root: taken as written (Ultralytics' order)
    assert resolve_yaml_entry(tmp_path / "root", "../train") == tmp_path / "train"
    (tmp_path / "train").rmdir()
    assert resolve_yaml_entry(tmp_path / "root", "../train") == tmp_path / "root" / "train"


def test_yaml_path_key_relative_to_the_yaml_and_names_as_dict(tmp_path):
    root = tmp_path / "sets" / "mine"
    for split in ("train2017", "val2017"):
        write_image(root / "images" / split / "1.jpg")
        (root / "labels" / split).mkdir(parents=True)
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "mine.yaml").write_text(
        "path: ../sets/mine\ntrain: images/train2017\nval: images/val2017\nnames:\n  1: b\n  0: a\n")
    src = resolve_source(tmp_path / "cfg" / "mine.yaml")
    assert src.class_names == ("a", "b")
    assert src.splits["val"].kwargs["img_dir"] == str(root / "images" / "val2017")


@pytest.mark.parametrize("text, message", [
    ("train: ../train/images\nval: ../valid/images\nnc: 4\nnames: [a, b, c]\n", "nc is 4 but names has 3 entries"),
    ("train: ../train/images\nval: ../valid/images\n", "no 'names'"),
    ("train: nowhere/images\nnames: [a]\n", "train: image folder not found"),
    ("train: [../train/images, nowhere/images]\nnames: [a]\n", "train: image folder not found: .*nowhere"),
    ("train: lists/train.txt\nnames: [a]\n", "train: image list not found"),
])
def test_bad_yaml_is_one_line_naming_the_file(tmp_path, text, message):
    data = roboflow_export(tmp_path / "rf", yaml_text=text)
    with pytest.raises(ValueError, match=message) as e:
        resolve_source(data)
    assert str(e.value).startswith(str(data)) and "\n" not in str(e.value)


def test_yaml_split_as_txt_list_and_list_of_folders(tmp_path):
    data = roboflow_export(tmp_path / "rf", yaml_text=(
        "train: [../train/images, valid/images]\nval: lists/val.txt\nnames: [person, car, dog]\n"))
    (tmp_path / "rf" / "lists").mkdir()
    (tmp_path / "rf" / "lists" / "val.txt").write_text("../valid/images/valid1.jpg\n\n../train/images/train0.jpg\n")
    src = resolve_source(data)
    assert src.splits["train"].kwargs["img_dir"] == [str(tmp_path / "rf" / "train" / "images"),
                                                     str(tmp_path / "rf" / "valid" / "images")]
    train = instantiate(src.dataset("train"))
    assert len(train) == 5 and [r["image_id"] for r in train.records] == [0, 1, 2, 3, 4]
    val = instantiate(src.dataset("val"))
    # the list's order, labels by the images -> labels rule (valid1 has class 1, train0 class 0)
    assert [os.path.basename(r["img_path"]) for r in val.records] == ["valid1.jpg", "train0.jpg"]
    assert [r["labels"].tolist() for r in val.records] == [[1], [0]]


def test_same_stem_in_two_folders_keeps_both_images(tmp_path):
    for folder in ("a", "b"):
        write_image(tmp_path / folder / "images" / "1.jpg")
        (tmp_path / folder / "labels").mkdir(parents=True)
        (tmp_path / folder / "labels" / "1.txt").write_text(f"{'ab'.index(folder)} 0.5 0.5 0.2 0.2\n")
    ds = YoloDataset([str(tmp_path / "a" / "images"), str(tmp_path / "b" / "images")], ["x", "y"])
    assert [r["labels"].tolist() for r in ds.records] == [[0], [1]]
    assert len({r["image_id"] for r in ds.records}) == 2 and not ds.problems.counts


def test_yolo_root_with_names_txt(tmp_path):
    for split in ("train", "valid"):
        write_image(tmp_path / "images" / split / "a.jpg")
        (tmp_path / "labels" / split).mkdir(parents=True)
    (tmp_path / "names.txt").write_text("cat\ndog\n")
    src = resolve_source(tmp_path)
    assert src.class_names == ("cat", "dog")
    assert src.splits["val"].kwargs["img_dir"] == str(tmp_path / "images" / "valid")


def coco_json(path: Path, file_name: str, cats=((3, "b"), (1, "a"))) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "images": [{"id": 1, "file_name": file_name, "width": 64, "height": 48}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 20], "iscrowd": 0}],
        "categories": [{"id": i, "name": n} for i, n in cats]}))


def test_coco_json_finds_val_json_and_images_by_the_standard_layout(tmp_path):
    for split in ("train2017", "val2017"):
        coco_json(tmp_path / "annotations" / f"instances_{split}.json", "x.jpg")
        write_image(tmp_path / split / "x.jpg")
    src = resolve_source(tmp_path / "annotations" / "instances_train2017.json")
    assert src.class_names == ("a", "b")  # sorted category id
    assert src.splits["val"].kwargs == {"ann_file": str(tmp_path / "annotations" / "instances_val2017.json"),
                                        "img_dir": str(tmp_path / "val2017")}
    assert resolve_source(tmp_path).splits == src.splits  # a COCO root


def test_roboflow_coco_export_images_beside_the_json(tmp_path):
    for split in ("train", "valid"):
        coco_json(tmp_path / split / "_annotations.coco.json", "x.jpg")
        write_image(tmp_path / split / "x.jpg")
    src = resolve_source(tmp_path / "train" / "_annotations.coco.json")
    assert src.splits["val"].kwargs == {"ann_file": str(tmp_path / "valid" / "_annotations.coco.json"),
                                        "img_dir": str(tmp_path / "valid")}


def test_coco_json_without_images_asks_for_img_dir(tmp_path):
    coco_json(tmp_path / "a" / "train.json", "x.jpg")
    coco_json(tmp_path / "a" / "val.json", "x.jpg")
    with pytest.raises(DataError, match=r"train.json: image folder not found \(tried .*\); pass img_dir$") as e:
        resolve_source(tmp_path / "a" / "train.json")
    assert cli_message(e.value).endswith("); pass --img-dir DIR")  # the argument that fixes it, as a tool prints it
    write_image(tmp_path / "pics" / "x.jpg")
    write_image(tmp_path / "a" / "x.jpg")  # the val json finds its images beside it
    src = resolve_source(tmp_path / "a" / "train.json", img_dir=str(tmp_path / "pics"))
    assert src.splits["train"].kwargs["img_dir"] == str(tmp_path / "pics")


def test_coco_json_without_val_evaluates_train_with_a_warning(tmp_path, caplog):
    coco_json(tmp_path / "mine.json", "x.jpg")
    write_image(tmp_path / "x.jpg")
    with caplog.at_level("WARNING", logger="detkit"):
        src = resolve_source(tmp_path / "mine.json")
    assert src.splits["val"] == src.splits["train"] and "test" not in src.splits
    assert "no val json found beside it" in caplog.text and "evaluates the training images" in caplog.text


def test_coco_splits_with_different_categories_are_refused(tmp_path):
    coco_json(tmp_path / "train" / "_annotations.coco.json", "x.jpg")
    coco_json(tmp_path / "valid" / "_annotations.coco.json", "x.jpg", cats=((1, "a"),))
    for split in ("train", "valid"):
        write_image(tmp_path / split / "x.jpg")
    with pytest.raises(ValueError, match="categories .* differ"):
        resolve_source(tmp_path / "train" / "_annotations.coco.json")


def voc_root(root: Path, objects=("zebra", "apple")) -> Path:
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for i, name in enumerate(objects):
        write_image(root / "JPEGImages" / f"{i}.jpg")
        (root / "Annotations" / f"{i}.xml").write_text(
            f"<annotation><filename>{i}.jpg</filename><size><width>64</width><height>48</height></size>"
            f"<object><name>{name}</name><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>30</xmax><ymax>30</ymax>"
            "</bndbox></object></annotation>")
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("0\n")
    (root / "ImageSets" / "Main" / "test.txt").write_text("1\n")
    return root


def test_voc_root_own_classes_sorted_and_trainval_test_splits(tmp_path):
    src = resolve_source(voc_root(tmp_path / "VOCdevkit" / "VOC2007").parent)  # the VOCdevkit finds its VOC2007
    assert src.fmt == "voc" and src.class_names == ("apple", "zebra")
    assert src.splits["train"].kwargs["split"] == "trainval" and src.splits["val"].kwargs["split"] == "test"
    assert resolve_source(voc_root(tmp_path / "std", ("dog", "cat"))).class_names[:3] == ("aeroplane", "bicycle",
                                                                                           "bird")


def test_check_dataset_reads_a_voc_root_with_the_classes_data_would_train_on(tmp_path):
    """``detkit check`` and ``--data`` agree on a VOC root's classes: its own objects' names (sorted) are no
    'unknown class name' problem, and ``--names`` / ``names.txt`` win as they do for ``--data``."""
    from detkit.data.checks import check_dataset

    root = voc_root(tmp_path / "voc")
    problems, found = check_dataset(str(root))
    assert problems.total == 0 and [list(ds.class_names) for _, ds in found] == [["apple", "zebra"]]
    assert sum(len(r["boxes"]) for _, ds in found for r in ds.records) == 2
    (root / "names.txt").write_text("zebra\napple\nkiwi\n")
    _, found = check_dataset(str(root))
    assert tuple(found[0][1].class_names) == resolve_source(root).class_names == ("zebra", "apple", "kiwi")


def test_check_dataset_takes_the_folder_holding_data_yaml_as_data_does(tmp_path):
    """``detkit check mydata/`` reads ``mydata/data.yaml`` like ``--data mydata/`` (it said "no 'images' folder
    in the path")."""
    from detkit.data.checks import check_dataset

    data = roboflow_export(tmp_path / "rf")
    problems, found = check_dataset(str(data.parent))
    assert problems.total == 0 and [name for name, _ in found] == ["train", "val"]
    assert [len(ds) for _, ds in found] == [3, 2] and list(found[0][1].class_names) == NAMES


def test_unknown_layout_and_missing_path(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        resolve_source(tmp_path / "nope")
    with pytest.raises(ValueError, match="no dataset layout found"):
        resolve_source(tmp_path)


# ----- adopting it ------------------------------------------------------------------------------


def test_adopt_rebuilds_data_keeps_pipelines_sets_classes_and_size(tmp_path):
    cfg = load_config("yolov8n_tal.py")
    adopt_dataset(cfg, roboflow_export(tmp_path / "rf"), img_size=320)
    train, val = cfg.data.train.dataset, cfg.data.val.dataset
    assert train._target_ is YoloDataset and train.img_dir == str(tmp_path / "rf" / "train" / "images")
    assert [t._target_.__name__ for t in train.pipeline] == ["Mosaic", "RandomAffine", "RandomHSV", "RandomFlip"]
    assert [t.size for t in train.pipeline[:2]] == [320, 320] and val.pipeline[0].size == 320
    assert cfg.data.img_size == 320 and cfg.data.num_classes == 3 and cfg.data.class_names == NAMES
    assert cfg.model.head.num_classes == 3 and train.class_names == NAMES
    assert cfg.data.train.batch_size == 16  # the config's loader settings are kept
    check_data_config(cfg)
    # the dump loads back to the same config (the work dir's config.py reruns without --data)
    (tmp_path / "dump.py").write_text(format_config(cfg))
    again = load_config(str(tmp_path / "dump.py"))
    assert format_config(again) == format_config(cfg)


def test_adopt_without_img_size_keeps_the_configs(tmp_path):
    cfg = adopt_dataset(load_config("shapes_yolov8_tal.py"), roboflow_export(tmp_path / "rf"))
    assert cfg.data.img_size == 320 and cfg.data.train.dataset.pipeline[0].size == 320
    assert "test" not in cfg.data


def test_set_img_size_sets_every_transform_and_mosaic_default(tmp_path):
    cfg = load_config("yolov8n_tal.py")
    cfg.data.train.dataset.pipeline[0] = L(Mosaic)(p=1.0)  # size left at Mosaic's default 640
    set_img_size(cfg, 256)
    assert [t.get("size") for t in cfg.data.train.dataset.pipeline] == [256, 256, None, None]
    assert cfg.data.val.dataset.pipeline[0].size == 256 and cfg.data.img_size == 256


# ----- start-up checks --------------------------------------------------------------------------


def test_transform_size_differing_from_img_size_names_key_and_sizes():
    cfg = load_config("yolov8n_tal.py", ["data.img_size=320"])
    with pytest.raises(ConfigError, match=r"data\.train\.dataset\.pipeline\.0 \(Mosaic\) has size 640 but "
                                          r"data\.img_size is 320"):
        check_data_config(cfg)
    cfg = load_config("yolov8n_tal.py", ["data.img_size=320", "data.train.dataset.pipeline.0.size=320",
                                         "data.train.dataset.pipeline.1.size=[320, 256]"])
    with pytest.raises(ConfigError, match=r"pipeline\.1 \(RandomAffine\) has size \[320, 256\]"):
        check_data_config(cfg)


def test_replacing_the_dataset_without_a_pipeline_is_an_error_not_native_size(tmp_path):
    rf = roboflow_export(tmp_path / "rf")
    cfg = load_config("shapes_yolov8_tal.py", [
        f"data.train.dataset=YoloDataset(img_dir='{rf.parent / 'train' / 'images'}', class_names={NAMES})",
        "model.head.num_classes=3", "data.num_classes=3", f"data.class_names={NAMES}"])
    with pytest.raises(ConfigError, match=r"data\.train\.dataset \(YoloDataset\) has no pipeline transform giving "
                                          r"data\.img_size=320 inputs"):
        check_data_config(cfg)
    cfg.data.train.dataset.pipeline = [L(LetterBox)(size=320)]
    with pytest.raises(ConfigError, match=r"data\.val\.dataset \(ShapesDataset\) has 5 classes"):
        check_data_config(cfg)  # the size is right now; the config's val set is still the shapes'
    del cfg.data.val
    check_data_config(cfg)


def test_class_count_mismatch_names_the_keys_and_counts(tmp_path):
    rf = roboflow_export(tmp_path / "rf")
    cfg = load_config("yolov8n_tal.py", [
        f"data.train.dataset.img_dir='{rf.parent / 'train' / 'images'}'", "data.img_size=640"])
    cfg.data.train.dataset = L(YoloDataset)(img_dir=str(rf.parent / "train" / "images"), class_names=NAMES,
                                           pipeline=[L(Mosaic)(size=640), L(RandomAffine)(size=640)])
    with pytest.raises(ConfigError) as e:
        check_data_config(cfg)
    msg = str(e.value)
    assert "data.train.dataset (YoloDataset) has 3 classes but model.head.num_classes is 80" in msg
    assert "data.num_classes is 80, data.class_names has 80" in msg and msg.endswith(
        "; set them to the data's; or give adopt_dataset(cfg, PATH) to take the classes from the data")
    assert cli_message(e.value).endswith("; or give --data PATH to take the classes from the data")  # a tool's
    built = YoloDataset(str(rf.parent / "train" / "images"), NAMES)  # a built dataset: the same check
    with pytest.raises(ConfigError, match="has 3 classes but model.head.num_classes is 80"):
        check_dataset_classes(cfg, "train", built)


def test_the_rebuilt_data_section_is_checked_as_a_loaded_config_is(tmp_path):
    """apply_data_arguments re-runs load_config's value checks on the config it rebuilt (a config edited
    in Python after loading, as in a notebook, is not checked by load_config)."""
    import argparse

    from detkit.data.adopt import apply_data_arguments

    data = roboflow_export(tmp_path / "rf")
    cfg = load_config("configs/shapes_yolov8_tal.py")
    cfg.data.train.batch_size = "8"
    with pytest.raises(ConfigError, match=r"shapes_yolov8_tal\.py with --data .*: data\.train\.batch_size: "
                                          r"expected int or None, got '8' \(str\)"):
        apply_data_arguments(cfg, argparse.Namespace(data=str(data), img_dir=None, img_size=None), quiet=True)
