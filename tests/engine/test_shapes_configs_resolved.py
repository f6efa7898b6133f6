"""The YOLO11 / YOLO26 shapes configs and their tiny test twins, resolved: every training key pinned (they share
``common/schedules/shapes_14e.py`` and ``tests/engine/configs/shapes_tiny_overlay.py``; base order matters:
``runtime.py``'s EMA and intervals replace ``shapes_short.py``'s)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from detkit.config import TARGET_KEY, load_config
from detkit.data import ShapesDataset
from detkit.engine.schedules import LRSchedule

ROOT = Path(__file__).resolve().parents[2]
FULL = {"yolo11": ROOT / "configs" / "shapes_yolo11_tal.py", "yolo26": ROOT / "configs" / "shapes_yolo26.py"}
TINY = {"yolo11": ROOT / "tests" / "engine" / "configs" / "shapes_tiny_yolo11_tal.py",
        "yolo26": ROOT / "tests" / "engine" / "configs" / "shapes_tiny_yolo26.py"}

_SGD = {TARGET_KEY: torch.optim.SGD, "lr": 0.02, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": True}
_LR = {TARGET_KEY: LRSchedule, "policy": "cosine", "min_lr_ratio": 0.05, "warmup_iters": 50, "warmup_ratio": 0.01,
       "warmup_bias_lr": None, "warmup_momentum": 0.8}
FULL_TRAIN = {"epochs": 14, "nominal_batch": 16, "optimizer": _SGD, "loss_scale": "batch",
              "ema": {"enabled": True, "decay": 0.9999, "tau": 2000}, "eval_interval": 14, "amp": True,
              "grad_clip": 10.0, "checkpoint": {"keep_last": 3, "interval_iters": 0}, "log_interval": 50, "seed": 0,
              "sync_bn": False}
FULL_SCHEDULE = {"lr": _LR, "no_mosaic_last_epochs": 3}
FULL_RUNTIME = {"device": "auto", "deterministic": False, "progress": True, "dist_backend": None, "plot_interval": 1,
                "loggers": ["tensorboard"]}


@pytest.mark.parametrize("net", sorted(FULL))
def test_shapes_config_training_section(net):
    cfg = load_config(FULL[net])
    assert cfg.train == FULL_TRAIN
    assert cfg.schedule == FULL_SCHEDULE
    assert cfg.runtime == FULL_RUNTIME
    assert cfg.data.img_size == 320 and cfg.data.train.batch_size == 16
    backbone = cfg.model.backbone
    assert (backbone.arch, backbone.scale, backbone.deepen_factor, backbone.widen_factor, backbone.max_channels) == (
        "yolo11" if net == "yolo11" else "yolo26", None, 0.5, 0.125, 1024)
    head = cfg.model.head
    assert (head.cls_channels, head.box_channels, head.bias_init_size, head.nms_iou_thr) == (32, 32, 320, 0.65)


def test_yolo11_and_yolo26_shapes_configs_differ_only_in_the_model():
    a, b = (load_config(FULL[n]) for n in ("yolo11", "yolo26"))
    assert a.keys() == b.keys()
    assert {k: v for k, v in a.items() if k != "model"} == {k: v for k, v in b.items() if k != "model"}


@pytest.mark.parametrize("net", sorted(TINY))
def test_tiny_twin_is_its_config_at_toy_scale(net):
    cfg, full = load_config(TINY[net]), load_config(FULL[net])
    assert cfg.train == {**FULL_TRAIN, "epochs": 2, "nominal_batch": 4, "eval_interval": 1, "amp": False,
                         "checkpoint": {"keep_last": 10, "interval_iters": 1}, "log_interval": 1}
    assert cfg.schedule == {"lr": {**_LR, "warmup_iters": 2}, "no_mosaic_last_epochs": 1}
    assert cfg.runtime == {**FULL_RUNTIME, "device": "cpu", "loggers": [], "progress": False, "plot_interval": 0}
    train, val = cfg.data.train, cfg.data.val
    assert train.dataset[TARGET_KEY] is ShapesDataset and val.dataset[TARGET_KEY] is ShapesDataset
    shapes = {"root": "data/shapes_tiny", "num_train": 8, "num_val": 8, "size": 128, "seed": 0}
    assert {k: train.dataset[k] for k in shapes} == shapes == {k: val.dataset[k] for k in shapes}
    assert (train.dataset.split, train.dataset.cache_size, val.dataset.split) == ("train", 16, "val")
    assert [p[TARGET_KEY].__name__ for p in train.dataset.pipeline] == ["Mosaic", "RandomFlip", "LetterBox"]
    loaders = (train.batch_size, train.num_workers, val.batch_size, val.num_workers, cfg.data.img_size)
    assert loaders == (4, 0, 8, 0, 128)
    # the network is the full config's, its head's bias prior at the toy size
    assert cfg.model.backbone == full.model.backbone and cfg.model.neck == full.model.neck
    assert {k: v for k, v in cfg.model.head.items() if k != "bias_init_size"} == {
        k: v for k, v in full.model.head.items() if k != "bias_init_size"}
    assert cfg.model.head.bias_init_size == 128
