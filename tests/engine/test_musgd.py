"""MuSGD (YOLO26's optimizer), its parameter groups and ``optimizer="auto"`` (Ultralytics' choice)."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from detkit.config import L, load_config
from detkit.engine import optim
from detkit.engine.checkpoint import load_checkpoint
from detkit.engine.musgd import MuSGD, muon_shape_factor, tall_orientation
from detkit.engine.optim import (
    auto_optimizer,
    auto_optimizer_steps,
    build_optimizer,
    check_optimizer_call,
    class_branch_parameters,
    param_groups,
)
from detkit.engine.trainer import Trainer
from tests.fixtures.runs import train_losses

CFG = Path(__file__).parent / "configs" / "tiny.py"
A, B, C = 3.4445, -4.7750, 2.0315  # Muon's quintic coefficients
BF16_TOL = 0.04  # Newton-Schulz runs in bfloat16: its result is within this of the exact iteration


def slow_newton_schulz(g: torch.Tensor) -> torch.Tensor:
    """Five quintic Newton-Schulz iterations in float64 on ``g`` flattened to (rows, -1), back to its shape."""
    x = g.double().reshape(g.shape[0], -1)
    x = x / x.norm()
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    for _ in range(5):
        gram = x @ x.T
        x = A * x + (B * gram + C * gram @ gram) @ x
    return (x.T if tall else x).reshape(g.shape)


def muon_only(params: list[nn.Parameter], lr: float, momentum: float, nesterov: bool = True) -> MuSGD:
    """A MuSGD whose SGD step is off (``sgd=0``), so that a step is the Muon step alone."""
    return MuSGD([{"params": params, "use_muon": True}], lr=lr, momentum=momentum, nesterov=nesterov, muon=1.0,
                 sgd=0.0)


def test_muon_step_on_a_hand_made_2x2_weight():
    # diag(3, 4): singular values 0.6, 0.8 after the Frobenius normalisation; each goes through
    # p(s) = a s + b s^3 + c s^5 five times; momentum 0 and no nesterov: the update is NS(g) itself
    w = nn.Parameter(torch.zeros(2, 2))
    w.grad = torch.diag(torch.tensor([3.0, 4.0]))
    opt = muon_only([w], lr=1.0, momentum=0.0, nesterov=False)
    opt.step()

    def p5(s: float) -> float:
        for _ in range(5):
            s = A * s + B * s**3 + C * s**5
        return s

    expected = -torch.diag(torch.tensor([p5(0.6), p5(0.8)]))  # 0.7229, 1.1192
    assert torch.allclose(w.detach(), expected, atol=BF16_TOL)
    assert w[0, 1].item() == 0.0 and w[1, 0].item() == 0.0  # zeros stay zero through the iteration


@pytest.mark.parametrize("shape", [(4, 2, 3, 3), (6, 2, 1, 1), (5, 7)])
def test_muon_step_on_4d_and_2d_weights_against_a_slow_reference(shape):
    torch.manual_seed(0)
    w0 = torch.randn(shape)
    w = nn.Parameter(w0.clone())
    opt = muon_only([w], lr=0.1, momentum=0.9)
    grads = [torch.randn(shape) for _ in range(2)]
    buffer = torch.zeros(shape)
    expected = w0.double()
    for g in grads:
        w.grad = g.clone()
        opt.step()
        buffer = 0.9 * buffer + 0.1 * g  # Muon's EMA, then the nesterov mix
        update = slow_newton_schulz(0.9 * buffer + 0.1 * g)
        expected = expected - 0.1 * muon_shape_factor(shape) * update
    assert torch.allclose(w.detach().double(), expected, atol=0.1 * 2 * BF16_TOL)
    assert not torch.allclose(w.detach(), w0, atol=0.05)  # it moved, by about lr per step


def test_shape_factor_is_ultralytics_last_two_dims():
    assert muon_shape_factor((128, 32)) == 2.0  # a linear weight: sqrt(out / in)
    assert muon_shape_factor((32, 128)) == 1.0
    assert muon_shape_factor((256, 64, 1, 1)) == 1.0  # a conv filter: its kernel's rows / columns, not channels
    assert muon_shape_factor((3, 3, 5, 3)) == pytest.approx(math.sqrt(5 / 3))


def test_tall_orientation_follows_ultralytics_stacks():
    cpu, f32 = torch.device("cpu"), torch.float32
    m = lambda rows, cols, factor=1.0: (rows, cols, factor, cpu, f32)  # noqa: E731
    assert tall_orientation([m(32, 32)]) == [False]  # square, alone: as it is
    assert tall_orientation([m(32, 32), m(64, 32)]) == [True, True]  # stacked with a taller one: padded to 64 rows
    assert tall_orientation([m(32, 32), m(64, 32, 2.0)]) == [False, True]  # another shape factor: another stack
    assert tall_orientation([m(64, 32), m(2, 32)]) == [True, False]  # under 1/16 of 64 rows: a stack of its own
    assert tall_orientation([m(64, 32), m(4, 32)]) == [True, True]


def test_a_stacked_square_matrix_takes_the_transposed_side():
    # (32, 32) beside a (64, 32, 1, 1) filter (same columns and shape factor) is orthogonalised as
    # Ultralytics' padded stack is: through its transpose
    torch.manual_seed(1)
    g = torch.randn(32, 32)
    alone, stacked = nn.Parameter(torch.zeros(32, 32)), nn.Parameter(torch.zeros(32, 32))
    other = nn.Parameter(torch.zeros(64, 32, 1, 1))
    alone.grad, stacked.grad, other.grad = g.clone(), g.clone(), torch.randn(64, 32, 1, 1)
    muon_only([alone], lr=1.0, momentum=0.0, nesterov=False).step()
    muon_only([stacked, other], lr=1.0, momentum=0.0, nesterov=False).step()
    from torch.optim._muon import _zeropower_via_newtonschulz as ns

    assert torch.equal(alone.detach(), -ns(g, (A, B, C), 5, 1e-7).float())
    padded = torch.cat([g, torch.zeros(32, 32)])  # Ultralytics' stack: zero rows up to the 64 of the other
    assert torch.equal(stacked.detach(), -ns(padded, (A, B, C), 5, 1e-7).float()[:32])
    assert not torch.equal(alone, stacked)  # the two sides round differently in bfloat16


def test_plain_groups_get_sgd_and_muon_zero_leaves_sgd():
    torch.manual_seed(2)
    shapes = [(4, 3, 3, 3), (4,), (2, 4)]
    ours = [nn.Parameter(torch.randn(s)) for s in shapes]
    muon_off = [nn.Parameter(p.detach().clone()) for p in ours]
    ref = [nn.Parameter(p.detach().clone()) for p in ours]
    opt = MuSGD(ours, lr=0.05, momentum=0.9, weight_decay=1e-3, nesterov=True)  # use_muon False: SGD
    opt_muon_off = MuSGD([{"params": muon_off[::2], "use_muon": True}, {"params": muon_off[1:2]}], lr=0.1,
                         momentum=0.9, weight_decay=1e-3, muon=0.0, sgd=0.5)  # the SGD step at 0.1 * 0.5
    sgd = torch.optim.SGD(ref, lr=0.05, momentum=0.9, weight_decay=1e-3, nesterov=True)
    opt_muon_off.param_groups[1]["lr"] = 0.05
    for _ in range(3):
        for a, b, c in zip(ours, muon_off, ref):
            a.grad = torch.randn(a.shape)
            b.grad, c.grad = a.grad.clone(), a.grad.clone()
        opt.step()
        opt_muon_off.step()
        sgd.step()
    for a, b, c in zip(ours, muon_off, ref):
        assert torch.equal(a, c) and torch.equal(b, c)


def test_state_dict_round_trip_resumes_the_same_steps():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    call = L(MuSGD)(lr=0.02, momentum=0.9, weight_decay=5e-4)
    opt = build_optimizer(model, call)
    twin = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))

    def step(m: nn.Module, o: torch.optim.Optimizer, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        for p in m.parameters():
            p.grad = torch.randn(p.shape, generator=gen)
        o.step()

    step(model, opt, 0)
    step(model, opt, 1)
    twin.load_state_dict(model.state_dict())
    resumed = build_optimizer(twin, call)
    resumed.load_state_dict(copy.deepcopy(opt.state_dict()))  # as from a file: no buffer shared with opt
    assert set(resumed.state[twin[0].weight]) == {"momentum_buffer", "muon_momentum_buffer"}
    for seed in (2, 3):
        step(model, opt, seed)
        step(twin, resumed, seed)
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_musgd_refuses_vectors_in_a_muon_group_and_bad_arguments():
    with pytest.raises(ValueError, match="shape \\(4,\\).*2 dims or more"):
        MuSGD([{"params": [nn.Parameter(torch.zeros(4))], "use_muon": True}])
    with pytest.raises(ValueError, match="momentum must be in"):
        MuSGD([nn.Parameter(torch.zeros(2, 2))], momentum=1.0)


class _Head(nn.Module):
    """The parts of a DecoupledHead that the groups look at: class and box branches, a one-to-one copy."""

    def __init__(self) -> None:
        super().__init__()
        self.cls_convs = nn.ModuleList([nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4))])
        self.cls_preds = nn.ModuleList([nn.Conv2d(4, 3, 1)])
        self.box_preds = nn.ModuleList([nn.Conv2d(4, 4, 1)])
        self.one2one_branch = nn.ModuleDict(dict(cls_preds=nn.ModuleList([nn.Conv2d(4, 3, 1)])))


class _Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4))
        self.fc = nn.Linear(4, 4)
        self.scale = nn.Parameter(torch.ones(1, 4, 1))  # 3-D, neither a norm nor a bias: decay, SGD
        self.head = _Head()


def test_musgd_groups_of_a_tiny_model():
    model = _Model()
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    head = model.head
    boosted = ids([*head.cls_convs.parameters(), *head.cls_preds.parameters(),
                   *head.one2one_branch.parameters()])
    assert class_branch_parameters(model) == boosted
    opt = build_optimizer(model, L(MuSGD)(lr=0.01, momentum=0.9, weight_decay=5e-4), weight_decay_scale=0.5)
    got = {(g["name"], g.get("class_branch", False)): g for g in opt.param_groups}
    assert list(got) == [("decay", False), ("norm", False), ("bias", False), ("muon", False),
                         ("norm", True), ("bias", True), ("muon", True)]  # empty groups left out
    assert ids(got["muon", False]["params"]) == ids([model.stem[0].weight, model.fc.weight,
                                                     head.box_preds[0].weight])
    assert ids(got["muon", True]["params"]) == ids([head.cls_convs[0][0].weight, head.cls_preds[0].weight,
                                                    head.one2one_branch["cls_preds"][0].weight])
    assert ids(got["decay", False]["params"]) == {id(model.scale)}
    assert ids(got["norm", True]["params"]) == ids([head.cls_convs[0][1].weight])
    assert ids(got["bias", False]["params"]) == ids([model.stem[1].bias, model.fc.bias, head.box_preds[0].bias])
    for (name, boost), g in got.items():
        assert g["lr"] == g["initial_lr"] == (0.03 if boost else 0.01)
        assert g["use_muon"] is (name == "muon") and g["initial_momentum"] == 0.9
        assert g["weight_decay"] == (2.5e-4 if name in ("decay", "muon") else 0.0)
    # every other optimizer keeps the three groups, no muon group, no class-branch split
    sgd = build_optimizer(model, L(torch.optim.SGD)(lr=0.01, momentum=0.9))
    assert [g["name"] for g in sgd.param_groups] == ["decay", "norm", "bias"]
    assert [g["name"] for g in param_groups(model, 0.0)] == ["decay", "norm", "bias"]


def test_auto_resolution_both_ways_with_the_fitted_lr():
    assert auto_optimizer_steps(117_266, 16, 64, 100) == 1833 * 100  # COCO: batches of 64 (the nominal batch)
    assert auto_optimizer_steps(100, 128, 64, 3) == 3  # a batch above the nominal one counts itself
    musgd = auto_optimizer(10_001, 80)
    assert musgd["_target_"] is MuSGD and (musgd["lr"], musgd["momentum"], musgd["nesterov"]) == (0.01, 0.9, True)
    assert (musgd["muon"], musgd["sgd"], musgd["weight_decay"]) == (0.2, 1.0, 5e-4)
    adamw = auto_optimizer(10_000, 80)
    assert adamw["_target_"] is torch.optim.AdamW and adamw["lr"] == 0.000119  # round(0.01 / 84, 6)
    assert adamw["betas"] == (0.9, 0.999) and adamw["weight_decay"] == 5e-4
    assert auto_optimizer(500, 3)["lr"] == 0.001429  # round(0.01 / 7, 6)
    assert check_optimizer_call("auto") == "auto"
    with pytest.raises(ValueError, match='"auto" is resolved by the trainer'):
        build_optimizer(_Model(), "auto")  # type: ignore[arg-type]


def _weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.detector.state_dict().items() if v.is_floating_point()}


@pytest.mark.parametrize("optimizer", ["MuSGD(lr=0.01, momentum=0.9, weight_decay=5e-4)", "'auto'"])
def test_one_epoch_with_musgd_and_auto(tmp_path, optimizer):
    overrides = [f"train.optimizer={optimizer}", "train.epochs=1", "train.eval_interval=0"]
    cfg = load_config(CFG, overrides)
    trainer = Trainer(cfg, work_dir=tmp_path)
    before = _weights(trainer)
    if optimizer == "'auto'":  # 8 images / max(2, nominal 4) x 1 epoch: 2 steps, 2 classes -> AdamW
        assert trainer.optimizer_auto == {"optimizer_steps": 2, "num_classes": 2}
        assert isinstance(trainer.optimizer, torch.optim.AdamW)
        assert trainer.optimizer.param_groups[0]["initial_lr"] == round(0.01 / 6, 6)
        assert trainer.schedule.warmup_bias_lr == 0.0  # Ultralytics' auto: the biases warm up from 0
        assert "optimizer auto: 2 optimizer steps, 2 classes: AdamW(lr=0.001667" in (tmp_path / "train.log").read_text()
    else:
        assert isinstance(trainer.optimizer, MuSGD)
        assert any(g.get("use_muon") and g["params"] for g in trainer.optimizer.param_groups)
    trainer.train()
    losses = train_losses(tmp_path)
    assert len(losses) == 4 and all(math.isfinite(v) for rec in losses.values() for v in rec.values())
    after = _weights(trainer)
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_resume_keeps_the_auto_choice(tmp_path, monkeypatch):
    monkeypatch.setattr(optim, "AUTO_MUSGD_STEPS", 3)  # 8 images, 2 epochs: 4 steps -> MuSGD
    first = Trainer(load_config(CFG, ["train.optimizer='auto'", "train.eval_interval=0"]), work_dir=tmp_path / "a")
    assert isinstance(first.optimizer, MuSGD)
    first.train()
    ckpt = load_checkpoint(tmp_path / "a" / "epoch_1.pth")
    assert ckpt["optimizer_auto"] == {"optimizer_steps": 4, "num_classes": 2}
    # 4 images now (--resume-anyway): a fresh choice would be AdamW (2 steps); the run keeps MuSGD
    cfg = load_config(CFG, ["train.optimizer='auto'", "train.eval_interval=0", "data.train.dataset.n=4"])
    resumed = Trainer(cfg, work_dir=tmp_path / "b", resume=str(tmp_path / "a" / "epoch_1.pth"),
                      resume_anyway=True)
    assert isinstance(resumed.optimizer, MuSGD) and resumed.stepper.optimizer is resumed.optimizer
    assert resumed.optimizer_auto == {"optimizer_steps": 4, "num_classes": 2}
    resumed.train()
    assert resumed.epoch == 2


def test_warm_up_of_musgd_groups():
    # the muon group warms up like every weight group, the class-branch copies from their 3x LR, the biases
    # from warmup_bias_lr; every group's momentum (Muon's EMA factor and SGD's) from warmup_momentum
    from detkit.engine.schedules import LRSchedule

    opt = build_optimizer(_Model(), L(MuSGD)(lr=0.01, momentum=0.9))
    schedule = LRSchedule(total_iters=100, iters_per_epoch=10, policy="linear", min_lr_ratio=0.01, warmup_epochs=3.0,
                          min_warmup_iters=0, warmup_ratio=0.0, warmup_bias_lr=0.1, warmup_momentum=0.8)
    schedule.step(opt, 15)  # half of the 30 warm-up iterations; linear factor 1 - 0.99 * 15 / 100
    target = 1 - 0.99 * 0.15
    for g in opt.param_groups:
        base = 0.03 if g.get("class_branch") else 0.01
        want = 0.1 + (base * target - 0.1) * 0.5 if g["name"] == "bias" else base * target * 0.5
        assert g["lr"] == pytest.approx(want, rel=1e-12) and g["momentum"] == pytest.approx(0.85)
    schedule.step(opt, 30)  # warm-up over
    for g in opt.param_groups:
        base = 0.03 if g.get("class_branch") else 0.01
        assert g["lr"] == pytest.approx(base * (1 - 0.99 * 0.3), rel=1e-12) and g["momentum"] == 0.9


def test_yolo26_schedule_is_ultralytics_auto_on_coco():
    cfg = load_config(Path(__file__).parents[2] / "configs" / "common" / "schedules" / "yolo26.py")
    call = cfg.train.optimizer
    assert call["_target_"] is MuSGD
    assert {k: v for k, v in call.items() if k != "_target_"} == dict(
        lr=0.01, momentum=0.937, weight_decay=5e-4, nesterov=True, muon=0.2, sgd=1.0)
    assert (cfg.train.epochs, cfg.train.nominal_batch, cfg.train.loss_scale) == (100, 64, "batch")
    lr = {k: v for k, v in cfg.schedule.lr.items() if k != "_target_"}
    assert lr == dict(policy="linear", min_lr_ratio=0.01, warmup_epochs=3.0, min_warmup_iters=0, warmup_ratio=0.0,
                      warmup_bias_lr=0.0, warmup_momentum=0.8)
    assert cfg.schedule.no_mosaic_last_epochs == 10
