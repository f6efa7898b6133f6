"""The ``train`` and ``runtime`` config sections as typed dataclasses, with defaults and key checks.

    train = dict(
        epochs=300, nominal_batch=64,                    # accumulate gradients up to this batch
        optimizer=dict(type="sgd", lr=0.01, momentum=0.937, weight_decay=5e-4, nesterov=True),
        warmup_epochs=3.0, warmup_iters=None,            # iterations win when both are given
        min_warmup_iters=100, warmup_ratio=0.001, warmup_bias_lr=None, warmup_momentum=None,
        lr_schedule="cosine", min_lr_ratio=0.05, steps=(), gamma=0.1,   # "cosine" | "step" | "linear"
        ema=dict(enabled=True, decay=0.9999, tau=2000),
        amp=True, grad_clip=10.0,                        # grad_clip: max global L2 norm, or None
        max_nonfinite_steps=20,                          # stop after this many non-finite steps in a row
        loss_scale="mean",                               # "mean" | "batch" (YOLOv5: loss x batch, summed)
        multi_scale=None, multi_scale_interval=10,       # multi_scale=(min, max) sides in pixels
        no_mosaic_last_epochs=0,                         # Mosaic/MixUp off for the last N epochs
        assigner_schedule=[],                            # [(epoch, L(Assigner)(...)), ...]
        eval_interval=1, checkpoint=dict(keep_last=3, interval_iters=0),
        log_interval=50, seed=0, sync_bn=False,
        compile=None,                                    # torch.compile mode ("default", ...) or None
    )
    runtime = dict(device="auto", deterministic=False, tensorboard=True, progress=True, dist_backend=None,
                   plot_interval=1)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RuntimeSettings", "TrainSettings"]


def _defaults(kind: str) -> dict[str, Any]:
    return {
        "optimizer": dict(type="sgd", lr=0.01, momentum=0.937, weight_decay=5e-4, nesterov=True),
        "ema": dict(enabled=True, decay=0.9999, tau=2000.0),
        "checkpoint": dict(keep_last=3, interval_iters=0),
    }[kind]


@dataclass
class TrainSettings:
    """Training schedule and options (the ``train`` config section); see the module docstring."""

    epochs: int = 300
    nominal_batch: int = 64
    optimizer: dict = field(default_factory=lambda: _defaults("optimizer"))
    warmup_epochs: float = 3.0
    warmup_iters: int | None = None
    min_warmup_iters: int = 100
    warmup_ratio: float = 0.001
    warmup_bias_lr: float | None = None
    warmup_momentum: float | None = None
    lr_schedule: str = "cosine"
    min_lr_ratio: float = 0.05
    steps: tuple = ()
    gamma: float = 0.1
    ema: dict = field(default_factory=lambda: _defaults("ema"))
    amp: bool = True
    grad_clip: float | None = 10.0
    # Iterations with a non-finite loss are skipped (no backward) and optimizer steps with non-finite
    # gradients are dropped (under AMP that includes the grad scaler's fp16-overflow skips, each of
    # which halves its scale); this many such events in a row, with no good step in between, stop
    # training with TrainingDiverged. None: never stop.
    max_nonfinite_steps: int | None = 20
    # "mean": backward(loss / accumulate), the loss is a mean over the nominal batch (mmdet-style LRs);
    # "batch": backward(loss * batch * world size), summed over accumulation steps (YOLOv5's
    # convention, so YOLOv5 learning rates such as 0.01 mean the same thing here).
    loss_scale: str = "mean"
    multi_scale: tuple | None = None
    multi_scale_interval: int = 10
    no_mosaic_last_epochs: int = 0
    assigner_schedule: list = field(default_factory=list)
    eval_interval: int = 1
    checkpoint: dict = field(default_factory=lambda: _defaults("checkpoint"))
    # torch.compile mode for the network's forward during training (detkit.engine.compile.maybe_compile:
    # in place, eager fall-back with a warning where compiling fails); None: eager.
    compile: str | None = None
    log_interval: int = 50
    seed: int = 0
    sync_bn: bool = False

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> TrainSettings:
        """Build from the ``train`` section; unknown keys raise ValueError naming the accepted ones."""
        section = dict(section or {})
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(section) - set(names))
        if unknown:
            raise ValueError(f"train: unknown key(s) {unknown}; accepted: {', '.join(names)}")
        for key in ("optimizer", "ema", "checkpoint"):
            if key in section:
                section[key] = {**_defaults(key), **dict(section[key] or {})}
        s = cls(**section)
        s.validate()
        return s

    def validate(self) -> None:
        if self.epochs < 1 or self.nominal_batch < 1:
            raise ValueError(f"train.epochs and train.nominal_batch must be >= 1, got {self.epochs}, {self.nominal_batch}")
        if self.multi_scale is not None:
            lo, hi = (int(v) for v in self.multi_scale)
            if not 32 <= lo <= hi:
                raise ValueError(f"train.multi_scale must be (min, max) with 32 <= min <= max, got {self.multi_scale}")
        if self.compile is not None and self.compile != "none":
            from detkit.engine.compile import COMPILE_MODES

            if self.compile not in COMPILE_MODES:
                raise ValueError(f"train.compile must be None or one of {', '.join(COMPILE_MODES)}, "
                                 f"got {self.compile!r}")
        if self.loss_scale not in ("mean", "batch"):
            raise ValueError(f"train.loss_scale must be 'mean' or 'batch', got {self.loss_scale!r}")
        if self.max_nonfinite_steps is not None and (
                isinstance(self.max_nonfinite_steps, bool) or not isinstance(self.max_nonfinite_steps, int)
                or self.max_nonfinite_steps < 1):
            raise ValueError(f"train.max_nonfinite_steps must be an int >= 1 or None (never stop), "
                             f"got {self.max_nonfinite_steps!r}")
        if self.eval_interval < 0 or self.log_interval < 1:
            raise ValueError("train.eval_interval must be >= 0 (0: never) and train.log_interval >= 1")
        for i, entry in enumerate(self.assigner_schedule):
            if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], int)):
                raise ValueError(
                    f"train.assigner_schedule[{i}] must be (epoch, L(Assigner)(...)), got {entry!r}")


@dataclass
class RuntimeSettings:
    """Where and how a run executes (the ``runtime`` config section)."""

    device: str = "auto"
    deterministic: bool = False
    tensorboard: bool = True
    progress: bool = True
    dist_backend: str | None = None
    plot_interval: int = 1  # epochs between PNG plot updates; 0 = only when training ends

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> RuntimeSettings:
        section = dict(section or {})
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(section) - set(names))
        if unknown:
            raise ValueError(f"runtime: unknown key(s) {unknown}; accepted: {', '.join(names)}")
        return cls(**section)
