"""detkit's MuSGD against Ultralytics' own (``ultralytics.optim.MuSGD``), groups and steps.

    .venv-bench/bin/python benchmarks/parity_musgd.py [--steps 3] [--scales n]    (or `make parity`)

Each side builds its optimizer with its own builder: Ultralytics' ``BaseTrainer.build_optimizer(model,
name="MuSGD", lr=0.01, momentum=0.9, decay=5e-4)`` (groups: 2-D and 4-D weights -> Muon + SGD with decay,
BatchNorm weights and biases -> SGD without decay, every group split in two with the head's class
branches ``cv3`` / ``one2one_cv3`` at 3x the LR; ``MuSGD(muon=0.2, sgd=1.0)``), detkit's
``detkit.engine.optim.build_optimizer(model, L(MuSGD)(lr=0.01, momentum=0.9, weight_decay=5e-4,
nesterov=True))`` (the trainer's call; weight-decay scale 1 on both sides).

1. A toy model with every kind of parameter (conv filters 3x3 and 1x1 with more rows than columns, two
   of them with the same column count, which Ultralytics orthogonalises as one zero-padded batch, a conv
   with a bias, linear weights wide and tall with biases, BatchNorm 2-D and 1-D): its copy on each
   side, the groups compared, then the same random gradients for ``--steps`` steps with the LR and
   momentum of every group changed between steps as a warm-up changes them (x 0.5, 0.75, 1 of the
   initial LR; momentum 0.8, 0.85, 0.9): every parameter must equal Ultralytics' to 1e-5 (absolute;
   the worst difference and the largest parameter change are printed, to show the steps moved them).
2. A real YOLO26 model (``yolo26{scale}.yaml``, 80 classes): Ultralytics' randomly initialised model and
   detkit's ``configs/yolo26{scale}.py`` holding its converted weights (parameters matched by value,
   as in ``parity_losses_ultralytics.py``): which tensors land in which group with which LR, decay,
   momentum and ``use_muon`` on each side (every parameter's group settings must agree), then the same
   steps on the converted parameters.

ultralytics is installed only in the benchmark venv (``make bench-setup``); exit status 2 without it, 1
when a check fails.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import types

import torch
from parity_common import import_peer, limit_threads, table_header
from torch import Tensor, nn

from detkit.lazy import L

os.environ.setdefault("YOLO_VERBOSE", "False")  # before ultralytics is imported (in the functions below)

TOL = 1e-5
LR, MOMENTUM, DECAY = 0.01, 0.9, 5e-4
LR_RAMP = (0.5, 0.75, 1.0)  # x each group's initial LR, step by step (a warm-up's change)
MOMENTUM_RAMP = (0.8, 0.85, 0.9)
SETTINGS = ("lr", "weight_decay", "momentum", "nesterov", "use_muon")


class Toy(nn.Module):
    """Every kind of parameter MuSGD groups; ``model`` is the layer list Ultralytics' builder reads
    (its last entry stands for the head: no class branch here, so no group is boosted)."""

    def __init__(self) -> None:
        super().__init__()
        self.model = nn.ModuleList([
            nn.Sequential(nn.Conv2d(3, 16, 3, bias=False), nn.BatchNorm2d(16)),  # 3x3 filter, (16, 27)
            nn.Sequential(nn.Conv2d(16, 96, 1, bias=False), nn.BatchNorm2d(96)),  # 1x1: more rows than columns
            nn.Conv2d(16, 32, 1, bias=False),  # 16 columns too: Ultralytics orthogonalises it with the one above
            nn.Conv2d(96, 8, (5, 3), bias=True),  # a conv with a bias, a non-square kernel
            nn.Sequential(nn.Linear(24, 128), nn.BatchNorm1d(128), nn.Linear(128, 10)),  # tall then wide
        ])


def ultralytics_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    """Ultralytics' ``build_optimizer`` for MuSGD (its trainer's arguments are not read for a named optimizer)."""
    from ultralytics.engine.trainer import BaseTrainer

    trainer = types.SimpleNamespace(args=types.SimpleNamespace(lr0=LR, warmup_bias_lr=0.1), data={"nc": 80})
    return BaseTrainer.build_optimizer(trainer, model, name="MuSGD", lr=LR, momentum=MOMENTUM, decay=DECAY)


def detkit_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    from detkit.engine.musgd import MuSGD
    from detkit.engine.optim import build_optimizer

    return build_optimizer(model, L(MuSGD)(lr=LR, momentum=MOMENTUM, weight_decay=DECAY, nesterov=True))


def group_settings(opt: torch.optim.Optimizer, names: dict[int, str]) -> dict[str, tuple]:
    """parameter name -> its group's settings (``lr``, ``weight_decay``, ``momentum``, ``nesterov``,
    ``use_muon``, and the Muon / SGD LR multipliers), ``names`` mapping ``id(param)`` to a common name."""
    out = {}
    for g in opt.param_groups:
        muon = float(g.get("muon", getattr(opt, "muon", 0.0))) if g.get("use_muon") else 0.0
        sgd = float(g.get("sgd", getattr(opt, "sgd", 1.0))) if g.get("use_muon") else 1.0
        settings = tuple(round(float(g.get(k, False)), 12) for k in SETTINGS) + (muon, sgd)
        for p in g["params"]:
            out[names[id(p)]] = settings
    return out


def compare_groups(ultra_opt: torch.optim.Optimizer, ours_opt: torch.optim.Optimizer, ultra_names: dict[int, str],
                   ours_names: dict[int, str]) -> tuple[bool, list[str]]:
    """Per parameter, its group's settings on both sides; rows of a table of the distinct settings."""
    theirs = group_settings(ultra_opt, ultra_names)
    ours = group_settings(ours_opt, ours_names)
    rows = []
    ok = set(theirs) == set(ours)
    if not ok:
        rows.append(f"parameters in one optimizer only: {sorted(set(theirs) ^ set(ours))[:5]}")
    kinds: dict[tuple, list[int]] = {}
    for name in sorted(set(theirs) & set(ours)):
        same = theirs[name] == ours[name]
        ok &= same
        entry = kinds.setdefault((theirs[name], ours[name]), [0])
        entry[0] += 1
    for (t, o), (count,) in sorted(kinds.items(), key=lambda kv: (-kv[0][0][4], kv[0][0][0])):
        lr, wd, mom, nest, use_muon, muon, sgd = t
        rows.append(f"| {'muon' if use_muon else 'sgd'} | {lr:g} | {wd:g} | {mom:g} | {bool(nest)} | "
                    f"{muon:g} / {sgd:g} | {count} | {'same' if t == o else 'DIFFERENT: ' + str(o)} |")
    return ok, rows


