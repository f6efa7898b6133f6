"""A user's inputs are never a tool's outputs (issue 24.1), unwritable outputs fail early (24.3),
every numeric flag is range-checked (24.4), a missing optional package is one line naming its extra
(issue 23.3), and a full disk at the work-dir lock leaves no temporary (24.3)."""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import detkit.engine.trainer  # noqa: F401  (imported before tests patch evaluate_dataset, which it binds)
from detkit.engine.checkpoint import atomic_save
from detkit.engine.output_paths import OutputPathError, check_not_input, config_input_paths
from detkit.engine.workdir import CONFIG_DUMP_MARK, claim_work_dir, config_dump_path
from tests.engine.standins import TinyDetector
from tests.fixtures.tools import load_tool

ROOT = Path(__file__).resolve().parents[2]
CFG = str(ROOT / "tests" / "engine" / "configs" / "tiny.py")
SHAPES_CFG = str(ROOT / "tests" / "engine" / "configs" / "shapes_tiny.py")
FAST = ["train.epochs=1", "train.multi_scale=None", "train.checkpoint.interval_iters=0",
        "schedule.assigner_switches=[]"]


def tiny_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    atomic_save({"model": TinyDetector(num_classes=2).state_dict()}, path)
    return path


def write_images(folder: Path, n: int) -> dict[str, bytes]:
    """``n`` PNGs in ``folder``; returns {name: bytes} to compare with afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(folder / f"im{i}.png"), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def coco_config(tmp_path) -> tuple[Path, Path, Path]:
    """A config whose val set is a COCO json + image folder of the user's: (config, json, image folder)."""
    images = tmp_path / "coco" / "images"
    write_images(images, 2)
    ann = tmp_path / "coco" / "instances_val.json"
    ann.write_text(json.dumps({
        "images": [{"id": i + 1, "file_name": f"im{i}.png", "width": 64, "height": 48} for i in range(2)],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 20], "iscrowd": 0}],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}))
    cfg = tmp_path / "coco_config.py"
    cfg.write_text(f"_base_ = [{CFG!r}]\nfrom detkit.config import L\nfrom detkit.data import CocoDataset\n"
                   f"data = dict(val=dict(dataset=L(CocoDataset)(ann_file={str(ann)!r}, img_dir={str(images)!r})))\n")
    return cfg, ann, images


# ----------------------------------------------------------------------------------------------
# 1: inputs are never outputs
# ----------------------------------------------------------------------------------------------


def test_check_not_input_resolves_symlinks_and_names_both_paths(tmp_path):
    photos = tmp_path / "photos"
    write_images(photos, 1)
    link = tmp_path / "link"
    link.symlink_to(photos, target_is_directory=True)
    with pytest.raises(OutputPathError) as info:
        check_not_input(link, [photos], "--out")
    assert str(info.value) == (f"--out {link} (-> {photos}) is the input folder {photos}: it would be "
                               "overwritten; pick another output path")
    with pytest.raises(OutputPathError, match=f"--out {link / 'sub'} .* lies inside the input folder {photos}; "):
        check_not_input(link / "sub", [photos], "--out")
    image = photos / "im0.png"
    with pytest.raises(OutputPathError, match=f"holds the input {image}, whose output of the same name"):
        check_not_input(photos, [image], "--out", names_from_inputs=True)
    assert check_not_input(photos / "drawn", [photos], "--out", names_from_inputs=True) == photos / "drawn"
    assert check_not_input(tmp_path / "elsewhere", [photos, None, image], "--out") == tmp_path / "elsewhere"


def test_config_input_paths_lists_the_existing_paths_a_dataset_names(tmp_path, coco_config, monkeypatch):
    from detkit.config import load_config

    cfg_file, ann, images = coco_config
    cfg = load_config(str(cfg_file))
    assert sorted(config_input_paths(cfg.data.val)) == sorted([ann, images])
    monkeypatch.chdir(images)  # a data root that is the current folder (or holds it) is left out
    assert config_input_paths({"root": str(images), "names": str(ann), "x": ".", "y": "nope"}) == [ann]


