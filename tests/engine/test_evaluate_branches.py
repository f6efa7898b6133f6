"""Evaluation of a dual-branch head (YOLOv10's one-to-one branches): the fused copy drops the branch the
predictions do not read, unless the val losses (of both branches) are computed on the same pass."""

from __future__ import annotations

from pathlib import Path

import torch

from detkit.config import instantiate, load_config
from detkit.engine import inference
from detkit.engine.evaluate import evaluate
from tests.fixtures.spies import record_calls

ROOT = Path(__file__).resolve().parents[2]
ONE2ONE = str(ROOT / "tests" / "engine" / "configs" / "shapes_tiny_one2one.py")


def test_evaluation_prunes_the_unread_branch_only_without_val_losses(monkeypatch):
    cfg = load_config(ONE2ONE, ["model.head.score_thr=0.0"])
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    calls = record_calls(monkeypatch, inference, "evaluate_dataset")
    pruned = evaluate(cfg, model, torch.device("cpu"), progress=False)
    with_losses = evaluate(cfg, model, torch.device("cpu"), progress=False, val_losses=True)
    seen = [c.args[0] for c in calls]  # the model each evaluation ran
    assert seen[0].head.branches == ("one2one",) and seen[0].head.dropped_branches == ("one2many",)
    assert seen[1].head.branches == ("one2many", "one2one")
    assert {"val/loss_cls", "val/loss_o2o_cls"} <= with_losses.metrics.keys()
    assert model.head.branches == ("one2many", "one2one")  # the model evaluated keeps both
    # the same detections from the one-to-one branch either way
    key = sorted((r["image_id"], r["category_id"], r["score"]) for r in pruned.results)
    assert key and key == sorted((r["image_id"], r["category_id"], r["score"]) for r in with_losses.results)