def run_steps(ultra: nn.Module, ours: nn.Module, ultra_opt: torch.optim.Optimizer, ours_opt: torch.optim.Optimizer,
              pairs: list[tuple[Tensor, Tensor]], steps: int, seed: int) -> tuple[float, int, float, int]:
    """``steps`` steps from the same gradients; returns the worst |detkit - Ultralytics| over every
    parameter entry, the index in ``pairs`` of its parameter, the largest change of any parameter
    entry (Ultralytics' side) and how many parameters differ at all."""
    start = [u.detach().clone() for u, _ in pairs]
    g = torch.Generator().manual_seed(seed)
    for opt in (ultra_opt, ours_opt):
        for group in opt.param_groups:
            group.setdefault("initial_lr", group["lr"])
    for step in range(steps):
        for opt in (ultra_opt, ours_opt):
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * LR_RAMP[step % len(LR_RAMP)]
                group["momentum"] = MOMENTUM_RAMP[step % len(MOMENTUM_RAMP)]
        for u, o in pairs:
            grad = torch.randn(u.shape, generator=g) * 0.01
            u.grad, o.grad = grad.clone(), grad.clone()
        ultra_opt.step()
        ours_opt.step()
    diffs = [float((u - o).detach().abs().max()) for u, o in pairs]
    worst = max(range(len(diffs)), key=diffs.__getitem__)
    moved = max(float((u.detach() - s).abs().max()) for (u, _), s in zip(pairs, start))
    return diffs[worst], worst, moved, sum(d > 0 for d in diffs)


def check_toy(steps: int) -> tuple[bool, list[str]]:
    torch.manual_seed(0)
    ultra = Toy()
    with torch.no_grad():
        for p in ultra.parameters():
            p.add_(torch.randn(p.shape) * 0.1)
    ours = copy.deepcopy(ultra)
    names_u = {id(p): n for n, p in ultra.named_parameters()}
    names_o = {id(p): n for n, p in ours.named_parameters()}
    ok, rows = compare_groups(ultralytics_optimizer(ultra), detkit_optimizer(ours), names_u, names_o)
    pairs = list(zip(ultra.parameters(), ours.parameters()))
    worst, at, moved, differ = run_steps(ultra, ours, ultralytics_optimizer(ultra), detkit_optimizer(ours), pairs,
                                         steps, 1)
    ok &= worst <= TOL
    rows.append(f"toy model ({len(pairs)} parameters, {differ} differ at all), {steps} steps: worst |detkit - "
                f"Ultralytics| {worst:.1e} ({list(names_u.values())[at]}; largest change of a parameter {moved:.1e}) "
                f"{'ok' if worst <= TOL else 'FAIL'}")
    return ok, rows


