"""The training loop: build from a config, train with warm-up/EMA/AMP/accumulation, evaluate, checkpoint.

    from detkit.config import load_config
    from detkit.engine.trainer import Trainer

    cfg = load_config("configs/yolov4_atss.py", overrides=["train.epochs=12"])
    Trainer(cfg, work_dir="work_dirs/run1", resume="auto").train()

One iteration (global index ``it``): set LR/momentum for ``it`` -> move the batch -> multi-scale
resize -> forward + loss (autocast on CUDA) -> backward of ``sum(loss_*) / accumulate`` -> every
``accumulate`` iterations: unscale, clip, optimizer step, EMA update. Epoch ends: write
``epoch_<E>.pth``, then evaluate (EMA weights; the RNGs left as they were), ``best.pth`` on a new
best, the epoch's row, plots; a run resumed from an epoch checkpoint runs that epoch's end again
(so a kill or an error during an evaluation loses nothing). At the end of training ``last.pth``
and ``best.pth`` hold the weights only (:func:`~detkit.engine.run_checkpoints.lean_state`). Every
random choice is
reproducible from ``(seed, epoch, iteration)`` or restored from the checkpoint, so a resumed run
continues with the same losses as an uninterrupted one (exactly, on CPU with ``num_workers=0``;
with workers, augmentation randomness is reseeded per epoch instead).

Guards (:mod:`detkit.engine.guards`): a non-finite loss skips its iteration, non-finite gradients
drop their step (both counted); ``train.max_nonfinite_steps`` in a row raise
:class:`TrainingDiverged`, and no checkpoint is written during such a streak. During
:meth:`Trainer.train` the first SIGINT / SIGTERM finishes the optimizer step, writes
``iter_<N>.pth`` (which ``--resume`` picks) and raises :class:`TrainingInterrupted`; a second one
raises :class:`TrainingAborted` at once.

The parts come from :mod:`detkit.engine.builders` (typed settings: :mod:`detkit.engine.settings`);
reports go through :class:`~detkit.engine.logging.TrainingLog`. Sections below: construction,
checkpoints and resume, the loop, evaluation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from detkit.config import ConfigDict, format_config, instantiate
from detkit.engine import builders
from detkit.engine import distributed as du
from detkit.engine.builders import build_dataset
from detkit.engine.checkpoint import get_rng_state, preserved_rng, set_rng_state
from detkit.engine.compile import maybe_compile
from detkit.engine.ema import unwrap_model
from detkit.engine.evaluate import ValData, build_val_data, evaluate
from detkit.engine.guards import (
    NonFiniteGuard,
    StopSignals,
    TrainingAborted,
    TrainingDiverged,
    TrainingInterrupted,
    any_rank,
)
from detkit.engine.logging import MetricsWriter, TrainingLog, setup_logger
from detkit.engine.optim import auto_optimizer, auto_settings, build_optimizer
from detkit.engine.run_checkpoints import RunCheckpoints, check_resume, epoch_boundary, run_meta
from detkit.engine.run_report import report_training_run
from detkit.engine.settings import RuntimeSettings, ScheduleSettings, TrainSettings
from detkit.engine.stepping import GuardedStep, save_refusal
from detkit.engine.train_utils import (
    EpochMeter,
    EpochSwitches,
    move_batch,
    multi_scale_batch,
    seed_everything,
    start_loader_epoch,
)
from detkit.engine.workdir import claim_work_dir
from detkit.lazy import call_text

__all__ = ["Trainer", "TrainingAborted", "TrainingDiverged", "TrainingInterrupted", "build_dataset"]

logger = logging.getLogger("detkit")


class Trainer:
    """Trains ``cfg.model`` on ``cfg.data.train`` with the ``train`` / ``schedule`` / ``runtime`` config sections.

    Args:
        cfg: a loaded config (``load_config``).
        work_dir: output folder (default ``work_dirs/<config name>``).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``; overrides ``runtime.device``.
        seed: overrides ``train.seed``.
        deterministic: overrides ``runtime.deterministic``.
        resume: ``None`` (fresh run), ``"auto"`` (latest checkpoint in ``work_dir``) or a path.
        load_from: weights to start from (see :func:`detkit.engine.weights.load_weights`).
        progress: tqdm bars (overrides ``runtime.progress``).
        overwrite: delete an earlier run's files in ``work_dir`` first; without it (or ``resume``)
            a work dir holding an earlier run is refused (:func:`detkit.engine.workdir.claim_work_dir`).
        resume_anyway: resume although run-defining settings (batch size, accumulation, processes,
            image size, classes, dataset size) differ from the checkpoint's, from the next epoch
            boundary (:func:`~detkit.engine.run_checkpoints.check_resume`); without it that is refused.

    Raises:
        ConfigError: a ``train`` / ``schedule`` / ``runtime`` value of the wrong type or out of range.
        ValueError: the data and the model disagree (image size, class count), checked before the work
            dir is created.
        WorkDirError: ``work_dir`` holds an earlier run (without ``resume`` / ``overwrite``) or another
            run holds it (:func:`detkit.engine.workdir.claim_work_dir`).
        CheckpointError: ``resume`` or ``load_from`` cannot be used.

    Example:
        ```python
        from detkit.config import load_config
        from detkit.data.adopt import adopt_dataset
        from detkit.engine.trainer import Trainer

        cfg = load_config("yolov8n_tal.py", ["train.epochs=1", "model.head.loss.assigner=atss"])
        adopt_dataset(cfg, "datasets/mydata/data.yaml", img_size=320)
        result = Trainer(cfg, work_dir="work_dirs/mydata_atss").train()
        print(result["best"])  # {'metric': 'AP', 'value': ..., 'epoch': ...}
        ```
    """

    # ------------------------------------------------------------------------------------------
    # construction
    # ------------------------------------------------------------------------------------------

    def __init__(self, cfg: ConfigDict, work_dir: str | Path | None = None, device: str | None = None,
                 seed: int | None = None, deterministic: bool | None = None, resume: str | None = None,
                 load_from: str | None = None, progress: bool | None = None, overwrite: bool = False,
                 resume_anyway: bool = False) -> None:
        self.cfg = cfg
        builders.check_data_config(cfg)  # one image size, one class count: refused before the work dir
        settings = TrainSettings.from_config(cfg.get("train"))
        if seed is not None:
            settings = dataclasses.replace(settings, seed=seed)
        runtime = RuntimeSettings.from_config(cfg.get("runtime"))
        self.settings = settings
        self.schedule_settings = ScheduleSettings.from_config(cfg.get("schedule"), epochs=settings.epochs)
        self.runtime = runtime if deterministic is None else dataclasses.replace(runtime, deterministic=deterministic)
        self.progress = self.runtime.logging.progress if progress is None else progress
        self.device, self.rank, self.world_size = builders.setup_device(device or runtime.device, runtime.dist_backend)
        self.work_dir = Path(work_dir or Path("work_dirs") / Path(getattr(cfg, "_filename", "run")).stem)
        # one run per work dir (released at the end of train()); refuses an earlier run unless resume/overwrite
        self.work_lock = claim_work_dir(self.work_dir, resume=resume, overwrite=overwrite, rank=self.rank)
        setup_logger(self.work_dir, self.rank)
        for note in self.work_lock.notes:
            logger.warning(note)
        seed_everything(self.settings.seed, self.runtime.deterministic)

        self.model = builders.build_model(cfg, self.device, sync_bn=settings.sync_bn, world_size=self.world_size)
        divisor = builders.size_divisor(self.model)
        self.train_set = build_dataset(cfg, "train")
        self.loader = builders.build_train_loader(cfg, self.train_set, divisor=divisor, seed=settings.seed,
                                                  device=self.device)
        assert self.loader.batch_size is not None  # built with a batch size, not a batch sampler
        self.batch_size: int = self.loader.batch_size
        self.iters_per_epoch = len(self.loader)
        plan = builders.build_step_plan(settings, batch_size=self.batch_size, world_size=self.world_size)
        self.accumulate, self.loss_multiplier = plan.accumulate, plan.loss_multiplier
        self.weight_decay_scale = plan.weight_decay_scale
        # train.optimizer="auto": Ultralytics' choice by the run's optimizer steps and classes (kept by a resume)
        classes: Any = getattr(getattr(self.detector, "head", None), "num_classes", None) or getattr(
            self.detector, "num_classes", 10)  # 10: Ultralytics' count when the data do not say
        self.optimizer_auto = auto_settings(settings.optimizer, len(self.train_set), self.batch_size * self.world_size,
                                            settings.nominal_batch, settings.epochs, int(classes))
        self.optimizer = self._build_optimizer(settings.optimizer)
        self.schedule = instantiate(self.schedule_settings.lr, "schedule.lr",
                                    total_iters=settings.epochs * self.iters_per_epoch,
                                    iters_per_epoch=self.iters_per_epoch)
        if self.optimizer_auto and self.schedule.warmup_bias_lr is not None:
            self.schedule.warmup_bias_lr = 0.0  # as Ultralytics' auto: the biases warm up from 0 like the rest
        self.ema = builders.build_ema(self.model, settings.ema)
        self.amp, self.scaler = builders.build_amp(settings.amp, self.device)
        maybe_compile(self.model, settings.compile)  # in place; the EMA copy above stays eager
        # the model, or its DDP wrapper (no_sync): either runs the loss as forward
        self.forward: Any = builders.wrap_for_training(self.model, self.device, self.world_size)
        self.checkpoints = RunCheckpoints(self.work_dir, self.rank, keep_last=settings.checkpoint.keep_last)
        self.log = TrainingLog(self.work_dir, self.rank, self.runtime.logging, settings.epochs)
        # fail before training, not after the first epoch, when val data are missing
        self.val_set: Any = None
        self.evaluator: Any = None  # a COCOEvaluator on rank 0
        if settings.eval_interval:
            self.val_set, self.evaluator = build_val_data(cfg, main=self.rank == 0)
        self.switches = EpochSwitches(self.schedule_settings.assigner_switches,
                                      self.schedule_settings.no_mosaic_last_epochs, settings.epochs)
        logger.info(f"{len(self.train_set)} training images, batch {self.batch_size} x {self.world_size} "
                    f"process(es), accumulate {self.accumulate} (nominal {settings.nominal_batch}), "
                    f"{self.iters_per_epoch} iterations/epoch, warm-up {self.schedule.warmup_iters} iterations, "
                    f"device {self.device}")

        if load_from:
            builders.load_initial_weights(self.detector, load_from, getattr(self.train_set, "class_names", None))
        self.epoch, self.iter, self.epoch_iter = 0, 0, 0
        self.meter = EpochMeter()  # this epoch's loss_*/stat_* sums
        self.best: dict[str, Any] = {"metric": "AP", "value": -1.0, "epoch": -1}
        self.guard = NonFiniteGuard(settings.max_nonfinite_steps)
        self.stepper = GuardedStep(self.model, optimizer=self.optimizer, scaler=self.scaler, ema=self.ema,
                                   guard=self.guard, grad_clip=settings.grad_clip)
        self.signals = StopSignals()  # replaced by the active one during train()
        self.agreed_stop = False  # under DDP: some rank got a stop signal (agreed this iteration)
        self.resumed_from: Path | None = None
        self.epoch_end_pending = False  # resumed from an epoch checkpoint: its evaluation etc. run first
        self.meta = run_meta(cfg, self.detector, len(self.train_set), getattr(self.train_set, "class_names", None),
                             self.batch_size, self.accumulate, self.world_size)
        seed_everything(settings.seed + self.rank)  # augmentation differs per rank, reproducibly
        if resume:
            self.resume(resume, anyway=resume_anyway)

    def _build_optimizer(self, call: Any) -> torch.optim.Optimizer:
        """The optimizer of ``call``, or of :attr:`optimizer_auto`'s choice when set (logged in one line)."""
        if self.optimizer_auto:
            call = auto_optimizer(**self.optimizer_auto)
            logger.info(f"optimizer auto: {self.optimizer_auto['optimizer_steps']} optimizer steps, "
                        f"{self.optimizer_auto['num_classes']} classes: {call_text(call)}")
        return build_optimizer(self.model, call, weight_decay_scale=self.weight_decay_scale)

    @property
    def detector(self) -> nn.Module:
        return unwrap_model(self.model)

    @property
    def writer(self) -> MetricsWriter:
        """The run's metrics (``writer.epochs``: the per-epoch rows so far)."""
        return self.log.writer

    # ------------------------------------------------------------------------------------------
    # checkpoints and resume
    # ------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs: model, EMA, optimizer, schedule, scaler, counters, RNG states, the
        config as text, the best metric and the run's settings (what ``epoch_<E>.pth`` holds)."""
        return {
            "model": self.detector.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {"last_iter": self.schedule.last_iter},
            "scaler": self.scaler.state_dict() if self.amp else None,
            "epoch": self.epoch, "iter": self.iter, "epoch_iter": self.epoch_iter, **self.meter.state_dict(),
            "rng": get_rng_state(), "config": format_config(self.cfg), "best": dict(self.best),
            "guard": self.guard.state_dict(), "meta": self.meta, "epoch_end_pending": False,
            "optimizer_auto": self.optimizer_auto,
        }

    def save(self, name: str, epoch_end: bool = False) -> Path | None:
        """Write checkpoint ``name`` (rank 0) unless the weights are suspect (a non-finite streak or
        non-finite weights: the last good checkpoint stays the newest).

        Args:
            name: file name in the work dir (``epoch_3.pth``).
            epoch_end: written before the epoch's evaluation (a resume runs that evaluation first).

        Returns:
            Its path, or None when refused; the same answer on every rank.
        """
        return self.checkpoints.save(name, lambda: {**self.state_dict(), "epoch_end_pending": epoch_end},
                                     save_refusal(self.detector, self.ema, self.guard))

    def resume(self, resume: str, anyway: bool = False) -> None:
        """Restore everything from ``resume`` (a path, or ``"auto"``: the newest checkpoint in the work
        dir that loads; a newer one that does not is skipped with a warning).

        Args:
            resume: a checkpoint path or ``"auto"`` (nothing to restore in an empty work dir).
            anyway: accept changed run-defining settings (batch size, image size, classes, ...).

        Raises:
            CheckpointError: another model, or changed run-defining settings without ``anyway``.
        """
        found = self.checkpoints.load_for_resume(resume, self.device)
        if found is None:
            return
        path, ckpt = found
        changes = check_resume(path, ckpt, self.detector, self.meta["run"], anyway)
        self.detector.load_state_dict(ckpt["model"])
        if self.ema and ckpt.get("ema"):
            self.ema.load_state_dict(ckpt["ema"])
        if ckpt.get("optimizer_auto") and self.optimizer_auto and ckpt["optimizer_auto"] != self.optimizer_auto:
            self.optimizer_auto = dict(ckpt["optimizer_auto"])  # "auto" keeps the checkpoint's choice
            self.optimizer = self.stepper.optimizer = self._build_optimizer(None)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.schedule.load_state_dict(ckpt["scheduler"])
        if self.amp and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.iter, self.epoch_iter = int(ckpt["epoch"]), int(ckpt["iter"]), int(ckpt["epoch_iter"])
        self.best = dict(ckpt.get("best") or self.best)
        self.meter.load_state_dict(ckpt)
        self.guard.load_state_dict(ckpt.get("guard") or {})
        set_rng_state(ckpt["rng"])
        self.log.writer.load_history()
        self.resumed_from = path
        self.epoch_end_pending = bool(ckpt.get("epoch_end_pending")) and self.epoch_iter == 0
        if self.epoch_end_pending:
            self._settle_finished_epoch_end()
        logger.info(f"resumed from {path}: epoch {self.epoch}, iteration {self.iter}")
        if changes:  # --resume-anyway: the new sample order starts at an epoch boundary (no image twice)
            self.epoch_iter, self.iter = epoch_boundary(self.epoch, self.epoch_iter, self.iters_per_epoch, changes)

    def _settle_finished_epoch_end(self) -> None:
        """A pending epoch end whose row is already in the metrics history finished before the run
        stopped (its evaluation, ``best.pth`` and row come before the next checkpoint): it is not
        evaluated again, and its metric counts for the best. Rank 0's history decides for every rank."""
        row = next((r for r in self.log.writer.epochs if r.get("epoch") == self.epoch), None)
        row = du.all_gather_object(row)[0]
        if row is None:
            return
        self.epoch_end_pending = False
        value = row.get(self.best["metric"])
        if value is not None and value > self.best["value"]:
            self.best.update(value=float(value), epoch=self.epoch)

    # ------------------------------------------------------------------------------------------
    # the loop
    # ------------------------------------------------------------------------------------------

    def train(self) -> dict[str, Any]:
        """Run the remaining epochs; returns ``{"best": ..., "last_metrics": ...}``.

        Raises:
            TrainingInterrupted: after a SIGINT / SIGTERM, once the checkpoint is written.
            TrainingAborted: on a second signal (a KeyboardInterrupt), at once.
            TrainingDiverged: after ``train.max_nonfinite_steps`` non-finite iterations in a row.
        """
        logger.info(f"work dir {self.work_dir}")
        self.log.start(format_config(self.cfg), self.cfg, resumed=self.resumed_from is not None)
        metrics: dict[str, float] = {}
        failed = True
        try:
            with StopSignals() as self.signals:
                if self.epoch_end_pending:  # resumed from an epoch checkpoint: its end (evaluation) first
                    self.epoch_end_pending = False
                    metrics = self._finish_epoch(saved=True)
                while self.epoch < self.settings.epochs:
                    if any_rank([self.signals.requested is not None], self.device)[0]:
                        self._stop(saved=self.checkpoints.latest())  # during evaluation
                    metrics = self._train_epoch()
                self.checkpoints.save_final(self.state_dict, save_refusal(self.detector, self.ema, self.guard),
                                            fp16=self.settings.checkpoint.final_fp16)
            self.log.writer.log_artifacts(report_training_run(self))  # never raises (run_report's docstring)
            failed = False
        finally:
            self.log.finish(failed, self.evaluator)
            self.work_lock.release()
        return {"best": dict(self.best), "last_metrics": metrics}

    def _train_epoch(self) -> dict[str, float]:
        epoch = self.epoch
        self.switches.apply(epoch, self.detector, self.train_set)
        start_loader_epoch(self.loader, epoch, self.settings.seed, skip_batches=self.epoch_iter)
        if self.epoch_iter == 0:  # a resumed epoch keeps the sums of its iterations before the kill
            self.meter.reset()
            self.guard.new_epoch()
        if self.epoch_iter < self.iters_per_epoch:  # (an epoch stopped after its last iteration has none left)
            self._run_iterations(epoch)
        self.epoch, self.epoch_iter = epoch + 1, 0
        self._sync_ranks()
        saved = self.save(f"epoch_{epoch + 1}.pth", epoch_end=True)  # before the evaluation: never lost to it
        return self._finish_epoch(saved=saved is not None)

    def _run_iterations(self, epoch: int) -> None:
        from tqdm import tqdm

        seen, t0 = 0, time.perf_counter()
        bar = tqdm(self.loader, desc=f"epoch {epoch + 1}/{self.settings.epochs}", initial=self.epoch_iter,
                   total=self.iters_per_epoch, disable=not (self.progress and self.rank == 0), dynamic_ncols=True)
        interval = self.settings.checkpoint.interval_iters
        try:
            for batch in bar:
                values, finite, step_now = self._train_step(batch)
                if finite:  # a skipped batch's values are NaN: kept out of the epoch means
                    self.meter.add(values)
                seen += batch["images"].shape[0] * self.world_size
                if self.iter % self.settings.log_interval == 0 or self.epoch_iter == self.iters_per_epoch:
                    self._log_iter(values, bar, seen / max(time.perf_counter() - t0, 1e-9))
                if self.guard.diverged:
                    self._diverged()
                saved = None
                if interval and self.iter % interval == 0 and step_now and self.epoch_iter < self.iters_per_epoch:
                    saved = self.save(f"iter_{self.iter}.pth")
                if step_now and self._stop_requested():
                    self._stop(saved=saved or self.save(f"iter_{self.iter}.pth"))
        finally:
            bar.close()

    def _log_iter(self, values: Mapping[str, Tensor], bar: Any, img_s: float) -> None:
        reduced = du.reduce_mean(values)  # every rank takes part; rank 0 writes
        lr = self.optimizer.param_groups[0]["lr"]
        record = {k: float(v) for k, v in reduced.items()}
        self.log.iteration(self.iter, {"epoch": self.epoch + 1, **record, "lr": lr, "img_s": img_s,
                                       **self.guard.run_counters()})
        bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{lr:.2e}", img_s=f"{img_s:.1f}")

    def _train_step(self, batch: dict[str, Any]) -> tuple[dict[str, Tensor], bool, bool]:
        """One iteration; returns ``(values to log, whether the loss was finite, whether it ended an
        optimizer step)``."""
        it = self.iter
        self.schedule.step(self.optimizer, it)
        batch = multi_scale_batch(move_batch(batch, self.device), self.settings.multi_scale, self.settings.seed,
                                  step=it // self.settings.multi_scale_interval,
                                  divisor=builders.size_divisor(self.detector))
        # every accumulate-th iteration (fewer in a warmup_accumulate warm-up) and the epoch's last
        step_now = self.schedule.ends_window(it, self.accumulate) or self.epoch_iter + 1 == self.iters_per_epoch
        sync = contextlib.nullcontext() if step_now or self.world_size == 1 else self.forward.no_sync()
        self.stepper.begin()
        with sync:
            with torch.autocast(self.device.type, enabled=self.amp):
                out = self.forward(batch)
            loss_keys = [k for k in out if k.startswith("loss_")]
            if not loss_keys:
                raise ValueError(f"the model's loss dict has no 'loss_*' key (keys: {sorted(out)})")
            loss = sum(out[k].float() for k in loss_keys)
            finite = bool(torch.isfinite(loss))
            if self.world_size > 1:  # every rank skips together, or DDP's gradient all-reduce would hang
                bad_any, self.agreed_stop = any_rank([not finite, self.signals.requested is not None], self.device)
                finite = not bad_any
            if finite:
                self.stepper.backward(loss * self.loss_multiplier)
            else:
                self.stepper.skip(it, {k: float(out[k].detach()) for k in loss_keys})
        if step_now:
            if finite:
                self.stepper.step(self.iter)
            else:  # the window's last backward (DDP's gradient sync) did not run: drop its update
                self.stepper.drop()
        self.iter += 1
        self.epoch_iter += 1
        values = {k: out[k].detach().float() for k in out if k.startswith(("loss_", "stat_"))}
        values["loss"] = loss.detach()
        return values, finite, step_now

    def _sync_ranks(self) -> None:
        """Give every rank rank 0's BatchNorm statistics and EMA (parameters already agree under DDP)."""
        du.broadcast_state(self.detector)
        if self.ema is not None:
            du.broadcast_state(self.ema.module)

    def _stop_requested(self) -> bool:
        """A stop signal arrived (on any rank: under DDP the flag agreed in this iteration)."""
        return self.agreed_stop if self.world_size > 1 else self.signals.requested is not None

    def _stop(self, saved: Path | None) -> None:
        """Raise TrainingInterrupted after a stop signal (the checkpoint is already written)."""
        signum = self.signals.requested or signal.SIGTERM  # under DDP another rank may have got it
        name = signal.Signals(signum).name
        where = f"iteration {self.iter} (epoch {self.epoch + 1}, {self.epoch_iter}/{self.iters_per_epoch})"
        if saved is not None:  # the message names resume='auto' (a tool prints its --resume)
            stop = TrainingInterrupted("stopped by {name} after {where}; saved {saved}; continue with {resume:'auto'}",
                                       int(signum), saved, values={"name": name, "where": where, "saved": saved})
        else:
            stop = TrainingInterrupted(f"stopped by {name} after {where}; no new checkpoint written (see the warning "
                                       f"above); the newest is {self.checkpoints.latest()}", int(signum), saved)
        logger.warning(str(stop))
        raise stop

    def _diverged(self) -> None:
        msg = self.guard.divergence_message(self.iter - 1, self.epoch, self.checkpoints.latest())
        logger.error(msg)
        raise TrainingDiverged(msg)

    def _finish_epoch(self, saved: bool) -> dict[str, float]:
        """After the epoch's checkpoint: evaluate when due (the RNGs untouched, so a resumed run that
        repeats this matches), ``best.pth`` on a new best (when the weights were ``saved``: sound),
        the epoch's row (kept in the metrics files only), plots."""
        epoch, interval = self.epoch, self.settings.eval_interval
        row: dict[str, Any] = {k: float(v) for k, v in self.meter.means().items()}
        row["lr"] = self.optimizer.param_groups[0]["lr"]
        row.update(self.guard.epoch_counters())
        metrics: dict[str, float] = {}
        if interval and (epoch % interval == 0 or epoch == self.settings.epochs):
            with preserved_rng():
                metrics = self.evaluate()
            row.update({k: v for k, v in metrics.items() if "/" not in k or k.startswith("val/")})
        value = metrics.get(self.best["metric"])
        if self.rank == 0 and value is not None and value > self.best["value"]:
            self.best.update(value=float(value), epoch=epoch)
            if saved:
                self.checkpoints.save_best(self.state_dict())
                logger.info(f"new best {self.best['metric']} {value:.4f} at epoch {epoch}")
        self.log.record_epoch(epoch, row)
        self.log.close_epoch(epoch, row, self.evaluator)
        return metrics

    # ------------------------------------------------------------------------------------------
    # evaluation
    # ------------------------------------------------------------------------------------------

    def evaluate(self) -> dict[str, float]:
        """COCO metrics of the EMA weights (or the model's) on ``data.val``.

        Returns:
            ``{"AP": ..., "AP50": ..., "AP75": ..., "APs": ..., "AR100": ..., "val/loss": ...}`` on rank 0
            (the COCO summary's twelve numbers and the validation losses); ``{}`` on other ranks.
        """
        if self.val_set is None:
            self.val_set, self.evaluator = build_val_data(self.cfg, main=self.rank == 0)
        model = self.ema.module if self.ema is not None else self.detector
        run = evaluate(self.cfg, model, self.device, val=ValData(self.val_set, self.evaluator),
                       progress=self.progress, val_losses=True)  # as `detkit test` evaluates
        metrics, results = run.metrics, run.results
        self.val_results = results if self.rank == 0 else None  # for the run report
        if self.rank == 0:
            self.log.writer.log("val", self.epoch, metrics)
            logger.info(f"evaluation after epoch {self.epoch}:\n{self.evaluator.summary()}\n"
                        f"{self.evaluator.per_class_table()}")
        return metrics
