"""Per-iteration learning-rate and momentum schedules: linear warm-up, then cosine, step or linear decay.

The config names the schedule as a lazy call in its own section (the trainer adds the run's length)::

    schedule = dict(lr=L(LRSchedule)(policy="cosine", min_lr_ratio=0.05, warmup_epochs=3.0), ...)

The learning rate at global iteration ``i`` (0-based, counted in loader iterations) is::

    lr(i) = base_lr * f(i) * w(i)
    f(i)  = cosine: r + (1 - r) * (1 + cos(pi * i / T)) / 2        (r = min_lr_ratio, T = total_iters)
            linear: 1 - (1 - r) * i / T
            step:   gamma ** (number of steps s with i >= s * iters_per_epoch)   (steps in epochs)
    w(i)  = warmup_ratio + (1 - warmup_ratio) * i / W   for i < W (W: the warm-up's iterations), else 1

With ``warmup_bias_lr`` set (YOLOv5), the ``"bias"`` parameter group instead goes linearly from
``warmup_bias_lr`` down to ``base_lr * f(i)`` over the warm-up; with ``warmup_momentum`` set,
momentum (SGD) / beta1 (Adam) goes linearly from it up to the group's own over the warm-up.

YOLOv5's and Ultralytics' loop, option by option (the YOLOv8 / YOLOv5 recipes set them):

* ``decay_unit="epoch"``: ``f`` of the epoch, ``i`` and ``T`` counted in epochs (the LR is constant
  within an epoch after the warm-up, and the warm-up aims at the epoch's factor);
* ``warmup_spare_last_epoch=True``: the warm-up lasts at most ``epochs - 1`` epochs (Ultralytics 8.x);
* ``warmup_accumulate=True``: gradient accumulation ramps from 1 to the nominal one over the warm-up,
  ``a(i) = max(1, round(1 + (A - 1) * i / W))`` for ``i <= W``, and an optimizer step ends a window
  when ``i - (last step) >= a(i)`` (:meth:`LRSchedule.ends_window`; the trainer also steps at each
  epoch's end).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch

from detkit.schema import SettingError

__all__ = ["DECAY_UNITS", "LR_POLICIES", "LRSchedule", "warmup_length"]

LR_POLICIES = ("cosine", "step", "linear")
DECAY_UNITS = ("iteration", "epoch")


def warmup_length(iters_per_epoch: int, warmup_epochs: float, warmup_iters: int | None, min_warmup_iters: int) -> int:
    """Warm-up iterations: ``warmup_iters`` when given, else ``warmup_epochs`` epochs but at least
    ``min_warmup_iters`` iterations (none when ``warmup_epochs`` is 0)."""
    if warmup_iters is not None:
        return warmup_iters
    if warmup_epochs <= 0:
        return 0
    return max(round(warmup_epochs * iters_per_epoch), min_warmup_iters)


def _argument_problems(args: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(argument, what is wrong)`` for every out-of-range argument of :class:`LRSchedule` in ``args``
    (the ones given; NaN fails every check)."""
    problems = []
    ranges = (("min_lr_ratio", 0.0, 1.0), ("warmup_ratio", 0.0, 1.0), ("gamma", 0.0, math.inf),
              ("warmup_epochs", 0.0, math.inf), ("min_warmup_iters", 0, math.inf), ("warmup_iters", 0, math.inf),
              ("warmup_bias_lr", 0.0, math.inf))
    for name, low, high in ranges:
        value = args.get(name)
        if isinstance(value, (int, float)) and not (low <= value <= high and math.isfinite(value)):
            bound = f"in [{low}, {high}]" if math.isfinite(high) else f"a finite number >= {low}"
            problems.append((name, f"must be {bound}, got {value}"))
    if args.get("gamma") == 0:
        problems.append(("gamma", f"must be > 0, got {args['gamma']}"))
    momentum = args.get("warmup_momentum")
    if isinstance(momentum, (int, float)) and not 0.0 <= momentum < 1.0:
        problems.append(("warmup_momentum", f"must be in [0, 1) or None, got {momentum}"))
    unit = args.get("decay_unit")
    if isinstance(unit, str) and unit not in DECAY_UNITS:
        problems.append(("decay_unit", f"must be one of {', '.join(DECAY_UNITS)}, got {unit!r}"))
    steps = args.get("steps")
    if isinstance(steps, (list, tuple)) and any(isinstance(s, (int, float)) and s < 0 for s in steps):
        problems.append(("steps", f"must be epochs >= 0, got {tuple(steps)}"))
    return problems


