"""Nothing a user owns is lost or silently wrong (issue 19), through the tools as a user runs them:
one run per work dir, an earlier run refused without --resume / --overwrite, checkpoints of another
model refused by test/infer, output paths checked before the work, the shapes set never rebuilt over
a user's files, inference skipping unreadable files with counts, check_dataset's exit status and
COCO value types; check_dataset's dataset layouts (issue 17.5); every tool's mistakes as one-line
errors (issue 17.3)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detkit.engine.checkpoint import atomic_save, load_checkpoint
from tests.engine.standins import TinyDetector
from tests.fixtures.tools import load_tool

ROOT = Path(__file__).resolve().parents[2]
CFG = str(ROOT / "tests" / "engine" / "configs" / "tiny.py")
FAST = ["train.multi_scale=None", "train.checkpoint.interval_iters=0"]


def tiny_checkpoint(path: Path, num_classes: int = 2) -> Path:
    torch.manual_seed(0)
    atomic_save({"model": TinyDetector(num_classes=num_classes).state_dict()}, path)
    return path


def write_images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        paths.append(folder / f"im{i}.png")
        cv2.imwrite(str(paths[-1]), rng.integers(0, 255, (48, 80, 3), dtype=np.uint8))
    return paths


# ----------------------------------------------------------------------------------------------
# 1-2: one run per work dir; an earlier run is refused without --resume / --overwrite
# ----------------------------------------------------------------------------------------------


def test_a_second_run_in_a_work_dir_in_use_is_refused_and_a_killed_runs_lock_is_taken_over(tmp_path, capsys):
    work = tmp_path / "work"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    first = subprocess.Popen([sys.executable, str(ROOT / "tools" / "train.py"), CFG, "--work-dir", str(work),
                              "--cfg-options", "train.epochs=100000", "train.eval_interval=0", *FAST],
                             cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not ((work / "train.log").is_file() and "work dir" in (work / "train.log").read_text()):
            assert first.poll() is None and time.monotonic() < deadline, "the first run did not start"
            time.sleep(0.2)
        log_before = (work / "train.log").read_text()
        assert load_tool("train").main([CFG, "--work-dir", str(work), "--cfg-options", "train.epochs=1", *FAST]) == 2
        err = capsys.readouterr().err
        assert f"error: work dir {work} is in use by process {first.pid} on " in err and err.count("\n") == 1
        assert (work / "train.log").read_text().startswith(log_before)  # nothing of the refused run in its log
    finally:
        first.send_signal(signal.SIGKILL)  # a run killed -9 leaves its lock behind
        first.wait()
    assert json.loads((work / "run.lock").read_text())["pid"] == first.pid
    assert load_tool("train").main([CFG, "--work-dir", str(work), "--resume",
                                    "--cfg-options", "train.epochs=1", *FAST]) == 0
    assert f"took over a stale lock of process {first.pid}" in (work / "train.log").read_text()
    assert not (work / "run.lock").exists()  # released when the run ended


def test_an_earlier_run_is_refused_untouched_and_overwrite_clears_it_first(tmp_path, capsys):
    work = tmp_path / "work"
    train = load_tool("train")
    assert train.main([CFG, "--work-dir", str(work), "--cfg-options", "train.epochs=2", *FAST]) == 0
    before = {n: (work / n).read_bytes() for n in ("best.pth", "epoch_2.pth", "metrics.csv", "last_checkpoint")}
    capsys.readouterr()

    assert train.main([CFG, "--work-dir", str(work), "--seed", "9", "--cfg-options", "train.epochs=1", *FAST]) == 2
    err = capsys.readouterr().err
    assert all(s in err for s in (f"work dir {work} holds an earlier run", "--resume", "--work-dir", "--overwrite"))
    assert {n: (work / n).read_bytes() for n in before} == before

    assert train.main([CFG, "--work-dir", str(work), "--overwrite", "--seed", "9",
                       "--cfg-options", "train.epochs=1", *FAST]) == 0
    assert not (work / "epoch_2.pth").exists()  # a stale checkpoint --resume could have picked up
    assert (work / "last_checkpoint").read_text().strip() == "epoch_1.pth"
    assert len((work / "metrics.csv").read_text().splitlines()) == 2  # header + this run's epoch
    log = (work / "train.log").read_text()
    assert "--overwrite: deleted" in log and log.count("work dir ") == 1  # the old run's log went with it
    assert train.main([CFG, "--work-dir", str(work), "--resume", "--cfg-options", "train.epochs=2", *FAST]) == 0
    assert load_checkpoint(work / "epoch_2.pth")["epoch"] == 2


# ----------------------------------------------------------------------------------------------
# 3-4: checkpoints of another model, output paths, --pr-curve without detections
# ----------------------------------------------------------------------------------------------


def test_test_and_infer_refuse_a_checkpoint_for_another_class_count(tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / "three_classes.pth", num_classes=3)  # the config has 2
    assert load_tool("test").main([CFG, str(ckpt), "--device", "cpu", "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert "Average Precision" not in captured.out
    assert f"error: {ckpt} does not fit the model: 2 tensor(s) of another shape (head.out.bias: checkpoint (7,) " \
           "vs model (6,), head.out.weight: checkpoint (7, 8, 1, 1) vs model (6, 8, 1, 1))" in captured.err
    images = write_images(tmp_path / "images", 1)
    out = tmp_path / "infer"
    assert load_tool("infer").main([CFG, str(ckpt), str(images[0]), "--out", str(out), "--device", "cpu"]) == 2
    assert "does not fit the model" in capsys.readouterr().err and not (out / "detections.json").exists()


def test_output_paths_are_checked_before_any_work(tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "results.txt"
    a_file.write_text("mine")
    ckpt = tiny_checkpoint(tmp_path / "model.pth")
    import detkit.engine.inference as inference

    def no_work(*args, **kwargs):
        raise AssertionError("the evaluation ran before the output paths were checked")

    monkeypatch.setattr(inference, "evaluate_dataset", no_work)
    cases = [
        ("train", [CFG, "--work-dir", str(a_file / "work")], f"--work-dir {a_file / 'work'}: {a_file} is a file"),
        ("test", [CFG, str(ckpt), "--out", str(a_file / "r.json")], f"--out {a_file / 'r.json'}: {a_file} is a file"),
        ("test", [CFG, str(ckpt), "--pr-curve", str(tmp_path)], f"--pr-curve {tmp_path}: is a folder"),
        ("infer", [CFG, str(ckpt), str(tmp_path), "--out", str(a_file)], f"--out {a_file}: is a file, not a folder"),
    ]
    for name, argv, message in cases:
        assert load_tool(name).main(argv + ["--device", "cpu"]) == 2, name
        assert f"error: {message}" in capsys.readouterr().err, name
    assert a_file.read_text() == "mine"


def test_pr_curve_without_detections_says_so(tmp_path, capsys, monkeypatch):
    def nothing(self, batch):
        return [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}
                for _ in range(len(batch["images"]))]

    monkeypatch.setattr(TinyDetector, "predict", nothing)
    png = tmp_path / "pr.png"
    assert load_tool("test").main([CFG, str(tiny_checkpoint(tmp_path / "m.pth")), "--pr-curve", str(png),
                                   "--device", "cpu", "--no-progress"]) == 0
    assert f"--pr-curve {png} not written: the model made no detections" in capsys.readouterr().err
    assert not png.exists()


# ----------------------------------------------------------------------------------------------
# 5: the shapes set is never rebuilt over a user's files
# ----------------------------------------------------------------------------------------------


def test_a_users_shapes_set_is_used_as_it_is_and_their_files_are_never_written_over(tmp_path, monkeypatch, caplog):
    from detkit.config import load_config
    from detkit.data.shapes import ShapesDataset
    from detkit.engine.trainer import build_dataset

    mine = tmp_path / "mine"
    assert load_tool("make_shapes").main([str(mine), "--train", "4", "--val", "2", "--size", "64", "--seed", "1"]) == 0
    ann = mine / "annotations" / "instances_train.json"
    stamp = ann.stat().st_mtime_ns
    monkeypatch.setenv("DETKIT_SHAPES", str(mine))
    cfg = load_config(str(ROOT / "configs" / "shapes_atss.py"))  # asks for 1000 / 200 images of 320 px
    with caplog.at_level("WARNING", logger="detkit.data"):
        train_set = build_dataset(cfg, "train")
    assert len(train_set) == 4 and ann.stat().st_mtime_ns == stamp
    assert len(list((mine / "train").iterdir())) == 4
    assert f"using the set in {mine} as it is: 4 train / 2 val images of 64 px, seed 1" in caplog.text

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("my notes")
    with pytest.raises(ValueError, match=f"{theirs} is not empty .*notes.txt.*missing or empty folder"):
        ShapesDataset(str(theirs), "train", num_train=2, num_val=1, size=64)
    assert load_tool("make_shapes").main([str(theirs), "--train", "2", "--val", "1", "--size", "64"]) == 2
    assert load_tool("make_shapes").main([str(mine), "--train", "2", "--val", "1", "--size", "64"]) == 2
    assert sorted(p.name for p in theirs.iterdir()) == ["notes.txt"] and ann.stat().st_mtime_ns == stamp

    from detkit.data.shapes import GENERATING

    killed = tmp_path / "killed"  # a generation killed part-way: its marker names a dead process
    (killed / "train").mkdir(parents=True)
    (killed / "train" / "000000.jpg").write_bytes(b"\xff\xd8\xff half")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (killed / GENERATING).write_text(json.dumps({"pid": gone.pid, "host": os.uname().nodename}))
    ds = ShapesDataset(str(killed), "train", num_train=2, num_val=1, size=64)
    assert len(ds) == 2 and not ds.problems and not (killed / GENERATING).exists()


# ----------------------------------------------------------------------------------------------
# 6: inference over a folder skips what it cannot read, with counts
# ----------------------------------------------------------------------------------------------


def test_infer_over_a_folder_skips_and_counts_unreadable_files(tmp_path, capsys):
    folder = tmp_path / "images"
    write_images(folder, 2)
    (folder / "notes.jpg").write_text("not a picture")
    ok, buf = cv2.imencode(".jpg", np.full((40, 40, 3), 90, np.uint8))
    (folder / "cut.jpg").write_bytes(buf.tobytes()[: len(buf) // 2])
    ckpt = tiny_checkpoint(tmp_path / "m.pth")
    out = tmp_path / "out"
    assert load_tool("infer").main([CFG, str(ckpt), str(folder), "--out", str(out), "--score-thr", "0",
                                    "--img-size", "64", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    records = json.loads((out / "detections.json").read_text())
    assert [r["file"] for r in records] == ["im0.png", "im1.png"]
    assert sorted(p.name for p in out.glob("*.png")) == ["im0.png", "im1.png"]
    assert "2 unreadable file(s) skipped: " in captured.out
    assert "1 x truncated JPEG (no end-of-image marker)" in captured.out
    assert "1 x image cannot be decoded" in captured.out
    assert f"warning: skipped {folder / 'cut.jpg'}: truncated JPEG" in captured.err
    assert f"warning: skipped {folder / 'notes.jpg'}: image cannot be decoded" in captured.err

    assert load_tool("infer").main([CFG, str(ckpt), str(folder / "cut.jpg"), "--out", str(out / "one"),
                                    "--device", "cpu"]) == 2  # one image given, and it cannot be read
    assert f"error: cannot read image {folder / 'cut.jpg'}: truncated JPEG" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# 7 and issue 17.5: check_dataset
# ----------------------------------------------------------------------------------------------


def write_coco(root: Path, split: str, annotations: list[dict], image_dir: Path) -> Path:
    for i in (1, 2):
        write_images(image_dir, 0)
        cv2.imwrite(str(image_dir / f"{i}.jpg"), np.full((48, 64, 3), 120, np.uint8))
    data = {"images": [{"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 48} for i in (1, 2)],
            "categories": [{"id": 1, "name": "a"}], "annotations": annotations}
    path = root / "annotations" / f"instances_{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_coco_string_bboxes_and_non_boolean_iscrowd_are_counted_problems(tmp_path, capsys):
    from detkit.data import CocoDataset

    def ann(i, **kw):
        return {"id": i, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10], "iscrowd": 0, **kw}

    anns = [ann(1), ann(2, bbox=["2", "2", "10", "10"]), ann(3, iscrowd="1"), ann(4, iscrowd=2),
            ann(5, iscrowd=True), ann(6, iscrowd=1.0, bbox=[20, 20, 10, 10]), ann(7, bbox=[1, 1, True, 4])]
    path = write_coco(tmp_path, "val", anns, tmp_path / "images" / "val")
    ds = CocoDataset(str(path), str(tmp_path / "images" / "val"))
    assert dict(ds.problems.counts) == {"annotation bbox is not 4 numbers": 2, "annotation iscrowd is not 0 or 1": 2}
    rec = next(r for r in ds.records if r["image_id"] == 1)
    assert len(rec["boxes"]) == 1 and len(rec["ignore_boxes"]) == 2  # ann 1; anns 5 and 6 are crowd regions
    tool = load_tool("check_dataset")
    assert tool.main([str(path)]) == 1  # coco told from the suffix, images found under root/images/val
    where = tmp_path / "images" / "val" / "1.jpg"
    assert f"{where} (ann 3): annotation iscrowd is not 0 or 1" in capsys.readouterr().out
    assert tool.main([str(tmp_path / "missing.json"), "--format", "coco"]) == 2
    assert capsys.readouterr().err == f"error: dataset path does not exist: {tmp_path / 'missing.json'}\n"


def test_check_dataset_takes_a_yolo_root_a_data_yaml_an_images_folder_and_coco_layouts(tmp_path, capsys):
    root = tmp_path / "ds"
    for split, n in (("train", 3), ("val", 2)):
        for p in write_images(root / "images" / split, n):
            label = root / "labels" / split / (p.stem + ".txt")
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "labels" / "val" / "im1.txt").write_text("5 0.5 0.5 0.2 0.2\n")  # class out of range
    (root / "names.txt").write_text("a\nb\n")
    tool = load_tool("check_dataset")
    assert tool.main([str(root), "--format", "yolo"]) == 1
    out = capsys.readouterr().out
    assert "  train: 3 usable images, 3 boxes" in out and "  val: 2 usable images, 1 boxes" in out
    assert f"{root}: 5 usable images, 4 boxes, 0 ignore regions; 1 problem(s)" in out

    yaml_file = tmp_path / "data.yaml"
    yaml_file.write_text(f"path: {root.name}\ntrain: images/train\nval: images/train\nnames: [a, b]\n")
    assert tool.main([str(yaml_file)]) == 0  # val is the train folder: checked once
    assert f"{yaml_file}: 3 usable images, 3 boxes" in capsys.readouterr().out
    assert tool.main([str(root / "images" / "val"), "--format", "yolo"]) == 1
    assert f"{root / 'images' / 'val'}: 2 usable images, 1 boxes" in capsys.readouterr().out

    coco = tmp_path / "coco"
    ann = write_coco(coco, "val2017", [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}],
                     coco / "val2017")  # COCO's own layout: root/val2017
    assert tool.main([str(ann)]) == 0
    (coco / "val2017" / "1.jpg").rename(coco / "elsewhere.jpg")
    for p in (coco / "val2017").iterdir():
        p.unlink()
    (coco / "val2017").rmdir()
    assert tool.main([str(ann)]) == 2
    err = capsys.readouterr().err
    assert f"image folder not found (tried {coco / 'val2017'}, {coco / 'images' / 'val2017'}); pass --images DIR" in err
    yaml_file.write_text("train: list.txt\nnames: [a]\n")
    assert tool.main([str(yaml_file)]) == 2
    assert "is a list of image files" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# issue 17.3: every tool's mistakes are one-line errors with exit status 2
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def mistakes(tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    ckpt = tiny_checkpoint(tmp_path / "m.pth")
    missing = str(tmp_path / "missing")
    return {
        "train": [([CFG, "--epochs", "3"], "unrecognized arguments: --epochs"),
                  ([missing + ".py"], "missing.py"),
                  ([CFG, "--cfg-options", "train.epoch=1"], "unknown key"),
                  ([CFG, "--work-dir", str(a_file)], "is a file, not a folder")],
        "test": [([CFG, missing + ".pth", "--device", "cpu"], "checkpoint not found"),
                 ([CFG, str(ckpt), "--batch", "0"], "argument --batch: must be an integer >= 1, got '0'"),
                 ([CFG], "the following arguments are required: checkpoint")],
        "infer": [([CFG, str(ckpt), missing, "--device", "cpu"], "input not found"),
                  ([CFG, str(ckpt), str(tmp_path), "--batch", "0"], "argument --batch: must be an integer >= 1"),
                  ([CFG, str(ckpt), str(tmp_path), "x"], "CHECKPOINT INPUT or MODEL.onnx INPUT")],
        "check_dataset": [([missing], "dataset path does not exist"),
                          ([str(tmp_path), "--format", "xml"], "invalid choice: 'xml'"),
                          ([str(tmp_path), "--format", "yolo"], "no class names found")],
        "make_shapes": [([str(tmp_path / "s"), "--size", "8"], "size >= 64"),
                        ([str(a_file)], "is a file, not a folder"),
                        ([str(tmp_path / "s"), "--train", "many"], "argument --train: must be an integer >= 0")],
    }


@pytest.mark.parametrize("name", ["train", "test", "infer", "check_dataset", "make_shapes"])
def test_each_tool_answers_mistakes_with_exit_2_and_no_traceback(name, mistakes, capsys):
    tool = load_tool(name)
    for argv, message in mistakes[name]:
        assert tool.main(argv) == 2, (name, argv)
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (name, argv, err)