def test_infer_refuses_to_draw_over_its_input_folder_or_image(tmp_path, capsys):
    photos = tmp_path / "photos"
    before = write_images(photos, 2)
    ckpt = tiny_checkpoint(tmp_path / "m.pth")
    infer = load_tool("infer")
    assert infer.main([CFG, str(ckpt), str(photos), "--out", str(photos), "--device", "cpu"]) == 2
    assert one_error_line(capsys) == (f"error: --out {photos} is the input folder {photos}: it would be overwritten; "
                                      "pick another output path")
    link = tmp_path / "same_photos"
    link.symlink_to(photos, target_is_directory=True)
    assert infer.main([CFG, str(ckpt), str(link), "--out", str(photos) + "/", "--device", "cpu"]) == 2
    assert f"is the input folder {link} (-> {photos})" in one_error_line(capsys)
    assert infer.main([CFG, str(ckpt), str(photos / "im0.png"), "--out", str(photos), "--device", "cpu"]) == 2
    assert f"--out {photos} holds the input {photos / 'im0.png'}" in one_error_line(capsys)
    assert infer.main([CFG, str(ckpt), str(photos), "--out", str(ckpt), "--device", "cpu"]) == 2
    assert f"--out {ckpt} is the input file {ckpt}" in one_error_line(capsys)
    assert contents(photos) == before and sorted(p.name for p in tmp_path.iterdir()) == ["m.pth", "photos",
                                                                                         "same_photos"]
    # a subfolder of the input folder is fine: the folder is read flat, nothing lands beside the originals
    assert infer.main([CFG, str(ckpt), str(photos), "--out", str(photos / "drawn"), "--img-size", "64",
                       "--device", "cpu"]) == 0
    assert contents(photos) == before and sorted(contents(photos / "drawn")) == ["detections.json", "im0.png",
                                                                               "im1.png"]


def test_test_refuses_an_out_that_is_its_annotations_checkpoint_or_config(tmp_path, capsys, coco_config,
                                                                          monkeypatch):
    import detkit.engine.inference as inference

    def no_work(*args, **kwargs):
        raise AssertionError("the evaluation ran before the output paths were checked")

    monkeypatch.setattr(inference, "evaluate_dataset", no_work)
    cfg, ann, images = coco_config
    ckpt = tiny_checkpoint(tmp_path / "m.pth")
    kept = {p: p.read_bytes() for p in (cfg, ann, ckpt)}
    cases = [(["--out", str(ann)], f"--out {ann} is the input file {ann}: it would be overwritten"),
             (["--out", str(ckpt)], f"--out {ckpt} is the input file {ckpt}"),
             (["--out", str(cfg)], f"--out {cfg} is the input file {cfg}"),
             (["--pr-curve", str(images / "pr.png")], f"--pr-curve {images / 'pr.png'} lies inside the input "
                                                       f"folder {images}"),
             (["--analysis", str(images)], f"--analysis {images} is the input folder {images}")]
    for extra, message in cases:
        assert load_tool("test").main([str(cfg), str(ckpt), "--device", "cpu", *extra]) == 2, extra
        assert message in one_error_line(capsys), extra
    assert all(p.read_bytes() == data for p, data in kept.items())
    assert sorted(p.name for p in images.iterdir()) == ["im0.png", "im1.png"]


def test_export_browse_compare_ablate_and_convert_refuse_their_inputs_as_outputs(tmp_path, capsys):
    shapes = tmp_path / "shapes"
    assert load_tool("make_shapes").main([str(shapes), "--train", "2", "--val", "2", "--size", "64"]) == 0
    capsys.readouterr()
    before = {p: p.read_bytes() for p in shapes.rglob("*") if p.is_file()}
    ckpt = tmp_path / "weights.pth"
    ckpt.write_bytes(b"mine")
    root = [f"data.train.dataset.root={shapes}", f"data.val.dataset.root={shapes}"]
    cases = [
        ("export", [CFG, str(ckpt), "--out", str(ckpt)], f"--out {ckpt} is the input file {ckpt}"),
        ("browse_dataset", [SHAPES_CFG, "--out", str(shapes / "annotations"), "--cfg-options", *root],
         f"--out {shapes / 'annotations'} lies inside the input folder {shapes}"),
        ("browse_dataset", [SHAPES_CFG, "--out", SHAPES_CFG], f"--out {SHAPES_CFG} is the input file"),
        ("compare_assigners", [SHAPES_CFG, "--out", str(shapes), "--cfg-options", *root],
         f"--out {shapes} is the input folder {shapes}"),
        ("compare_assigners", [SHAPES_CFG, "--out", str(ckpt), "--checkpoint", str(ckpt)],
         f"--out {ckpt} is the input file {ckpt}"),
        ("ablate_assigners", [SHAPES_CFG, "--work-dir", str(shapes / "val"), "--cfg-options", *root],
         f"--work-dir {shapes / 'val'} lies inside the input folder {shapes}"),
        ("convert_weights", ["ultralytics", str(ckpt), str(tmp_path / "cfg.py"), "--config", str(tmp_path / "cfg.py"),
                             "--overwrite"], f"DST {tmp_path / 'cfg.py'} is the input file {tmp_path / 'cfg.py'}"),
    ]
    (tmp_path / "cfg.py").write_text("# my config\n")
    for name, argv, message in cases:
        assert load_tool(name).main(argv) == 2, (name, argv)
        assert message in one_error_line(capsys), (name, argv)
    assert {p: p.read_bytes() for p in shapes.rglob("*") if p.is_file()} == before
    assert ckpt.read_bytes() == b"mine" and (tmp_path / "cfg.py").read_text() == "# my config\n"


