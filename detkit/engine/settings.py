"""The ``train``, ``schedule`` and ``runtime`` config sections as typed dataclasses, one small class per concern.

    train = dict(
        epochs=300, nominal_batch=64,                    # accumulate gradients up to this batch
        optimizer=L(torch.optim.SGD)(lr=0.01, momentum=0.937, weight_decay=5e-4, nesterov=True),
                                                         # or L(torch.optim.AdamW)(lr=1e-3, betas=(0.9, 0.999),
                                                         #                         weight_decay=0.05): any optimizer
        ema=dict(enabled=True, decay=0.9999, tau=2000),
        amp=True, grad_clip=10.0,                        # grad_clip: max global L2 norm, or None
        max_nonfinite_steps=20,                          # stop after this many non-finite steps in a row
        loss_scale="mean",                               # "mean" | "batch" (YOLOv5: loss x batch, summed)
        multi_scale=None, multi_scale_interval=10,       # multi_scale=(min, max) sides in pixels
        eval_interval=1, checkpoint=dict(keep_last=3, interval_iters=0),
        log_interval=50, seed=0, sync_bn=False,
        compile=None,                                    # torch.compile mode ("default", ...) or None
    )
    schedule = dict(                                     # what changes over the run's train.epochs
        lr=L(LRSchedule)(policy="cosine", min_lr_ratio=0.05,          # "cosine" | "step" | "linear"
                         warmup_epochs=3.0, warmup_iters=None,         # iterations win when both are given
                         min_warmup_iters=100, warmup_ratio=0.001, warmup_bias_lr=None, warmup_momentum=None),
        no_mosaic_last_epochs=0,                         # switchable transforms (Mosaic/MixUp) off for the last N
        assigner_switches=[],                            # [(epoch, L(Assigner)(...)), ...]
    )
    runtime = dict(device="auto", deterministic=False, dist_backend=None,
                   progress=True, plot_interval=1, loggers=["tensorboard"])

``train`` is the loop (how long, how each step is taken, what is kept); ``schedule`` is what changes
during it, each entry relative to ``train.epochs``. The optimizer and the LR schedule are lazy calls
of their classes (:mod:`detkit.engine.optim`, :class:`~detkit.engine.schedules.LRSchedule`), built by
the trainer with what only it knows (the parameter groups; the run's iterations). Each other concern
is its own dataclass with its own defaults: :class:`EMASettings`, :class:`CheckpointSettings`,
:class:`LoggingSettings` (side by side in ``runtime``). :func:`detkit.config.load_config` checks every
value of these sections against the field types when the config loads (:mod:`detkit.config_checks`); the
trainer reads them with unknown keys refused. Keys of ``train`` that moved to ``schedule`` are
refused with their new place (:data:`MOVED_TRAIN_KEYS`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from detkit.assigners.branches import BRANCHES, has_one2one, one_to_one_problem, switch_rules
from detkit.assigners.presets import assigner_component
from detkit.engine.checkpoint import CheckpointManager
from detkit.engine.ema import ModelEMA
from detkit.engine.optim import DEFAULT_OPTIMIZER, check_optimizer_call, optimizer_from_legacy
from detkit.engine.schedules import LRSchedule
from detkit.engine.trackers import tracker_component
from detkit.lazy import TARGET_KEY, L, instantiate
from detkit.schema import FLAT, SettingError, default_of, parse_section, target_product

__all__ = ["MOVED_TRAIN_KEYS", "CheckpointSettings", "EMASettings", "LoggingSettings", "RuntimeSettings",
           "ScheduleSettings", "TrainSettings", "upgrade_legacy_sections"]

# Keys the ``train`` section had before the schedule became its own section, and where they are now.
MOVED_TRAIN_KEYS: dict[str, str] = {
    **{k: f"schedule.lr.{k}" for k in ("min_lr_ratio", "steps", "gamma", "warmup_epochs", "warmup_iters",
                                       "min_warmup_iters", "warmup_ratio", "warmup_bias_lr", "warmup_momentum")},
    "lr_schedule": "schedule.lr.policy",
    "no_mosaic_last_epochs": "schedule.no_mosaic_last_epochs",
    "assigner_schedule": "schedule.assigner_switches",
}


def _at_least(key: str, value: int, minimum: int) -> None:
    if value < minimum:
        raise SettingError(key, f"must be >= {minimum}, got {value}")


def _checked_switches(switches: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
    """``schedule.assigner_switches`` in increasing epoch order, each component an assigner (a preset
    name expanded to its lazy call: :func:`~detkit.assigners.presets.assigner_component`)."""
    out: list[tuple[int, Any]] = []
    for i, (epoch, component) in enumerate(switches):
        if epoch < 0:
            raise SettingError(f"schedule.assigner_switches[{i}][0]", f"must be an epoch >= 0 (0-based), got {epoch}")
        if out and epoch <= out[-1][0]:
            raise SettingError(f"schedule.assigner_switches[{i}][0]", f"entries must be in increasing epoch order, "
                                                                      f"got epoch {epoch} after {out[-1][0]}")
        key = f"schedule.assigner_switches[{i}][1]"
        rules = switch_rules(component)
        if rules is None:
            out.append((epoch, assigner_component(component, key)))
            continue
        if not rules or set(rules) - set(BRANCHES):
            raise SettingError(key, f"a mapping names the branches it switches, one or more of {', '.join(BRANCHES)}; "
                                    f"got {sorted(rules)}")
        rules = {b: assigner_component(rules[b], f"{key}.{b}") for b in BRANCHES if b in rules}
        if "one2one" in rules:  # built here so that a one-to-many rule is refused when the config loads
            problem = one_to_one_problem(instantiate(rules["one2one"], f"{key}.one2one"))
            if problem is not None:
                raise SettingError(f"{key}.one2one", f"the one-to-one branch must stay one-to-one: {problem}")
        out.append((epoch, rules))
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
        _at_least("runtime.plot_interval", self.plot_interval, 0)
        for i, entry in enumerate(self.loggers):
            tracker_component(entry, f"runtime.loggers[{i}]")  # a known short name or a lazy call


@dataclass
class TrainSettings:
    """The ``train`` section: the loop (see the module docstring; what changes over it: ``ScheduleSettings``).

    Attributes:
        epochs: training epochs.
        nominal_batch: gradients are accumulated up to this many images per optimizer step.
        optimizer: a lazy call of a ``torch.optim`` class (:func:`~detkit.engine.optim.build_optimizer`
            adds the parameter groups), or ``"auto"`` (:func:`~detkit.engine.optim.auto_optimizer`).
        ema: :class:`EMASettings` (``train.ema.enabled``, ``decay``, ``tau``).
        checkpoint: :class:`CheckpointSettings` (``train.checkpoint.keep_last``, ...).
        amp: mixed precision on CUDA.
        grad_clip: largest global L2 norm of the gradients, or None.
        max_nonfinite_steps: non-finite steps in a row that stop training (``TrainingDiverged``); None: never.
        loss_scale: ``"mean"`` (mmdet-style learning rates) or ``"batch"`` (YOLOv5's loss x batch).
        multi_scale: ``(min, max)``: a random input side in that range (pixels) every
            ``multi_scale_interval`` iterations; None: the config's size.
        multi_scale_interval: iterations between multi-scale draws.
        eval_interval: epochs between evaluations on ``data.val`` (0: none).
        compile: ``torch.compile`` mode of the training forward, or None (eager).
        log_interval: iterations between log lines.
        seed: the run's seed.
        sync_bn: SyncBatchNorm across processes (CUDA DDP).
    """

    MOVED_KEYS: ClassVar[dict[str, str]] = MOVED_TRAIN_KEYS  # refused by parse_section with their new place

    epochs: int = 300
    nominal_batch: int = 64
    optimizer: Any = field(default_factory=lambda: copy.deepcopy(DEFAULT_OPTIMIZER))
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
    eval_interval: int = 1
    # torch.compile mode for the network's forward during training (detkit.engine.compile.maybe_compile:
    # in place, eager fall-back with a warning where compiling fails); None: eager.
    compile: str | None = None
    log_interval: int = 50
    seed: int = 0
    sync_bn: bool = False

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None, strict: bool = True) -> TrainSettings:
        """Read the ``train`` section; unknown keys (when ``strict``), moved keys and wrong types raise
        :class:`~detkit.schema.SettingError` (a ``ConfigError``) naming the key."""
        return parse_section(cls, section, "train", strict)

    def __post_init__(self) -> None:
        for name, minimum in (("epochs", 1), ("nominal_batch", 1), ("eval_interval", 0), ("log_interval", 1),
                              ("multi_scale_interval", 1)):
            _at_least(f"train.{name}", getattr(self, name), minimum)
        self.optimizer = check_optimizer_call(self.optimizer, "train.optimizer")
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


@dataclass
class ScheduleSettings:
    """The ``schedule`` section: what changes over the run, each entry relative to ``train.epochs``.

    Attributes:
        lr: a lazy call of :class:`~detkit.engine.schedules.LRSchedule` (the LR curve and its warm-up;
            the trainer adds ``total_iters`` and ``iters_per_epoch``).
        no_mosaic_last_epochs: the training pipeline's switchable transforms (Mosaic, MixUp: those with
            ``set_enabled``) off for the last N epochs.
        assigner_switches: ``[(epoch, assigner), ...]``: the head's assigner swapped at those epochs
            (0-based; a lazy call or a preset name), in increasing epoch order. On a dual-branch head
            a bare rule switches the one-to-many branch; ``dict(one2one=...)`` (and/or ``one2many=``)
            names the branches (:mod:`detkit.assigners.branches`).
    """

    lr: Any = field(default_factory=lambda: L(LRSchedule)())
    no_mosaic_last_epochs: int = 0
    assigner_switches: list[tuple[int, Any]] = field(default_factory=list)

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None, epochs: int, strict: bool = True) -> ScheduleSettings:
        """Read the ``schedule`` section of a run of ``epochs`` epochs (``train.epochs``), each switch
        inside the run; raises :class:`~detkit.schema.SettingError` naming the key."""
        settings = parse_section(cls, section, "schedule", strict)
        settings.check_epochs(epochs)
        return settings

    def check_with_config(self, cfg: Mapping[str, Any]) -> None:
        """The checks that need another section (the run's ``train.epochs``), when a config loads."""
        self.check_epochs(TrainSettings.from_config(cfg.get("train"), strict=False).epochs)
        model = cfg.get("model")
        self.check_branches(model.get("head") if isinstance(model, Mapping) else None)

    def check_branches(self, head: Mapping[str, Any] | None) -> None:
        """Every switch of the one-to-one branch is for a head (``model.head``) that has one."""
        for i, (_, component) in enumerate(self.assigner_switches):
            if "one2one" in (switch_rules(component) or {}) and not has_one2one(head):
                raise SettingError(f"schedule.assigner_switches[{i}][1].one2one",
                                   "the model's head has no one-to-one branch (model.head.one2one and one2one_loss)")

    def check_epochs(self, epochs: int) -> None:
        """Every assigner switch falls inside a run of ``epochs`` epochs."""
        for i, (epoch, _) in enumerate(self.assigner_switches):
            if epoch >= epochs:
                raise SettingError(f"schedule.assigner_switches[{i}][0]",
                                   f"epoch {epoch} is outside this run's epochs 0..{epochs - 1} (0-based, "
                                   f"train.epochs={epochs})")

    def __post_init__(self) -> None:
        _at_least("schedule.no_mosaic_last_epochs", self.no_mosaic_last_epochs, 0)
        lazy = isinstance(self.lr, Mapping) and TARGET_KEY in self.lr
        product = target_product(self.lr[TARGET_KEY]) if lazy else None
        if not lazy or (product is not None and not issubclass(product, LRSchedule)):
            raise SettingError("schedule.lr", f"expected a lazy call of LRSchedule such as "
                                              f"L(LRSchedule)(policy='cosine', warmup_epochs=3), got {self.lr!r}")
        self.assigner_switches = _checked_switches(self.assigner_switches)


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


def upgrade_legacy_sections(cfg: Mapping[str, Any]) -> list[str]:
    """Rewrite, in place, a config written before the schedule was its own section (the stored config of
    an older checkpoint): ``train.optimizer=dict(type=...)`` becomes the lazy call it meant
    (:func:`~detkit.engine.optim.optimizer_from_legacy`) and the keys of :data:`MOVED_TRAIN_KEYS` move to
    ``schedule``. Config files are not converted (their old forms are refused, naming the new one):
    this is for configs a user cannot edit. Returns the keys it changed.

    Raises:
        ValueError: an old optimizer ``type`` or key that the old form did not accept either.
    """
    train = cfg.get("train")
    if not isinstance(train, dict):
        return []
    changed = []
    optimizer = train.get("optimizer")
    if isinstance(optimizer, Mapping) and TARGET_KEY not in optimizer:
        train["optimizer"] = optimizer_from_legacy(optimizer)
        changed.append("train.optimizer")
    schedule = cfg.setdefault("schedule", type(train)())  # type: ignore[attr-defined]
    for old, place in MOVED_TRAIN_KEYS.items():
        if old not in train:
            continue
        value = train.pop(old)
        parts = place.split(".")[1:]  # below "schedule"
        node = schedule
        if len(parts) == 2:
            node = schedule.setdefault("lr", L(LRSchedule)())
        node[parts[-1]] = value
        changed.append(f"train.{old}")
    if not schedule:
        del cfg["schedule"]  # type: ignore[attr-defined]
    return changed