def check_yolo26(scale: str, steps: int) -> tuple[bool, list[str]]:
    from parity_losses_ultralytics import convert, detkit_model, key_map, random_ultralytics_model

    ultra = random_ultralytics_model(f"yolo26{scale}", seed=0, num_classes=80)
    ours = detkit_model("yolo26", scale, convert(ultra, "yolo26", scale), num_classes=80)
    names = key_map(ultra, ours)  # detkit name -> Ultralytics name
    ultra_params = dict(ultra.named_parameters())
    names_u = {id(p): n for n, p in ultra.named_parameters()}
    names_o = {id(p): names[n] for n, p in ours.named_parameters()}  # in Ultralytics' names
    ok, rows = compare_groups(ultralytics_optimizer(ultra), detkit_optimizer(ours), names_u, names_o)
    pairs = [(ultra_params[names[n]], p) for n, p in ours.named_parameters()]
    worst, at, moved, differ = run_steps(ultra, ours, ultralytics_optimizer(ultra), detkit_optimizer(ours), pairs,
                                         steps, 2)
    ok &= worst <= TOL
    name = list(names)[at]
    rows.append(f"YOLO26{scale} ({len(pairs)} parameters, {differ} differ at all), {steps} steps: worst |detkit - "
                f"Ultralytics| {worst:.1e} "
                f"({name} = {names[name]}, shape {tuple(pairs[at][0].shape)}; largest change of a parameter "
                f"{moved:.1e}) {'ok' if worst <= TOL else 'FAIL'}")
    return ok, rows


def padding_effect() -> str:
    """Ultralytics' own Newton-Schulz (bfloat16) on a 4 x 16 matrix alone and zero-padded to 64 rows, as its
    ``muon_update`` batches matrices of one column count: the rounding that separates the two optimizers."""
    from ultralytics.optim.muon import zeropower_via_newtonschulz5

    g = torch.randn(1, 4, 16, generator=torch.Generator().manual_seed(0))
    for rows in (8, 16):  # padding that keeps the matrix wide changes nothing
        same = torch.zeros(1, rows, 16)
        same[0, :4] = g[0]
        if not torch.equal(zeropower_via_newtonschulz5(same)[0, :4], zeropower_via_newtonschulz5(g)[0]):
            return f"(Ultralytics' Newton-Schulz of a 4x16 matrix changes when zero-padded to {rows} rows)"
    alone = zeropower_via_newtonschulz5(g).float()[0]
    padded = torch.zeros(1, 64, 16)
    padded[0, :4] = g[0]
    batched = zeropower_via_newtonschulz5(padded).float()[0, :4]
    return (f"Ultralytics orthogonalises the matrices of one column count as one batch zero-padded to its most rows, "
            f"detkit each matrix alone. Zero rows change nothing unless they make a wide matrix tall: the batch is "
            f"then orthogonalised transposed and the matrix alone is not, and bfloat16 rounds the two differently: "
            f"Ultralytics' own Newton-Schulz of a random 4x16 matrix alone vs padded to 64 rows differs by "
            f"{float((alone - batched).abs().max()):.1e} in an entry (largest entry {float(alone.abs().max()):.2f}); "
            f"padded to 16 rows or fewer, by 0.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--scales", nargs="*", default=["n"])
    args = parser.parse_args()
    ultralytics = import_peer("ultralytics")
    if ultralytics is None:
        return 2
    limit_threads()
    print(f"## MuSGD parity with Ultralytics {ultralytics.__version__} (torch {torch.__version__}): lr {LR}, "
          f"momentum {MOMENTUM}, decay {DECAY}, tolerance {TOL:g}\n")
    cases = [("toy", lambda: check_toy(args.steps))]
    cases += [(f"yolo26{s}", lambda s=s: check_yolo26(s, args.steps)) for s in args.scales]
    ok = True
    for name, run in cases:
        try:
            passed, rows = run()
        except ImportError as e:
            print(f"{name}: not available ({e})\n")
            continue
        print(f"### {name}: groups (per distinct setting: Ultralytics' and whether detkit's is the same)\n")
        print(table_header("update", "lr", "weight decay", "momentum", "nesterov", "muon / sgd lr factors",
                           "parameters", "detkit", right=(1, 2, 3, 6)))
        for row in rows:
            print(row if row.startswith("|") else f"\n{row}")
        print()
        ok &= passed
    print(padding_effect())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