# ----------------------------------------------------------------------------------------------
# 2: the config dump never replaces a user's config.py
# ----------------------------------------------------------------------------------------------


def test_train_keeps_the_users_config_in_the_work_dir_and_dumps_beside_it(tmp_path, capsys):
    proj = tmp_path / "proj"
    proj.mkdir()
    mine = proj / "config.py"
    text = Path(CFG).read_text()
    mine.write_text(text)
    train = load_tool("train")
    assert train.main([str(mine), "--work-dir", str(proj), "--cfg-options", *FAST]) == 0
    assert mine.read_text() == text  # the user's own file, untouched
    dump = (proj / "config.dump.py").read_text()
    assert dump.startswith(CONFIG_DUMP_MARK + "\n") and "TinyDetector" in dump
    assert f"{mine} is not a config dump (your own file, kept): the merged config goes to " \
           f"{proj / 'config.dump.py'}" in (proj / "train.log").read_text()
    # a resumed run rewrites its own dump; --overwrite deletes the dump and keeps the user's file
    assert train.main([str(mine), "--work-dir", str(proj), "--resume", "--cfg-options", *FAST[1:],
                       "train.epochs=2"]) == 0
    assert "epochs=2" in (proj / "config.dump.py").read_text().replace(" ", "") and mine.read_text() == text
    assert train.main([str(mine), "--work-dir", str(proj), "--overwrite", "--cfg-options", *FAST]) == 0
    assert mine.read_text() == text and (proj / "config.dump.py").read_text().startswith(CONFIG_DUMP_MARK)
    capsys.readouterr()


def test_config_dump_path_rules(tmp_path):
    assert config_dump_path(tmp_path) == tmp_path / "config.py"  # nothing there
    (tmp_path / "config.py").write_text(f"{CONFIG_DUMP_MARK}\nx = 1\n")
    assert config_dump_path(tmp_path) == tmp_path / "config.py"  # an earlier dump: rewritten
    (tmp_path / "config.py").write_text("x = 1  # mine\n")
    assert config_dump_path(tmp_path) == tmp_path / "config.dump.py"
    (tmp_path / "config.dump.py").write_text("also mine\n")
    with pytest.raises(ValueError, match="config.py and config.dump.py are files of yours"):
        config_dump_path(tmp_path)


# ----------------------------------------------------------------------------------------------
# 3: an output location that cannot take files fails before the work; a full disk
# ----------------------------------------------------------------------------------------------


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_an_out_under_proc_fails_before_the_evaluation(tmp_path, capsys, monkeypatch):
    import detkit.engine.inference as inference

    def no_work(*args, **kwargs):
        raise AssertionError("the evaluation ran before the output paths were checked")

    monkeypatch.setattr(inference, "evaluate_dataset", no_work)
    ckpt = tiny_checkpoint(tmp_path / "m.pth")
    assert load_tool("test").main([CFG, str(ckpt), "--device", "cpu", "--out", "/proc/res.json"]) == 2
    assert one_error_line(capsys).startswith("error: --out /proc/res.json: cannot create files in /proc")
    assert load_tool("infer").main([CFG, str(ckpt), str(tmp_path), "--out", "/proc/drawn"]) == 2
    assert one_error_line(capsys).startswith("error: --out /proc/drawn: cannot create files in /proc")


