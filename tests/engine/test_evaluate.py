"""detkit.engine.evaluate: one evaluation path for the trainer, ``detkit test`` and the ablation, one
default val batch size taken from the config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from detkit.config import load_config
from detkit.engine import inference
from detkit.engine.evaluate import build_val_data, evaluate, val_batch_size, val_loader_options
from detkit.engine.trainer import Trainer
from tests.engine.standins import TinyDetector
from tests.fixtures.tools import load_tool

ROOT = Path(__file__).resolve().parents[2]
CFG = str(ROOT / "tests" / "engine" / "configs" / "tiny.py")
SHAPES = str(ROOT / "tests" / "engine" / "configs" / "shapes_tiny.py")  # a deterministic val set, a real model
COCO_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")


def test_one_val_batch_size_taken_from_the_config():
    assert val_batch_size({"data": {"train": {"batch_size": 6}, "val": {"batch_size": 3}}}) == 3
    assert val_batch_size({"data": {"train": {"batch_size": 6}, "val": {}}}) == 6  # the trainer's batch
    assert val_batch_size({"data": {"val": {}}}) == 16  # data.train's default
    cfg = {"data": {"train": {"batch_size": 6}, "val": {"num_workers": 0}}}
    assert val_loader_options(cfg) == {"batch_size": 6, "num_workers": 0}


@pytest.fixture
def calls(monkeypatch):
    """Every ``inference.evaluate_dataset`` call: ``(batch_size, num_workers, metrics, results)``."""
    seen = []
    real = inference.evaluate_dataset

    def spy(model, dataset, evaluator, device, collate_fn, batch_size, num_workers, *args, **kwargs):
        metrics, results = real(model, dataset, evaluator, device, collate_fn, batch_size, num_workers, *args,
                                **kwargs)
        seen.append((batch_size, num_workers, metrics, list(results)))
        return metrics, results

    monkeypatch.setattr(inference, "evaluate_dataset", spy)
    return seen


@pytest.mark.slow
def test_the_trainer_and_detkit_test_evaluate_one_way_with_the_same_numbers(tmp_path, calls):
    work = tmp_path / "work"
    opts = ["train.epochs=1", "train.checkpoint.interval_iters=0", "model.head.score_thr=0.0"]  # detections at once
    Trainer(load_config(SHAPES, opts), work_dir=work).train()
    assert len(calls) == 1  # the epoch-end evaluation went through detkit.engine.evaluate
    assert load_tool("test").main([SHAPES, str(work / "epoch_1.pth"), "--device", "cpu", "--no-progress",
                                   "--cfg-options", "model.head.score_thr=0.0"]) == 0
    assert len(calls) == 2
    (train_bs, train_workers, trained, train_results), (test_bs, test_workers, tested, test_results) = calls
    assert (train_bs, train_workers) == (test_bs, test_workers) == (8, 0)  # data.val of shapes_tiny.py
    assert {k: trained[k] for k in COCO_KEYS} == {k: tested[k] for k in COCO_KEYS}
    assert train_results and train_results == test_results  # the same detections, to the bit


def test_evaluate_returns_metrics_results_and_the_evaluator(calls):
    cfg = load_config(CFG)
    model = TinyDetector(num_classes=2, width=8)
    torch.manual_seed(0)
    val = build_val_data(cfg, main=True)
    model.train()
    run = evaluate(cfg, model, torch.device("cpu"), val=val, batch_size=3, progress=False)
    assert calls[0][:2] == (3, 0)  # the batch size given wins over data.val's
    assert run.dataset is val.dataset and run.evaluator is val.evaluator
    assert set(COCO_KEYS) <= set(run.metrics) and len(run.results) == 8 and model.training
    assert run.metrics == calls[0][2] and run.results == calls[0][3]
