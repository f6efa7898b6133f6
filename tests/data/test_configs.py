"""The data configs load and build; browse_dataset draws the training pipeline's output."""

from __future__ import annotations

from pathlib import Path

import pytest

from detkit.config import instantiate, load_config
from detkit.data import ShapesDataset, collate
from tests.fixtures.tools import load_tool

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs" / "common" / "data"
SMALL = ["data.train.dataset.num_train=4", "data.train.dataset.num_val=2", "data.train.dataset.size=96",
         "data.val.dataset.num_train=4", "data.val.dataset.num_val=2", "data.val.dataset.size=96"]


@pytest.mark.parametrize("name", ["shapes", "coco", "coco128"])
def test_data_configs_load_with_the_contract_keys(name):
    cfg = load_config(CONFIGS / f"{name}.py")
    data = cfg.data
    assert {"train", "val", "num_classes", "class_names"} <= set(data)
    assert len(data.class_names) == data.num_classes
    for split in ("train", "val"):
        assert "dataset" in data[split] and data[split].batch_size >= 1


def test_shapes_config_builds_and_batches(tmp_path, monkeypatch):
    monkeypatch.setenv("DETKIT_SHAPES", str(tmp_path / "shapes"))
    cfg = load_config(CONFIGS / "shapes.py", SMALL)
    train, val = instantiate(cfg.data.train.dataset), instantiate(cfg.data.val.dataset)
    assert isinstance(val, ShapesDataset) and Path(val.ann_file).is_file()
    batch = collate([train[0], train[1]])
    assert tuple(batch["images"].shape) == (2, 3, 320, 320)  # the pipeline's size, whatever the images
    assert collate([val[0]])["images"].shape[-2:] == (320, 320)
    assert val.class_names == list(cfg.data.class_names)


def test_coco128_config_builds(coco128):
    cfg = load_config(CONFIGS / "coco128.py")
    train = instantiate(cfg.data.train.dataset)
    val = instantiate(cfg.data.val.dataset)
    assert len(train) == 128 and len(val) == 128 and Path(val.ann_file).is_file()
    s = train[0]
    assert s["img"].shape == (640, 640, 3) and len(s["boxes"]) == len(s["labels"])


def test_browse_dataset_writes_images(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DETKIT_SHAPES", str(tmp_path / "shapes"))
    tool = load_tool("browse_dataset")
    out = tmp_path / "out"
    assert tool.main([str(CONFIGS / "shapes.py"), "--num", "2", "--out", str(out), "--cfg-options", *SMALL]) == 0
    assert len(list(out.glob("*.jpg"))) == 2
    assert "boxes" in capsys.readouterr().out
    assert tool.main([str(CONFIGS / "shapes.py"), "--split", "test", "--cfg-options", *SMALL]) == 2