def test_test_results_on_a_full_disk_are_one_line_and_the_old_file_is_kept(tmp_path, capsys, monkeypatch):
    out = tmp_path / "results.json"
    out.write_text("[]")
    ckpt = tiny_checkpoint(tmp_path / "m.pth")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    assert load_tool("test").main([CFG, str(ckpt), "--device", "cpu", "--no-progress", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: cannot write {out}: disk full or quota exceeded") and "Traceback" not in err
    assert out.read_text() == "[]" and sorted(p.name for p in tmp_path.iterdir()) == ["m.pth", "results.json"]


def test_a_full_disk_when_the_lock_is_created_leaves_no_temporary(tmp_path, capsys, monkeypatch):
    real_write_text = Path.write_text

    def full_disk(self, data, *args, **kwargs):
        if self.name.startswith(".run.lock."):
            real_write_text(self, data[:5], *args, **kwargs)  # part of it reached the disk
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write_text(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    work = tmp_path / "work"
    with pytest.raises(OutputPathError) as info:
        claim_work_dir(work)
    assert str(info.value).startswith(f"work_dir {work}: cannot write the lock file run.lock (No space left on "
                                      "device; ") and "\n" not in str(info.value)  # Trainer(work_dir=...)
    assert list(work.iterdir()) == []
    assert load_tool("train").main([CFG, "--work-dir", str(work), "--cfg-options", *FAST]) == 2
    assert one_error_line(capsys).startswith(f"error: --work-dir {work}: cannot write the lock file run.lock (No "
                                             "space left on device")
    assert list(work.iterdir()) == []


# ----------------------------------------------------------------------------------------------
# 4: every numeric flag range-checked by argparse
# ----------------------------------------------------------------------------------------------

FLAGS = [
    ("infer", ["C", "K", "I"], "--score-thr", ["-1", "2", "nan", "inf"], "a number in [0, 1]"),
    ("infer", ["C", "K", "I"], "--batch", ["0", "-2", "x"], "an integer >= 1"),
    ("infer", ["C", "K", "I"], "--img-size", ["0"], "an integer >= 1"),
    ("test", ["C", "K"], "--analysis-score-thr", ["nan", "1.5"], "a number in [0, 1]"),
    ("test", ["C", "K"], "--batch", ["0"], "an integer >= 1"),
    ("export", ["C", "K"], "--tolerance", ["nan", "-1", "inf"], "a number >= 0"),
    ("export", ["C", "K"], "--opset", ["0"], "an integer >= 1"),
    ("export", ["C", "K"], "--img-size", ["-5"], "an integer >= 1"),
    ("train", ["C"], "--seed", ["-1"], "an integer >= 0"),
    ("browse_dataset", ["C"], "--num", ["0"], "an integer >= 1"),
    ("browse_dataset", ["C"], "--seed", ["-3"], "an integer >= 0"),
    ("compare_assigners", ["C"], "--images", ["0"], "an integer >= 1"),
    ("compare_assigners", ["C"], "--batch", ["0"], "an integer >= 1"),
    ("compare_assigners", ["C"], "--samples", ["-1"], "an integer >= 0"),
    ("ablate_assigners", ["C"], "--seeds", ["0"], "an integer >= 1"),
    ("ablate_assigners", ["C"], "--only-seeds", ["-1"], "an integer >= 0"),
    ("kmeans_anchors", ["D"], "--num", ["0"], "an integer >= 1"),
    ("kmeans_anchors", ["D"], "--levels", ["0"], "an integer >= 1"),
    ("kmeans_anchors", ["D"], "--size", ["0"], "an integer >= 1"),
    ("kmeans_anchors", ["D"], "--restarts", ["0"], "an integer >= 1"),
    ("kmeans_anchors", ["D"], "--min-size", ["inf", "-1"], "a number >= 0"),
    ("make_shapes", ["O"], "--train", ["-1", "many"], "an integer >= 0"),
    ("make_shapes", ["O"], "--workers", ["0"], "an integer >= 1"),
    ("make_shapes", ["O"], "--size", ["0"], "an integer >= 1"),
    ("check_dataset", ["D"], "--max-size", ["0"], "an integer >= 1"),
    ("model_info", ["C"], "--size", ["0"], "an integer >= 1"),
]


@pytest.mark.parametrize("tool, positional, flag, values, expected", FLAGS,
                         ids=[f"{t}{f}" for t, _, f, _, _ in FLAGS])
def test_every_numeric_flag_is_range_checked(tool, positional, flag, values, expected, capsys, monkeypatch):
    module = load_tool(tool)
    for value in values:
        assert module.main([*positional, f"{flag}={value}"]) == 2, (flag, value)
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if "error:" in line]
        finite = " (finite)" if value in ("nan", "inf") else ""
        assert len(errors) == 1 and errors[0].endswith(f"error: argument {flag}: must be {expected}{finite}, "
                                                       f"got {value!r}"), (flag, value, err)
        assert "Traceback" not in err


def test_argtypes_accept_the_edges_and_refuse_what_float_lets_through():
    import argparse

    from detkit.argtypes import finite_float, fraction, nonnegative_int, positive_float, positive_int

    assert fraction("0") == 0.0 and fraction("1") == 1.0 and fraction("0.25") == 0.25
    assert positive_int("1") == 1 and nonnegative_int("0") == 0 and positive_float("1e-9") == 1e-9
    assert finite_float("-3.5") == -3.5
    for fn, text in [(fraction, "1.0000001"), (fraction, "-0.0001"), (fraction, "NaN"), (positive_int, "1.5"),
                     (positive_float, "0"), (finite_float, "-inf"), (finite_float, "1e400")]:
        with pytest.raises(argparse.ArgumentTypeError):
            fn(text)


# ----------------------------------------------------------------------------------------------
# 5: a missing optional package is one line naming its extra
# ----------------------------------------------------------------------------------------------


def test_export_without_onnx_is_one_line_naming_the_extra(tmp_path, capsys, monkeypatch):
    from detkit import config as config_module

    monkeypatch.setitem(sys.modules, "onnx", None)
    ckpt = tiny_checkpoint(tmp_path / "m.pth")
    tool = load_tool("export")
    assert tool.main([CFG, str(ckpt)]) == 2
    assert one_error_line(capsys) == "error: ONNX export needs the onnx package: " \
                                     "pip install 'detkit[onnx]'"
    monkeypatch.setitem(sys.modules, "onnx", config_module)  # any module: onnx "installed"
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert tool.main([CFG, str(ckpt)]) == 2
    assert one_error_line(capsys) == ("error: the ONNX Runtime parity check after export (or pass --no-verify) "
                                      "needs the onnxruntime package: pip install 'detkit[onnx]'")
    assert list(tmp_path.iterdir()) == [ckpt]


def test_infer_of_an_onnx_model_without_onnxruntime_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    model = tmp_path / "model.onnx"
    model.write_bytes(b"onnx")
    write_images(tmp_path / "photos", 1)
    assert load_tool("infer").main([str(model), str(tmp_path / "photos"), "--out", str(tmp_path / "out")]) == 2
    assert one_error_line(capsys) == ("error: running .onnx models needs the onnxruntime package: "
                                      "pip install 'detkit[onnx]'")


def test_trackers_and_the_faster_backend_name_their_extra(tmp_path, capsys, monkeypatch, caplog):
    from detkit.engine.trackers import TensorBoardTracker, build_trackers
    from detkit.evaluation.coco import COCOEvaluator
    from detkit.extras import MissingExtraError

    for module, extra in (("mlflow", "mlflow"), ("wandb", "wandb")):
        monkeypatch.setitem(sys.modules, module, None)
        with pytest.raises(MissingExtraError) as info:
            build_trackers([module], tmp_path)
        assert str(info.value) == (f"runtime.loggers: the {module} tracker needs the {module} package: "
                                   f"pip install 'detkit[{extra}]'")
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(MissingExtraError, match=r"tensorboard tracker needs the tensorboard package: "
                                                r"pip install tensorboard$"):
        TensorBoardTracker(tmp_path)
    with caplog.at_level("INFO", logger="detkit"):
        assert build_trackers(["tensorboard"], tmp_path) == []  # the default tracker: skipped, said why
    assert "tensorboard not installed (pip install tensorboard): no TensorBoard events" in caplog.text

    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)
    gt = {"images": [{"id": 1, "width": 8, "height": 8}], "annotations": [], "categories": [{"id": 1, "name": "a"}]}
    with pytest.raises(MissingExtraError, match=r"backend 'faster' .* needs the faster-coco-eval package: "
                                                r"pip install 'detkit\[fast\]'$"):
        COCOEvaluator(gt, backend="faster")
    ckpt = tiny_checkpoint(tmp_path / "m.pth")
    capsys.readouterr()
    assert load_tool("test").main([CFG, str(ckpt), "--device", "cpu", "--backend", "faster", "--no-progress"]) == 2
    assert "needs the faster-coco-eval package: pip install 'detkit[fast]'" in one_error_line(capsys)
