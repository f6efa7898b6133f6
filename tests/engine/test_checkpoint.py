"""Checkpoint round trip, atomic writes, rotation, RNG state, weight loading."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from detkit.engine import checkpoint as ck
from detkit.engine.checkpoint import (
    CheckpointManager,
    atomic_save,
    find_latest_checkpoint,
    get_rng_state,
    load_checkpoint,
    set_rng_state,
)
from detkit.engine.ema import ModelEMA
from detkit.engine.weights import load_weights


class Tiny(nn.Module):
    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.cls = nn.Linear(4, classes)


def test_round_trip_with_optimizer_ema_and_rng(tmp_path):
    torch.manual_seed(0)
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss = model.cls(model.backbone(torch.randn(2, 3, 5, 5)).mean((2, 3))).sum()
    loss.backward()
    opt.step()
    ema = ModelEMA(model, decay=0.9)
    ema.update(model)
    state = {"model": model.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
             "epoch": 3, "iter": 17, "rng": get_rng_state(), "config": "train = dict(epochs=3)\n"}
    atomic_save(state, tmp_path / "a.pth")
    back = load_checkpoint(tmp_path / "a.pth")  # weights_only=True inside
    assert back["epoch"] == 3 and back["iter"] == 17 and back["config"].startswith("train")
    for k, v in model.state_dict().items():
        assert torch.equal(back["model"][k], v)
    opt2 = torch.optim.SGD(Tiny().parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(back["optimizer"])
    buf = opt2.state_dict()["state"][0]["momentum_buffer"]
    assert torch.equal(buf, opt.state_dict()["state"][0]["momentum_buffer"])
    assert back["ema"]["updates"] == 1


def test_rng_state_restores_every_generator():
    state = get_rng_state()
    a = (random.random(), float(np.random.rand()), float(torch.rand(())))
    set_rng_state(state)
    b = (random.random(), float(np.random.rand()), float(torch.rand(())))
    assert a == b


def test_failing_write_leaves_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pth"
    atomic_save({"v": torch.tensor([1.0])}, path)

    def broken_save(obj, f):
        f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(ck.torch, "save", broken_save)
    with pytest.raises(ck.OutputWriteError, match="disk full"):  # one line for the user, not an OSError
        atomic_save({"v": torch.tensor([2.0])}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["v"], torch.tensor([1.0]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pth"]  # no temporary left behind


def test_manager_keeps_last_k_and_points_to_latest(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=2)
    for e in range(1, 5):
        mgr.save({"epoch": e}, f"epoch_{e}.pth")
    mgr.save({"epoch": 4, "best": True}, "best.pth")
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["best.pth", "epoch_3.pth", "epoch_4.pth"]
    assert find_latest_checkpoint(tmp_path).name == "epoch_4.pth"
    mgr.save({"epoch": 4, "iter": 9}, "iter_9.pth")
    assert find_latest_checkpoint(tmp_path).name == "iter_9.pth"
    assert find_latest_checkpoint(tmp_path / "nothing") is None
    with pytest.raises(ValueError, match="keep_last"):
        CheckpointManager(tmp_path, keep_last=0)
    with pytest.raises(ValueError, match="not found"):
        load_checkpoint(tmp_path / "missing.pth")


def test_load_weights_prefers_ema_and_skips_shape_mismatch(tmp_path):
    src = Tiny(classes=3)
    ema_sd = {k: torch.full_like(v, 2.0) if v.is_floating_point() else v for k, v in src.state_dict().items()}
    atomic_save({"model": src.state_dict(), "ema": {"module": ema_sd, "updates": 5}}, tmp_path / "c.pth")
    dst = Tiny(classes=5)  # another class count: the classifier is skipped
    report = load_weights(dst, tmp_path / "c.pth")
    assert torch.all(dst.backbone[0].weight == 2.0)
    assert report["shape_mismatch"] == ["cls.bias", "cls.weight"]
    report = load_weights(dst, tmp_path / "c.pth", prefer_ema=False)
    assert torch.equal(dst.backbone[0].weight, src.backbone[0].weight)
    atomic_save({"module.backbone.0.weight": src.backbone[0].weight}, tmp_path / "plain.pth")
    assert load_weights(Tiny(), tmp_path / "plain.pth")["loaded"] == ["backbone.0.weight"]
    atomic_save({"other": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="no parameter matched"):
        load_weights(Tiny(), tmp_path / "bad.pth")


def test_load_weights_torchvision_resnet_into_backbone(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    resnet_mod = pytest.importorskip("detkit.models.backbones.resnet")

    class WithBackbone(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = resnet_mod.ResNet(depth=18)

    torch.manual_seed(0)
    sd = torchvision.models.resnet18(weights=None).state_dict()  # random init, nothing downloaded
    atomic_save(sd, tmp_path / "resnet18.pth")
    model = WithBackbone()
    report = load_weights(model, tmp_path / "resnet18.pth")
    assert torch.equal(model.backbone.conv1.weight, sd["conv1.weight"])
    assert torch.equal(model.backbone.layer4[1].bn2.running_var, sd["layer4.1.bn2.running_var"])
    assert report["unexpected"] == ["fc.bias", "fc.weight"]
