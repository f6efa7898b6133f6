"""Your own data by pointing at it: a Roboflow export trained and evaluated with ``--data`` as a user
runs it (tiny real model, 6 images, 1 epoch, CPU), class names right everywhere; and a config whose
dataset's classes do not match its model refused before the work dir exists."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detkit.config import load_config
from tests.fixtures.tools import load_tool

CONFIG = "tests/engine/configs/shapes_tiny.py"  # YOLOv4 at width 0.125 on 128 px shapes: CPU-sized
NAMES = ["red_box", "green_box", "blue_box"]
COLOURS = [(0, 0, 255), (0, 255, 0), (255, 0, 0)]  # BGR


def roboflow_export(root: Path, n_train: int = 4, n_val: int = 2, size: int = 96) -> Path:
    """A Roboflow-style YOLO export of coloured boxes: train/ and valid/ (images + labels) and a
    data.yaml with ``train: ../train/images`` and no ``path:``."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("valid", n_val)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
        for i in range(n):
            img = np.full((size, size, 3), 90, np.uint8)
            rows = []
            for _ in range(2):
                cls = int(rng.integers(len(NAMES)))
                w, h = (int(v) for v in rng.integers(20, 40, 2))
                x, y = (int(v) for v in rng.integers(0, size - 40, 2))
                cv2.rectangle(img, (x, y), (x + w, y + h), COLOURS[cls], -1)
                rows.append(f"{cls} {(x + w / 2) / size:.5f} {(y + h / 2) / size:.5f} {w / size:.5f} {h / size:.5f}")
            cv2.imwrite(str(root / split / "images" / f"img_{split}_{i}.jpg"), img)
            (root / split / "labels" / f"img_{split}_{i}.txt").write_text("\n".join(rows) + "\n")
    (root / "data.yaml").write_text(f"train: ../train/images\nval: ../valid/images\nnc: {len(NAMES)}\n"
                                    f"names: {NAMES}\n")
    return root / "data.yaml"


FAST = ["train.epochs=1", "train.eval_interval=1", "train.checkpoint.interval_iters=0", "data.train.batch_size=2",
        "schedule.lr.warmup_iters=1", "runtime.plot_interval=0"]


@pytest.mark.slow
def test_roboflow_export_trains_and_evaluates_with_its_classes(tmp_path, capsys, monkeypatch):
    data = roboflow_export(tmp_path / "rf")
    monkeypatch.chdir(Path(__file__).resolve().parents[2])  # the config's relative _base_ paths
    work = tmp_path / "run"
    rc = load_tool("train").main([CONFIG, "--data", str(data), "--img-size", "64", "--work-dir", str(work),
                                  "--no-progress", "--device", "cpu", "--cfg-options", *FAST])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"--data {data}: yolo, 3 classes (red_box, green_box, blue_box)" in out

    # the work dir's config is the adopted one: it reruns without --data
    dump = load_config(str(work / "config.py"))
    assert dump.data.class_names == NAMES and dump.model.head.num_classes == 3 and dump.data.img_size == 64
    assert dump.data.train.dataset.img_dir == str(tmp_path / "rf" / "train" / "images")
    assert [t.get("size") for t in dump.data.train.dataset.pipeline] == [64, None, 64]
    ckpt = torch.load(work / "last.pth", map_location="cpu", weights_only=False)
    assert "class_names=['red_box', 'green_box', 'blue_box']" in ckpt["config"].replace('"', "'").replace("\n", "")

    # test.py with --data: the per-class table names the data's classes
    rc = load_tool("test").main([CONFIG, str(work / "last.pth"), "--data", str(data), "--img-size", "64",
                                 "--device", "cpu", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0, out
    table = out[out.index("| class"):]
    assert all(name in table for name in NAMES) and "rectangle" not in table
    # and from the dumped config alone
    assert load_tool("test").main([str(work / "config.py"), str(work / "last.pth"), "--device", "cpu",
                                   "--no-progress"]) == 0
    assert "blue_box" in capsys.readouterr().out


def test_class_mismatch_is_refused_before_the_work_dir(tmp_path, capsys, monkeypatch):
    data = roboflow_export(tmp_path / "rf", n_train=1, n_val=1)
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    work = tmp_path / "run"
    train_dir = str(data.parent / "train" / "images")
    rc = load_tool("train").main([CONFIG, "--work-dir", str(work), "--device", "cpu", "--cfg-options", *FAST,
                                  f"data.train.dataset=YoloDataset(img_dir='{train_dir}', class_names={NAMES}, "
                                  "pipeline=[LetterBox(size=128)])"])
    err = capsys.readouterr().err
    assert rc == 2
    assert ("data.train.dataset (YoloDataset) has 3 classes but model.head.num_classes is 5, "
            "data.class_names has 5") in err
    assert not work.exists()


def test_img_size_option_is_checked_and_sets_every_transform(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    tool = load_tool("train")
    assert tool.main([CONFIG, "--img-size", "0", "--work-dir", str(tmp_path / "w")]) == 2
    assert "--img-size must be >= 1, got 0" in capsys.readouterr().err
    # a transform left at another size than data.img_size is refused, naming both
    assert tool.main([CONFIG, "--work-dir", str(tmp_path / "w"), "--cfg-options", "data.img_size=96"]) == 2
    err = capsys.readouterr().err
    assert "data.train.dataset.pipeline.0 (Mosaic) has size 128 but data.img_size is 96" in err
    assert err.rstrip().endswith("; or pass --img-size N to set every size")  # the flag, added by the tool
    assert not (tmp_path / "w").exists()


def test_test_with_data_evaluates_at_the_checkpoints_trained_size(tmp_path, capsys, monkeypatch):
    """``test CONFIG CKPT --data PATH`` without ``--img-size``: the size in the checkpoint's meta (a model
    trained at 64 px is not evaluated at the config's 128 px); ``--img-size`` still wins."""
    from detkit.config import instantiate

    data = roboflow_export(tmp_path / "rf", n_train=1, n_val=1)
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    model = instantiate(load_config(CONFIG, ["model.head.num_classes=3"]).model)
    ckpt = tmp_path / "ckpt.pth"
    torch.save({"model": model.state_dict(), "meta": {"class_names": NAMES, "num_classes": 3, "img_size": 64}}, ckpt)
    tool = load_tool("test")
    assert tool.main([CONFIG, str(ckpt), "--data", str(data), "--device", "cpu", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "--img-size 64: the size " in out and out.rstrip().count("img_size 64") == 1
    assert tool.main([CONFIG, str(ckpt), "--data", str(data), "--img-size", "96", "--device", "cpu",
                      "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "img_size 96" in out and "the size " not in out


def test_detkit_command_passes_data_through(tmp_path, capsys):
    from detkit.__main__ import main

    assert main(["compare", "--help"]) == 0
    assert "--data PATH" in capsys.readouterr().out
    assert main(["train", "yolov8n_tal.py", "--data", str(tmp_path / "missing.yaml")]) == 2
    assert f"--data {tmp_path / 'missing.yaml'}: no such file or folder" in capsys.readouterr().err


def test_compare_assigners_on_own_data(tmp_path, capsys, monkeypatch):
    data = roboflow_export(tmp_path / "rf", n_train=1, n_val=2)
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    out = tmp_path / "cmp"
    assert load_tool("compare_assigners").main([CONFIG, "--data", str(data), "--img-size", "64", "--images", "2",
                                                "--assigners", "atss", "iou", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "2 images, 4 GTs" in printed  # the export's val split (2 boxes an image), not the config's shapes
    assert {"assign_0.png", "assign_1.png"} <= {p.name for p in out.iterdir()}
