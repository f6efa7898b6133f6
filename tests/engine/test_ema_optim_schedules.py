"""EMA math, parameter groups, LR/momentum schedule values at hand-computed iterations."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from detkit.config import ConfigError, L
from detkit.engine.ema import ModelEMA
from detkit.engine.optim import build_optimizer, param_groups
from detkit.engine.schedules import LRSchedule


def test_ema_follows_the_ramped_decay():
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1))
    with torch.no_grad():
        model[0].weight.fill_(0.0)
    ema = ModelEMA(model, decay=0.9, tau=2.0)
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    model[1].num_batches_tracked.fill_(7)
    ema.update(model)
    d1 = 0.9 * (1 - math.exp(-1 / 2.0))
    assert ema.module[0].weight.item() == pytest.approx(1 - d1)
    ema.update(model)
    d2 = 0.9 * (1 - math.exp(-2 / 2.0))
    assert ema.module[0].weight.item() == pytest.approx(d2 * (1 - d1) + (1 - d2))
    assert ema.module[1].num_batches_tracked.item() == 7  # integer buffers copied
    assert ema.updates == 2 and not ema.module[0].weight.requires_grad
    with pytest.raises(ValueError, match="decay"):
        ModelEMA(model, decay=1.5)


def test_param_groups_no_decay_on_norms_and_biases():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1, bias=False), nn.GroupNorm(2, 4))
    groups = {g["name"]: g for g in param_groups(model, 5e-4)}
    ids = lambda g: {id(p) for p in g["params"]}  # noqa: E731
    assert ids(groups["decay"]) == {id(model[0].weight), id(model[2].weight)}
    assert ids(groups["norm"]) == {id(model[1].weight), id(model[3].weight)}
    assert ids(groups["bias"]) == {id(model[0].bias), id(model[1].bias), id(model[3].bias)}
    assert groups["decay"]["weight_decay"] == 5e-4
    assert groups["norm"]["weight_decay"] == 0.0 and groups["bias"]["weight_decay"] == 0.0


def test_build_optimizer_sgd_and_adamw():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    sgd = build_optimizer(model, L(torch.optim.SGD)(lr=0.01, momentum=0.9, weight_decay=1e-4, nesterov=True),
                          weight_decay_scale=0.5)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"]
    assert [g["weight_decay"] for g in sgd.param_groups] == [5e-5, 0.0, 0.0]
    adamw = build_optimizer(model, L(torch.optim.AdamW)(lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["betas"] == (0.9, 0.999)
    assert [g["weight_decay"] for g in adamw.param_groups] == [0.05, 0.0, 0.0]
    rmsprop = build_optimizer(model, L(torch.optim.RMSprop)(lr=0.1))  # any torch.optim class; its default decay (0)
    assert isinstance(rmsprop, torch.optim.RMSprop) and [g["weight_decay"] for g in rmsprop.param_groups] == [0, 0, 0]
    assert [g["initial_momentum"] for g in rmsprop.param_groups] == [0, 0, 0]
    with pytest.raises(ConfigError, match=r"train.optimizer: SGD\(lr=-1\): Invalid learning rate"):
        build_optimizer(model, L(torch.optim.SGD)(lr=-1))


def test_cosine_with_warmup_values():
    s = LRSchedule(total_iters=100, policy="cosine", min_lr_ratio=0.1, warmup_iters=10, warmup_ratio=0.1)
    assert s.lr(0, 1.0) == pytest.approx(1.0 * 0.1)  # f(0)=1, w(0)=0.1
    f5 = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 5 / 100))
    assert s.lr(5, 1.0) == pytest.approx(f5 * (0.1 + 0.9 * 0.5))
    assert s.lr(50, 2.0) == pytest.approx(2.0 * (0.1 + 0.9 * 0.5))  # cos(pi/2)=0
    assert s.lr(100, 1.0) == pytest.approx(0.1)


def test_step_and_linear_values():
    s = LRSchedule(total_iters=120, policy="step", iters_per_epoch=10, steps=[8, 11], gamma=0.1, warmup_epochs=0)
    assert [s.lr(i, 1.0) for i in (0, 79, 80, 109, 110)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    lin = LRSchedule(total_iters=10, policy="linear", min_lr_ratio=0.2, warmup_iters=0)
    assert lin.lr(5, 1.0) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="accepted: cosine, step, linear"):
        LRSchedule(total_iters=10, policy="poly")


def test_bias_and_momentum_warmup_set_on_optimizer():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    opt = build_optimizer(model, L(torch.optim.SGD)(lr=0.01, momentum=0.9))
    s = LRSchedule(total_iters=100, policy="linear", min_lr_ratio=1.0, warmup_iters=4, warmup_ratio=0.0,
                   warmup_bias_lr=0.1, warmup_momentum=0.8)
    s.step(opt, 1)  # alpha = 0.25
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["decay"] == pytest.approx(0.01 * 0.25)
    assert lrs["bias"] == pytest.approx(0.1 + (0.01 - 0.1) * 0.25)
    assert opt.param_groups[0]["momentum"] == pytest.approx(0.8 + 0.1 * 0.25)
    s.step(opt, 4)  # warm-up over
    assert all(g["lr"] == pytest.approx(0.01) and g["momentum"] == pytest.approx(0.9) for g in opt.param_groups)
