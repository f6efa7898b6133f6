"""The evaluation (trainer, ``detkit test``, ablation) runs a fused copy: same metrics, the model untouched."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from detkit.config import instantiate, load_config
from detkit.engine import inference
from detkit.engine.evaluate import evaluate
from detkit.models.memory_format import is_channels_last
from tests.fixtures.spies import record_calls

ROOT = Path(__file__).resolve().parents[2]
SHAPES = str(ROOT / "tests" / "engine" / "configs" / "shapes_tiny.py")
COCO_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")


def test_evaluation_fused_and_unfused_give_the_same_metrics_and_leave_the_model(monkeypatch):
    cfg = load_config(SHAPES, ["model.head.score_thr=0.0"])
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    with torch.no_grad():  # BatchNorm statistics that are not the identity, so the fold changes the weights
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
                m.running_mean.uniform_(-0.1, 0.1)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls = record_calls(monkeypatch, inference, "evaluate_dataset")
    fused = evaluate(cfg, model, torch.device("cpu"), progress=False, val_losses=True)
    plain = evaluate(cfg, model, torch.device("cpu"), progress=False, val_losses=True, fuse=False)
    seen = [c.args[0] for c in calls]  # the model each evaluation ran
    assert seen[0] is not model and seen[1] is model
    assert not any(isinstance(m, nn.BatchNorm2d) for m in seen[0].modules())
    assert is_channels_last(seen[0]) and not is_channels_last(model)  # on the CPU the fused copy runs NHWC
    assert plain.results  # detections to score
    # an untrained model's scores nearly tie, so which of them a cap of 1 / 10 / 100 keeps may differ (the fused
    # channels_last copy's outputs are within 4.3e-6 of the model's, of magnitude 4.6): AP agrees closely, recall
    # at the caps within 2e-2 (AR100 measured 0.038 vs 0.051), each image's best detection and the (continuous)
    # losses within fp32 rounding
    for key in COCO_KEYS:
        assert abs(fused.metrics[key] - plain.metrics[key]) <= (2e-2 if key.startswith("AR") else 5e-3), key
    for image in {r["image_id"] for r in plain.results}:
        best = max((r for r in plain.results if r["image_id"] == image), key=lambda r: r["score"])
        best_fused = max((r for r in fused.results if r["image_id"] == image), key=lambda r: r["score"])
        assert abs(best["score"] - best_fused["score"]) <= 1e-5
        assert max(abs(a - b) for a, b in zip(best["bbox"], best_fused["bbox"])) <= 1e-2
    assert any(k.startswith("val/") for k in plain.metrics)
    for key in (k for k in plain.metrics if k.startswith("val/")):
        assert abs(fused.metrics[key] - plain.metrics[key]) <= 1e-4 * max(1.0, abs(plain.metrics[key])), key
    assert model.training  # its mode, parameters and BatchNorm statistics as they were
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)