class LRSchedule:
    """Sets every parameter group's ``lr`` (and momentum during warm-up) for an iteration.

    A config gives every argument but the run's length, which the trainer adds when it builds the
    schedule: ``instantiate(cfg.schedule.lr, total_iters=..., iters_per_epoch=...)``.

    Args:
        total_iters: iterations of the whole run (epochs * iterations per epoch).
        iters_per_epoch: to turn ``steps`` and ``warmup_epochs`` (epochs) into iterations.
        policy: ``"cosine"``, ``"step"`` or ``"linear"``.
        min_lr_ratio: final LR / base LR for cosine and linear.
        steps: epochs at which ``step`` multiplies the LR by ``gamma``.
        gamma: the step factor.
        warmup_epochs: epochs of linear warm-up (at least ``min_warmup_iters`` iterations; 0: none).
        warmup_iters: iterations of linear warm-up; wins over ``warmup_epochs`` when given.
        min_warmup_iters: the shortest warm-up given in epochs.
        warmup_ratio: LR factor at iteration 0 of the warm-up.
        warmup_bias_lr: absolute start LR of the ``"bias"`` group during warm-up, or None.
        warmup_momentum: momentum at iteration 0 of the warm-up, or None to leave momentum alone.
        decay_unit: ``"iteration"`` (the factor ``f`` moves every iteration) or ``"epoch"`` (once per
            epoch, as YOLOv5's and Ultralytics' ``LambdaLR``; cosine / linear count ``T`` in epochs).
        warmup_spare_last_epoch: cap ``warmup_epochs`` at ``epochs - 1`` (Ultralytics 8.x) before
            ``min_warmup_iters`` applies.
        warmup_accumulate: ramp gradient accumulation from 1 over the warm-up (:meth:`accumulation`,
            :meth:`ends_window`; YOLOv5 / Ultralytics).

    Raises:
        ValueError: an argument out of range (from a config: a ConfigError naming the key, when it loads).
    """

    def __init__(
        self,
        total_iters: int,
        iters_per_epoch: int = 1,
        policy: Literal["cosine", "step", "linear"] = "cosine",
        min_lr_ratio: float = 0.05,
        steps: Sequence[int] = (),
        gamma: float = 0.1,
        warmup_epochs: float = 3.0,
        warmup_iters: int | None = None,
        min_warmup_iters: int = 100,
        warmup_ratio: float = 0.001,
        warmup_bias_lr: float | None = None,
        warmup_momentum: float | None = None,
        decay_unit: Literal["iteration", "epoch"] = "iteration",
        warmup_spare_last_epoch: bool = False,
        warmup_accumulate: bool = False,
    ) -> None:
        if policy not in LR_POLICIES:
            raise ValueError(f"LRSchedule policy {policy!r} is not supported; accepted: {', '.join(LR_POLICIES)}")
        if total_iters < 1 or iters_per_epoch < 1:
            raise ValueError(f"total_iters and iters_per_epoch must be >= 1, got {total_iters}, {iters_per_epoch}")
        problems = _argument_problems(dict(min_lr_ratio=min_lr_ratio, steps=steps, gamma=gamma,
                                           warmup_epochs=warmup_epochs, warmup_iters=warmup_iters,
                                           min_warmup_iters=min_warmup_iters, warmup_ratio=warmup_ratio,
                                           warmup_bias_lr=warmup_bias_lr, warmup_momentum=warmup_momentum,
                                           decay_unit=decay_unit))
        if problems:
            raise ValueError("; ".join(f"{name} {message}" for name, message in problems))
        self.total_iters = total_iters
        self.policy = policy
        self.iters_per_epoch = iters_per_epoch
        self.min_lr_ratio = min_lr_ratio
        self.steps = sorted(int(s) for s in steps)
        self.gamma = gamma
        self.decay_unit = decay_unit
        self.epochs = max(total_iters // iters_per_epoch, 1)  # the run's epochs (decay_unit="epoch", the cap)
        if warmup_spare_last_epoch:
            warmup_epochs = min(warmup_epochs, max(self.epochs - 1, 0))
        self.warmup_iters = warmup_length(iters_per_epoch, warmup_epochs, warmup_iters, min_warmup_iters)
        self.warmup_accumulate = warmup_accumulate
        # accumulation -> (the iterations <= warmup_iters that end a window, the last of them)
        self._window_ends: dict[int, tuple[set[int], int]] = {}
        self.warmup_ratio = warmup_ratio
        self.warmup_bias_lr = warmup_bias_lr
        self.warmup_momentum = warmup_momentum
        self.last_iter = -1

    @classmethod
    def check_config_arguments(cls, arguments: Mapping[str, Any], key: str) -> None:
        """The range checks of the constructor on a config's lazy call, when the config loads
        (:func:`detkit.config_checks.check_call_arguments`): a :class:`~detkit.schema.SettingError` naming the key."""
        for name, message in _argument_problems(arguments):
            raise SettingError(f"{key}.{name}", message)

    def factor(self, it: int) -> float:
        """The decay factor ``f(it)`` (warm-up not included); with ``decay_unit="epoch"`` that of ``it``'s epoch."""
        if self.decay_unit == "epoch":
            t, total = min(max(it, 0) // self.iters_per_epoch, self.epochs), self.epochs
        else:
            t, total = min(max(it, 0), self.total_iters), self.total_iters
        r = self.min_lr_ratio
        if self.policy == "cosine":
            return r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * t / total))
        if self.policy == "linear":
            return 1.0 - (1.0 - r) * t / total
        passed = sum(1 for s in self.steps if it >= s * self.iters_per_epoch)
        return self.gamma**passed

    def warmup_progress(self, it: int) -> float | None:
        """``it / warmup_iters`` during the warm-up, None after it."""
        return it / self.warmup_iters if it < self.warmup_iters else None

    def lr(self, it: int, base_lr: float, group: str = "") -> float:
        """The LR of a group named ``group`` with base ``base_lr`` at iteration ``it``."""
        target = base_lr * self.factor(it)
        alpha = self.warmup_progress(it)
        if alpha is None:
            return target
        if group == "bias" and self.warmup_bias_lr is not None:
            return self.warmup_bias_lr + (target - self.warmup_bias_lr) * alpha
        return target * (self.warmup_ratio + (1.0 - self.warmup_ratio) * alpha)

    def momentum(self, it: int, base_momentum: float) -> float:
        """Momentum at iteration ``it`` (the warm-up ramp when ``warmup_momentum`` is set)."""
        alpha = self.warmup_progress(it)
        if alpha is None or self.warmup_momentum is None:
            return base_momentum
        return self.warmup_momentum + (base_momentum - self.warmup_momentum) * alpha

    def accumulation(self, it: int, accumulate: int) -> int:
        """Iterations per optimizer step at ``it`` for a nominal ``accumulate``: ``accumulate``, or during a
        ``warmup_accumulate`` warm-up (``it <= warmup_iters``) ``max(1, round(1 + (accumulate - 1) * it / W))``
        (Python's round: halves to even, as numpy's)."""
        if not self.warmup_accumulate or not self.warmup_iters or it > self.warmup_iters:
            return accumulate
        return max(1, round(1.0 + (accumulate - 1) / self.warmup_iters * it))

    def ends_window(self, it: int, accumulate: int) -> bool:
        """Whether iteration ``it`` ends an accumulation window (an optimizer step follows its backward):
        every ``accumulate``-th iteration (``(it + 1) % accumulate == 0``), or with ``warmup_accumulate``
        the iterations where ``it - (the last one) >= accumulation(it)``, the first at ``it = 0`` (stateless:
        the warm-up's window ends are worked out once, so a resumed run agrees)."""
        if not self.warmup_accumulate or not self.warmup_iters:
            return (it + 1) % accumulate == 0
        known = self._window_ends.get(accumulate)
        if known is None:
            ends, last = set(), -1
            for i in range(self.warmup_iters + 1):
                if i - last >= self.accumulation(i, accumulate):
                    ends.add(i)
                    last = i
            known = self._window_ends[accumulate] = (ends, last)
        ends, last = known
        if it <= self.warmup_iters:
            return it in ends
        return (it - last) % accumulate == 0

    def step(self, optimizer: torch.optim.Optimizer, it: int) -> None:
        """Set ``lr`` and momentum of every group of ``optimizer`` for iteration ``it``.

        Groups need ``initial_lr`` (and ``initial_momentum`` for the momentum ramp), as
        :func:`detkit.engine.optim.build_optimizer` sets them.
        """
        for g in optimizer.param_groups:
            g["lr"] = self.lr(it, g["initial_lr"], g.get("name", ""))
            if "initial_momentum" in g:
                m = self.momentum(it, g["initial_momentum"])
                if "betas" in g:
                    g["betas"] = (m, g["betas"][1])
                elif "momentum" in g:
                    g["momentum"] = m
        self.last_iter = it

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.last_iter = int(state["last_iter"])
