"""The run folder after training: drawn val images, confusion matrix, curves or a logged reason,
labels overview, results with val losses, args.json; an exception in the report never ends training."""

from __future__ import annotations

import csv
import functools
import json
import logging
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detkit.config import load_config
from detkit.engine import plots, run_report
from detkit.engine import trainer as trainer_module
from detkit.engine.inference import evaluate_dataset, predicts_with_losses
from detkit.engine.run_report import write_run_report
from detkit.engine.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]
SHAPES = ROOT / "tests" / "engine" / "configs" / "shapes_tiny.py"
TINY = ROOT / "tests" / "engine" / "configs" / "tiny.py"
ARGV = ["detkit", "train", str(SHAPES), "--cfg-options", "train.epochs=1"]


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
    """One epoch of the shapes config, its report made with strict=True (a bug keeps its traceback)."""
    work = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer_module, "report_training_run",
                   functools.partial(run_report.report_training_run, strict=True))
        mp.setattr(sys, "argv", ARGV)
        trainer = Trainer(load_config(SHAPES, ["train.epochs=1", "train.checkpoint.interval_iters=0"]),
                          work_dir=work)
        trainer.train()
    return work, trainer


@pytest.mark.slow
def test_the_run_folder_holds_the_report(shapes_run):
    work, trainer = shapes_run
    for name in ("args.json", "val_batch_labels.jpg", "val_batch_pred.jpg", "confusion_matrix.png",
                 "confusion_matrix_normalized.png", "labels.png", "results.png"):
        assert (work / name).is_file(), name
    for name in ("val_batch_labels.jpg", "val_batch_pred.jpg"):  # 8 val images, 4 x 2 tiles of 400 px
        assert cv2.imread(str(work / name)).shape == (800, 1600, 3)
    for name in ("confusion_matrix.png", "labels.png", "results.png"):
        h, w = cv2.imread(str(work / name)).shape[:2]
        assert h <= 1600 and w <= 1700, name
    log = (work / "train.log").read_text()
    curves = [(work / n).is_file() for n in ("PR_curve.png", "P_curve.png", "R_curve.png", "F1_curve.png")]
    reason = "PR_curve.png, P_curve.png, R_curve.png, F1_curve.png (and pr_curves.png) not written: " \
             "the last evaluation had no detections"
    assert all(curves) != (reason in log)  # the curves, or one line saying why not
    assert not (work / run_report.ERRORS_FILE).exists()


@pytest.mark.slow
def test_args_json_holds_the_command_line_and_the_resolved_settings(shapes_run):
    work, trainer = shapes_run
    args = json.loads((work / "args.json").read_text())
    assert args["argv"] == ARGV and args["work_dir"] == str(work) and args["device"] == "cpu"
    assert args["train"]["epochs"] == 1 and args["train"]["checkpoint"]["interval_iters"] == 0
    assert args["runtime"]["logging"]["plot_interval"] == 0 and args["world_size"] == 1
    assert (work / "config.py").is_file()  # the config dump, written at the start


@pytest.mark.slow
def test_val_losses_are_the_heads_loss_on_the_val_batches(shapes_run):
    work, trainer = shapes_run
    with open(work / "metrics.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    val = {k: float(v) for k, v in rows[-1].items() if k.startswith("val/")}
    assert sorted(val) == ["val/loss", "val/loss_box", "val/loss_cls", "val/loss_obj"]
    assert val["val/loss"] == pytest.approx(val["val/loss_box"] + val["val/loss_cls"] + val["val/loss_obj"])
    model = trainer.ema.module
    assert predicts_with_losses(model)
    # the 8 val images are one batch: the model's own loss on it, in eval mode
    batch = run_report._val_batch(trainer.val_set, range(8), trainer.loader.collate_fn, 32, torch.device("cpu"))
    model.eval()
    with torch.no_grad():
        expected = model.loss(batch)
    for k in ("loss_box", "loss_cls", "loss_obj"):
        assert val[f"val/{k}"] == pytest.approx(float(expected[k]), rel=1e-5)
    # and the predictions of that pass are those of model.predict
    metrics, results = evaluate_dataset(model, trainer.val_set, trainer.evaluator, torch.device("cpu"),
                                        collate_fn=trainer.loader.collate_fn, progress=False, val_losses=True)
    plain, plain_results = evaluate_dataset(model, trainer.val_set, trainer.evaluator, torch.device("cpu"),
                                            collate_fn=trainer.loader.collate_fn, progress=False)
    assert results == plain_results and not any(k.startswith("val/") for k in plain)
    assert metrics["val/loss_box"] == pytest.approx(val["val/loss_box"], rel=1e-5)


@pytest.mark.slow
def test_labels_overview_counts_every_training_box(shapes_run):
    work, trainer = shapes_run
    labels, boxes, where, n, left_out = run_report._records_labels(trainer.train_set)
    records = trainer.train_set.records
    assert left_out == 0 and n == len(records) == 8
    assert np.bincount(labels, minlength=5).tolist() == np.bincount(
        np.concatenate([r["labels"] for r in records]), minlength=5).tolist()
    assert ((boxes[:, :2] > 0) & (boxes[:, :2] < 1)).all() and ((boxes[:, 2:] > 0) & (boxes[:, 2:] <= 1)).all()
    assert np.bincount(where).tolist() == [len(r["labels"]) for r in records]


@pytest.fixture
def figures(monkeypatch):
    """The figures plots saves, by file name (nothing written)."""
    saved = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: saved.setdefault(path.name, fig) and path)
    return saved


