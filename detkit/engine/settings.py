"""The ``train`` and ``runtime`` config sections as typed dataclasses, one small class per concern.

    train = dict(
        epochs=300, nominal_batch=64,                    # accumulate gradients up to this batch
        optimizer=dict(type="sgd", lr=0.01, momentum=0.937, weight_decay=5e-4, nesterov=True),
                                                         # or dict(type="adamw", lr=1e-3, momentum=0.9,
                                                         #         beta2=0.999, weight_decay=0.05, eps=1e-8)
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
    runtime = dict(device="auto", deterministic=False, dist_backend=None,
                   progress=True, plot_interval=1, loggers=["tensorboard"])

Each concern is its own dataclass with its own defaults: the optimizer per type
(:class:`~detkit.engine.optim.SGDSettings`, :class:`~detkit.engine.optim.AdamWSettings`), the LR
schedule (:class:`~detkit.engine.schedules.ScheduleSettings`, whose keys sit side by side in
``train``), :class:`EMASettings`, :class:`CheckpointSettings`, :class:`LoggingSettings` (side by
side in ``runtime``). :func:`detkit.config.load_config` checks every value of these sections
against the field types when the config loads (:mod:`detkit.schema`); the trainer reads them
with unknown keys refused.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from detkit.assigners.presets import assigner_component
from detkit.engine.checkpoint import CheckpointManager
from detkit.engine.ema import ModelEMA
from detkit.engine.optim import OptimizerSettings, SGDSettings
from detkit.engine.schedules import ScheduleSettings
from detkit.schema import FLAT, SettingError, default_of, parse_section

__all__ = ["CheckpointSettings", "EMASettings", "LoggingSettings", "RuntimeSettings", "TrainSettings"]


def _at_least(key: str, value: int, minimum: int) -> None:
    if value < minimum:
        raise SettingError(key, f"must be >= {minimum}, got {value}")


def _checked_schedule(schedule: list[tuple[int, Any]], epochs: int) -> list[tuple[int, Any]]:
    """``train.assigner_schedule`` with each entry's epoch in ``[0, epochs)``, in increasing order, and
    each component an assigner (a preset name expanded to its lazy call:
    :func:`~detkit.assigners.presets.assigner_component`)."""
    out = []
    for i, (epoch, component) in enumerate(schedule):
        if not 0 <= epoch < epochs:
            raise SettingError(f"train.assigner_schedule[{i}][0]", f"epoch {epoch} is outside this run's epochs "
                                                                   f"0..{epochs - 1} (0-based, train.epochs={epochs})")
        if out and epoch <= out[-1][0]:
            raise SettingError(f"train.assigner_schedule[{i}][0]", f"entries must be in increasing epoch order, "
                                                                   f"got epoch {epoch} after {out[-1][0]}")
        out.append((epoch, assigner_component(component, f"train.assigner_schedule[{i}][1]")))
    return out


@dataclass
class EMASettings:
    """``train.ema``: :class:`~detkit.engine.ema.ModelEMA` of the weights, used for evaluation and saved.

    Attributes:
        enabled: keep the EMA.
        decay: the EMA's decay in (0, 1).
        tau: updates over which the decay ramps up (YOLOv5).
    """

    enabled: bool = True
    decay: float = default_of(ModelEMA, "decay")
    tau: float = default_of(ModelEMA, "tau")  # updates over which the decay ramps up (YOLOv5)

    def __post_init__(self) -> None:
        if not 0.0 < self.decay < 1.0:
            raise SettingError("train.ema.decay", f"must be in (0, 1), got {self.decay}")
        if not (math.isfinite(self.tau) and self.tau > 0):  # NaN fails the comparison
            raise SettingError("train.ema.tau", f"must be a finite number > 0, got {self.tau}")


@dataclass
class CheckpointSettings:
    """``train.checkpoint``: ``epoch_<E>.pth`` kept ``keep_last`` deep; ``iter_<I>.pth`` every
    ``interval_iters`` iterations (0: only at epoch ends). At the end of training ``best.pth`` and
    ``last.pth`` hold the weights only, in fp16 with ``final_fp16``.

    Attributes:
        keep_last: epoch checkpoints kept (>= 1).
        interval_iters: iterations between ``iter_<I>.pth`` checkpoints (0: none).
        final_fp16: ``best.pth`` / ``last.pth`` in fp16.
    """

    keep_last: int = default_of(CheckpointManager, "keep_last")
    interval_iters: int = 0
    final_fp16: bool = False

    def __post_init__(self) -> None:
        _at_least("train.checkpoint.keep_last", self.keep_last, 1)
        _at_least("train.checkpoint.interval_iters", self.interval_iters, 0)


@dataclass
class LoggingSettings:
    """The ``runtime`` keys of what a run reports: progress bars, PNG plots, experiment trackers.

    ``loggers`` lists the trackers besides the work dir's own files: ``"tensorboard"``,
    ``"mlflow"``, ``"wandb"`` or a lazy call of a tracker class such as
    ``L(MLflowTracker)(experiment="shapes")`` (:mod:`detkit.engine.trackers`).

    Attributes:
        progress: tqdm progress bars.
        plot_interval: epochs between PNG plot updates (0: only when training ends).
        loggers: experiment trackers besides the work dir's files.
    """

    progress: bool = True
    plot_interval: int = 1  # epochs between PNG plot updates; 0 = only when training ends
    loggers: list[str | dict] = field(default_factory=lambda: ["tensorboard"])

    def __post_init__(self) -> None:
        from detkit.engine.trackers import TRACKERS

        _at_least("runtime.plot_interval", self.plot_interval, 0)
        for i, entry in enumerate(self.loggers):
            if isinstance(entry, str) and entry not in TRACKERS:
                raise SettingError(f"runtime.loggers[{i}]", f"unknown logger {entry!r}; accepted: "
                                   f"{', '.join(TRACKERS)} or a lazy call of a tracker class")


@dataclass
class TrainSettings:
    """The ``train`` section (see the module docstring; the schedule's keys: ``ScheduleSettings``).

    Attributes:
        epochs: training epochs.
        nominal_batch: gradients are accumulated up to this many images per optimizer step.
        optimizer: ``dict(type="sgd", ...)`` or ``dict(type="adamw", ...)`` (``SGDSettings``, ``AdamWSettings``).
        schedule: warm-up and LR schedule keys, side by side in ``train`` (``lr_schedule``, ``warmup_epochs``, ...).
        ema: :class:`EMASettings` (``train.ema.enabled``, ``decay``, ``tau``).
        checkpoint: :class:`CheckpointSettings` (``train.checkpoint.keep_last``, ...).
        amp: mixed precision on CUDA.
        grad_clip: largest global L2 norm of the gradients, or None.
        max_nonfinite_steps: non-finite steps in a row that stop training (``TrainingDiverged``); None: never.
        loss_scale: ``"mean"`` (mmdet-style learning rates) or ``"batch"`` (YOLOv5's loss x batch).
        multi_scale: ``(min, max)``: a random input side in that range (pixels) every
            ``multi_scale_interval`` iterations; None: the config's size.
        multi_scale_interval: iterations between multi-scale draws.
        no_mosaic_last_epochs: Mosaic and MixUp off for the last N epochs.
        assigner_schedule: ``[(epoch, assigner), ...]``: the head's assigner swapped at those epochs
            (a preset name or a lazy call).
        eval_interval: epochs between evaluations on ``data.val`` (0: none).
        compile: ``torch.compile`` mode of the training forward, or None (eager).
        log_interval: iterations between log lines.
        seed: the run's seed.
        sync_bn: SyncBatchNorm across processes (CUDA DDP).
    """

    epochs: int = 300
    nominal_batch: int = 64
    optimizer: OptimizerSettings = field(default_factory=SGDSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings, metadata={FLAT: True})
    ema: EMASettings = field(default_factory=EMASettings)
    checkpoint: CheckpointSettings = field(default_factory=CheckpointSettings)
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
    loss_scale: Literal["mean", "batch"] = "mean"
    multi_scale: tuple[int, int] | None = None
    multi_scale_interval: int = 10
    no_mosaic_last_epochs: int = 0
    assigner_schedule: list[tuple[int, Any]] = field(default_factory=list)
    eval_interval: int = 1
    # torch.compile mode for the network's forward during training (detkit.engine.compile.maybe_compile:
    # in place, eager fall-back with a warning where compiling fails); None: eager.
    compile: str | None = None
    log_interval: int = 50
    seed: int = 0
    sync_bn: bool = False

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None, strict: bool = True) -> TrainSettings:
        """Read the ``train`` section; unknown keys (when ``strict``) and wrong types raise
        :class:`~detkit.schema.SettingError` (a ``ConfigError``) naming the key."""
        return parse_section(cls, section, "train", strict)

    def __post_init__(self) -> None:
        for name, minimum in (("epochs", 1), ("nominal_batch", 1), ("eval_interval", 0), ("log_interval", 1),
                              ("multi_scale_interval", 1), ("no_mosaic_last_epochs", 0)):
            _at_least(f"train.{name}", getattr(self, name), minimum)
        if self.multi_scale is not None and not 32 <= self.multi_scale[0] <= self.multi_scale[1]:
            raise SettingError("train.multi_scale", f"must be (min, max) with 32 <= min <= max, got {self.multi_scale}")
        if self.compile is not None and self.compile != "none":
            from detkit.engine.compile import COMPILE_MODES

            if self.compile not in COMPILE_MODES:
                raise SettingError("train.compile", f"train.compile must be None or one of "
                                                    f"{', '.join(COMPILE_MODES)}, got {self.compile!r}")
        if self.max_nonfinite_steps is not None and self.max_nonfinite_steps < 1:
            raise SettingError("train.max_nonfinite_steps", f"must be an int >= 1 or None (never stop), "
                                                            f"got {self.max_nonfinite_steps!r}")
        if self.grad_clip is not None and not (self.grad_clip >= 0 and math.isfinite(self.grad_clip)):
            raise SettingError("train.grad_clip", f"must be a finite max gradient norm > 0, or 0 / None for no "
                                                  f"clipping, got {self.grad_clip}")
        self.assigner_schedule = _checked_schedule(self.assigner_schedule, self.epochs)


@dataclass
class RuntimeSettings:
    """Where and how a run executes (the ``runtime`` section).

    Attributes:
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        deterministic: deterministic kernels (slower).
        dist_backend: DDP backend (``"nccl"``, ``"gloo"``), or None for the device's default.
        logging: :class:`LoggingSettings` (``progress``, ``plot_interval``, ``loggers``), side by side in
            ``runtime``.
    """

    device: str = "auto"
    deterministic: bool = False
    dist_backend: str | None = None
    logging: LoggingSettings = field(default_factory=LoggingSettings, metadata={FLAT: True})

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None, strict: bool = True) -> RuntimeSettings:
        """Read the ``runtime`` section (as :meth:`TrainSettings.from_config`)."""
        return parse_section(cls, section, "runtime", strict)