def test_results_put_val_losses_beside_train_losses(tmp_path, figures):
    rows = [{"epoch": e, "loss": 3.0 / e, "loss_box": 1.0 / e, "val/loss": 2.5 / e, "val/loss_box": 0.9 / e,
             "AP": 0.1 * e, "AP50": 0.2 * e, "stat_pos_per_gt": 3.0} for e in (1, 2, 3)]
    assert plots.plot_results(rows, tmp_path / "results.png") == tmp_path / "results.png"
    axes = {ax.get_title(): ax for ax in figures["results.png"].axes if ax.get_title()}
    assert list(axes) == ["loss", "loss_box", "AP50", "AP"]
    train, val = axes["loss_box"].get_lines()
    assert (train.get_label(), val.get_label()) == ("train", "val")
    assert list(val.get_xdata()) == [1.0, 2.0, 3.0] and list(val.get_ydata()) == [0.9, 0.45, 0.3]
    assert list(axes["AP"].get_lines()[0].get_ydata()) == pytest.approx([0.1, 0.2, 0.3])
    assert plots.plot_results([{"epoch": 1, "lr": 0.1}], tmp_path / "none.png") is None


def test_labels_figure_counts(tmp_path, figures):
    labels = np.array([0, 0, 2, 2, 2])
    boxes = np.array([[0.5, 0.5, 0.2, 0.1]] * 5)
    plots.plot_labels(labels, boxes, np.array([0, 0, 1, 1, 1]), 3, ["a", "b", "c"], tmp_path / "labels.png")
    counts, per_image, centres, sizes = figures["labels.png"].axes[:4]
    assert [p.get_height() for p in counts.patches] == [2, 0, 3]
    assert [t.get_text() for t in counts.get_xticklabels()] == ["a", "b", "c"]
    assert "5 boxes in 3 images" in counts.get_title()
    assert sorted(p.get_height() for p in per_image.patches if p.get_height()) == [1, 1, 1]  # 2, 3 and 0 boxes
    assert "1 images without boxes" in per_image.get_title()


def _rows_csv(work: Path) -> None:
    (work / "metrics.csv").write_text("epoch,loss,val/loss,AP\n1,2.0,1.5,0.1\n2,1.0,1.2,0.2\n", encoding="utf-8")


def test_an_exception_in_the_report_is_raised_when_strict_and_logged_otherwise(tmp_path, monkeypatch, caplog):
    _rows_csv(tmp_path)

    def broken(work_dir):
        raise RuntimeError("boom")

    monkeypatch.setattr(run_report, "_results", broken)
    with pytest.raises(RuntimeError, match="boom"):
        write_run_report(tmp_path, None, None, None, args={"argv": ["x"]}, strict=True)
    with caplog.at_level(logging.INFO, logger="detkit"):
        written = write_run_report(tmp_path, None, None, None, args={"argv": ["x"]})
    assert [p.name for p in written] == ["args.json"]  # the other items are still made
    assert "run report: results.png not written: RuntimeError: boom (a bug in detkit" in caplog.text
    trace = (tmp_path / run_report.ERRORS_FILE).read_text()
    assert "Traceback" in trace and "boom" in trace


def test_without_a_val_set_the_report_says_what_it_left_out(tmp_path, caplog):
    _rows_csv(tmp_path)
    with caplog.at_level(logging.INFO, logger="detkit"):
        written = write_run_report(tmp_path, None, None, None)
    assert [p.name for p in written] == ["results.png"]
    assert "run report: no evaluation in this run (no val set, or train.eval_interval=0): drawn val images, " \
           "confusion matrix and PR / F1 curves not made" in caplog.text


@pytest.mark.slow
def test_a_broken_report_does_not_end_training(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("cannot draw")

    monkeypatch.setattr(run_report, "draw_val_images", broken)
    result = Trainer(load_config(TINY, ["train.epochs=1"]), work_dir=tmp_path).train()
    assert "AP" in result["last_metrics"]
    log = (tmp_path / "train.log").read_text()
    assert "run report: val_batch_labels.jpg, val_batch_pred.jpg not written: ValueError: cannot draw" in log
    assert "cannot draw" in (tmp_path / run_report.ERRORS_FILE).read_text()
    assert (tmp_path / "args.json").is_file() and (tmp_path / "results.png").is_file()


class _Records:
    """A dataset's records as YOLO (normalised), COCO (pixels and size) and VOC without a size give them."""

    class_names = ["a", "b"]
    records = [
        {"boxes": np.array([[0.1, 0.2, 0.3, 0.6]], np.float32), "labels": np.array([1]), "normalized": True},
        {"boxes": np.array([[10.0, 0.0, 30.0, 50.0], [0.0, 0.0, 100.0, 100.0]], np.float32), "labels": np.array([0, 0]),
         "size": (100, 200)},
        {"boxes": np.array([[1.0, 1.0, 2.0, 2.0]], np.float32), "labels": np.array([1]), "size": None},
        {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64), "normalized": True},
    ]


def test_labels_read_normalised_and_pixel_records_without_opening_images():
    labels, boxes, where, n, left_out = run_report._records_labels(_Records())
    assert labels.tolist() == [1, 0, 0] and where.tolist() == [0, 1, 1] and n == 3 and left_out == 1
    np.testing.assert_allclose(boxes, [[0.2, 0.4, 0.2, 0.4], [0.1, 0.25, 0.1, 0.5], [0.25, 0.5, 0.5, 1.0]], rtol=1e-6)
