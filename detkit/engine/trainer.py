"""The training loop: build from a config, train with warm-up/EMA/AMP/accumulation, evaluate, checkpoint.

    from detkit.config import load_config
    from detkit.engine.trainer import Trainer

    cfg = load_config("configs/yolov4_atss.py", overrides=["train.epochs=12"])
    Trainer(cfg, work_dir="work_dirs/run1", resume="auto").train()

One iteration (global index ``it``): set LR/momentum for ``it`` -> move the batch -> multi-scale
resize -> forward + loss (autocast on CUDA) -> backward of ``sum(loss_*) / accumulate`` -> every
``accumulate`` iterations: unscale, clip, optimizer step, EMA update. Epoch ends: evaluate (EMA
weights), write ``epoch_<E>.pth`` and ``best.pth``, CSV/JSONL rows and plots. Every random choice
is reproducible from ``(seed, epoch, iteration)`` or restored from the checkpoint, so a resumed
run continues with the same losses as an uninterrupted one (exactly, on CPU with
``num_workers=0``; with workers, augmentation randomness is reseeded per epoch instead).

Guards (:mod:`detkit.engine.guards`): an iteration whose loss is not finite is skipped (no
backward; the BatchNorm statistics its forward pass changed are put back), an optimizer step
whose gradients are not finite is dropped, both counted in the logs and metrics;
``train.max_nonfinite_steps`` of them in a row raise :class:`TrainingDiverged`. No checkpoint is
written while such a streak lasts or when any weight is not finite, so the newest checkpoint is
always a good one. During :meth:`Trainer.train` the first SIGINT / SIGTERM finishes the optimizer
step, writes ``iter_<N>.pth`` (which ``--resume`` picks) and raises :class:`TrainingInterrupted`;
a second one raises :class:`TrainingAborted` at once.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from detkit.config import ConfigDict, format_config, instantiate
from detkit.engine import distributed as du
from detkit.engine.checkpoint import (
    CheckpointError, CheckpointManager, find_latest_checkpoint, get_rng_state, load_checkpoint,
    load_latest_checkpoint, load_weights, set_rng_state,
)
from detkit.engine.compile import maybe_compile
from detkit.engine.ema import ModelEMA, unwrap_model
from detkit.engine.guards import (
    BufferSnapshot, NonFiniteGuard, StopSignals, TrainingAborted, TrainingDiverged, TrainingInterrupted,
    any_rank, guarded_optimizer_step, nonfinite_tensors,
)
from detkit.engine.inference import build_evaluator, evaluate_dataset
from detkit.engine.logging import MetricsWriter, setup_logger
from detkit.engine.optim import build_optimizer
from detkit.engine.plots import plot_training
from detkit.engine.schedules import LRSchedule
from detkit.engine.settings import RuntimeSettings, TrainSettings
from detkit.engine.train_utils import (
    assigner_index, build_assigner, build_loader, collate_from_config, move_batch, multi_scale_size,
    resize_batch, resolve_device, seed_everything, set_mix_transforms, train_collate,
)
from detkit.engine.workdir import claim_work_dir
from detkit.viz import plot_pr_curves

__all__ = ["Trainer", "TrainingAborted", "TrainingDiverged", "TrainingInterrupted", "build_dataset"]

# Entries a checkpoint needs for --resume.
RESUME_KEYS = ("model", "optimizer", "scheduler", "epoch", "iter", "epoch_iter", "rng")

logger = logging.getLogger("detkit")


# Shown when a dataset cannot be read: where each format's files are expected.
DATA_LAYOUTS = """expected layouts (paths as in the config; details in data/README.md):
  COCO: data/coco/annotations/instances_{train,val}2017.json, images in data/coco/{train,val}2017/
  YOLO: <root>/images/<split>/*.jpg, <root>/labels/<split>/*.txt (class cx cy w h, 0..1), names.txt
  VOC:  VOCdevkit/VOC2007/{Annotations,JPEGImages,ImageSets/Main}
  shapes: generated on first use (python tools/make_shapes.py)"""


def build_dataset(cfg: Mapping[str, Any], split: str) -> Any:
    """Instantiate ``cfg.data[split].dataset`` with a clear message when the data are missing."""
    data = cfg.get("data") or {}
    if split not in data or "dataset" not in data[split]:
        raise ValueError(f"config has no data.{split}.dataset; add data=dict({split}=dict(dataset=L(...)(...)))")
    try:
        return instantiate(data[split].dataset)
    except (OSError, ValueError) as e:
        if not isinstance(e, OSError) and "No such file" not in str(e) and "not found" not in str(e):
            raise
        raise ValueError(f"data.{split}: dataset not found: {e}\n{DATA_LAYOUTS}") from e


class _LossForward(nn.Module):
    """``forward(batch) = detector.loss(batch)``, so DDP sees the loss computation as forward."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        return self.detector.loss(batch)


class Trainer:
    """Trains ``cfg.model`` on ``cfg.data.train`` with the ``train`` / ``runtime`` config sections.

    Args:
        cfg: a loaded config (``load_config``).
        work_dir: output folder (default ``work_dirs/<config name>``).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``; overrides ``runtime.device``.
        seed / deterministic: override ``train.seed`` / ``runtime.deterministic``.
        resume: ``None`` (fresh run), ``"auto"`` (latest checkpoint in ``work_dir``) or a path.
        load_from: weights to start from (see :func:`detkit.engine.checkpoint.load_weights`).
        progress: tqdm bars (overrides ``runtime.progress``).
        overwrite: delete an earlier run's files in ``work_dir`` first; without it (or ``resume``)
            a work dir holding an earlier run is refused (:func:`detkit.engine.workdir.claim_work_dir`).
    """

    def __init__(self, cfg: ConfigDict, work_dir: str | Path | None = None, device: str | None = None,
                 seed: int | None = None, deterministic: bool | None = None, resume: str | None = None,
                 load_from: str | None = None, progress: bool | None = None, overwrite: bool = False) -> None:
        self.cfg = cfg
        self.s = TrainSettings.from_config(cfg.get("train"))
        self.rt = RuntimeSettings.from_config(cfg.get("runtime"))
        if seed is not None:
            self.s.seed = seed
        if deterministic is not None:
            self.rt.deterministic = deterministic
        self.progress = self.rt.progress if progress is None else progress
        self.device = resolve_device(device or self.rt.device)
        self.rank, self.world_size, local_rank = du.init_distributed(self.device.type, self.rt.dist_backend)
        if self.device.type == "cuda" and self.world_size > 1:
            self.device = torch.device("cuda", local_rank)
        name = Path(getattr(cfg, "_filename", "run")).stem
        self.work_dir = Path(work_dir or Path("work_dirs") / name)
        # one run per work dir (released at the end of train()); refuses an earlier run unless resume/overwrite
        self.work_lock = claim_work_dir(self.work_dir, resume=resume, overwrite=overwrite, rank=self.rank)
        setup_logger(self.work_dir, self.rank)
        for note in self.work_lock.notes:
            logger.warning(note)
        seed_everything(self.s.seed, self.rt.deterministic)
        self._build()
        if load_from:
            report = load_weights(unwrap_model(self.model), load_from)
            logger.info(f"loaded weights from {load_from}: {len(report['loaded'])} tensors, "
                        f"{len(report['missing'])} missing, {len(report['shape_mismatch'])} shape mismatches")
        self.epoch, self.iter, self.epoch_iter = 0, 0, 0
        self.epoch_sums: dict[str, float] = {}  # running sums of this epoch's loss_*/stat_* values
        self.epoch_count = 0
        self.best: dict[str, Any] = {"metric": "AP", "value": -1.0, "epoch": -1}
        self.guard = NonFiniteGuard(self.s.max_nonfinite_steps)
        self.signals = StopSignals()  # replaced by the active one during train()
        self._agreed_stop = False  # under DDP: some rank got a stop signal (agreed this iteration)
        seed_everything(self.s.seed + self.rank)  # augmentation differs per rank, reproducibly
        if resume:
            self.resume(resume)

    # ------------------------------------------------------------------------------------------
    # construction
    # ------------------------------------------------------------------------------------------

    def _build(self) -> None:
        data = self.cfg.data
        model = instantiate(self.cfg.model)
        divisor = int(getattr(model, "size_divisor", 32))
        self.train_set = build_dataset(self.cfg, "train")
        self.batch_size = int(data.train.get("batch_size", 16))
        self.num_workers = int(data.train.get("num_workers", 2))
        self.collate = collate_from_config(self.cfg, divisor)  # evaluation
        self.train_collate, self.loader_cls = train_collate(self.cfg, divisor, self.num_workers)
        self.sampler = du.TrainSampler(len(self.train_set), shuffle=True, seed=self.s.seed)
        self.loader_gen = torch.Generator()
        self.loader = self._make_loader()
        self.iters_per_epoch = len(self.loader)
        if self.s.sync_bn and self.world_size > 1:
            if self.device.type == "cuda":
                model = du.sync_bn(model)
            else:
                logger.info("train.sync_bn: SyncBatchNorm needs CUDA; keeping per-process BatchNorm on CPU")
        self.model = model.to(self.device)
        self.accumulate = max(1, round(self.s.nominal_batch / (self.batch_size * self.world_size)))
        wd_scale = self.batch_size * self.world_size * self.accumulate / self.s.nominal_batch
        # see TrainSettings.loss_scale
        self.loss_multiplier = (float(self.batch_size * self.world_size) if self.s.loss_scale == "batch"
                                else 1.0 / self.accumulate)
        self.optimizer = build_optimizer(self.model, self.s.optimizer, weight_decay_scale=wd_scale)
        total = self.s.epochs * self.iters_per_epoch
        warmup = self.s.warmup_iters
        if warmup is None:
            warmup = max(round(self.s.warmup_epochs * self.iters_per_epoch), self.s.min_warmup_iters) \
                if self.s.warmup_epochs > 0 else 0
        self.schedule = LRSchedule(
            total, self.s.lr_schedule, self.iters_per_epoch, self.s.min_lr_ratio, self.s.steps, self.s.gamma,
            warmup, self.s.warmup_ratio, self.s.warmup_bias_lr, self.s.warmup_momentum)
        ema = self.s.ema
        self.ema = ModelEMA(self.model, float(ema["decay"]), float(ema.get("tau", 2000.0))) \
            if ema.get("enabled", True) else None
        self.amp = bool(self.s.amp) and self.device.type == "cuda"
        if self.s.amp and not self.amp:
            logger.info("AMP requested but running on CPU: training in fp32")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        maybe_compile(self.model, self.s.compile)  # in place; the EMA copy above stays eager
        self.forward = _LossForward(self.model)
        self.buffers = BufferSnapshot(self.model)  # undoes a skipped batch's BatchNorm updates
        if self.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward = nn.parallel.DistributedDataParallel(self.forward, device_ids=ids)
        self.checkpoints = CheckpointManager(self.work_dir, int(self.s.checkpoint.get("keep_last", 3)))
        self.writer = MetricsWriter(self.work_dir, enabled=self.rank == 0, tensorboard=self.rt.tensorboard)
        self.val_set = self.evaluator = None
        if self.s.eval_interval:  # fail before training, not after the first epoch, when val data are missing
            self.val_set = build_dataset(self.cfg, "val")
            self.evaluator = build_evaluator(self.val_set) if self.rank == 0 else None
        logger.info(f"{len(self.train_set)} training images, batch {self.batch_size} x {self.world_size} "
                    f"process(es), accumulate {self.accumulate} (nominal {self.s.nominal_batch}), "
                    f"{self.iters_per_epoch} iterations/epoch, warm-up {warmup} iterations, device {self.device}")

    def _make_loader(self) -> torch.utils.data.DataLoader:
        return build_loader(self.train_set, self.batch_size, self.sampler, self.num_workers, self.train_collate,
                            generator=self.loader_gen, loader_cls=self.loader_cls)

    @property
    def detector(self) -> nn.Module:
        return unwrap_model(self.model)

    # ------------------------------------------------------------------------------------------
    # checkpoints
    # ------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.detector.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {"last_iter": self.schedule.last_iter},
            "scaler": self.scaler.state_dict() if self.amp else None,
            "epoch": self.epoch, "iter": self.iter, "epoch_iter": self.epoch_iter,
            "epoch_sums": dict(self.epoch_sums), "epoch_count": self.epoch_count,
            "rng": get_rng_state(), "config": format_config(self.cfg), "best": dict(self.best),
            "guard": self.guard.state_dict(),
        }

    def save(self, name: str) -> Path | None:
        """Write checkpoint ``name`` (rank 0) unless the weights are suspect; returns its path or None
        (the same answer on every rank).

        Nothing is written while a non-finite streak lasts or when a weight is not finite, so a
        diverging run never replaces (or rotates out) the last good checkpoint.
        """
        path = self.work_dir / name
        bad = nonfinite_tensors(self.detector.state_dict())
        if self.ema is not None:
            bad += nonfinite_tensors(self.ema.module.state_dict())
        if self.guard.streak or bad:
            why = (f"{self.guard.streak} non-finite iteration(s)/step(s) since the last good step" if self.guard.streak
                   else f"non-finite weights in {', '.join(bad[:5])}")
            logger.warning(f"not writing {name}: {why}; the newest checkpoint stays "
                           f"{find_latest_checkpoint(self.work_dir)}")
            path = None
        elif self.rank == 0:
            self.checkpoints.save(self.state_dict(), name)
            logger.info(f"saved {path}")
        du.barrier()
        return path

    def resume(self, resume: str) -> None:
        """Restore everything from ``resume`` (a path, or ``"auto"``: the newest checkpoint in the work
        dir that loads; a newer one that does not is skipped with a warning)."""
        if resume == "auto":
            found = load_latest_checkpoint(self.work_dir, map_location=self.device)
            if found is None:
                logger.info(f"--resume: no checkpoint in {self.work_dir}; starting from scratch")
                return
            path, ckpt = found
        else:
            path = Path(resume)
            ckpt = load_checkpoint(path, map_location=self.device)
        missing = [k for k in RESUME_KEYS if not isinstance(ckpt, Mapping) or k not in ckpt]
        if missing:
            raise CheckpointError(f"{path}: cannot resume from it: not a detkit training checkpoint (missing "
                                  f"{', '.join(missing)}); use --load-from to start from its weights only")
        self.detector.load_state_dict(ckpt["model"])
        if self.ema and ckpt.get("ema"):
            self.ema.load_state_dict(ckpt["ema"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.schedule.load_state_dict(ckpt["scheduler"])
        if self.amp and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.iter, self.epoch_iter = int(ckpt["epoch"]), int(ckpt["iter"]), int(ckpt["epoch_iter"])
        self.best = dict(ckpt.get("best") or self.best)
        self.epoch_sums = {k: float(v) for k, v in (ckpt.get("epoch_sums") or {}).items()}
        self.epoch_count = int(ckpt.get("epoch_count", 0))
        self.guard.load_state_dict(ckpt.get("guard") or {})
        set_rng_state(ckpt["rng"])
        self.writer.load_history()
        logger.info(f"resumed from {path}: epoch {self.epoch}, iteration {self.iter}")

    # ------------------------------------------------------------------------------------------
    # training
    # ------------------------------------------------------------------------------------------

    def _start_epoch(self, epoch: int) -> None:
        idx = assigner_index(self.s.assigner_schedule, epoch)
        if idx >= 0 and getattr(self, "_assigner_idx", None) != idx:
            self.detector.head.assigner = build_assigner(self.s.assigner_schedule[idx][1])
            logger.info(f"epoch {epoch + 1}: assigner {type(self.detector.head.assigner).__name__}")
        self._assigner_idx = idx
        n = self.s.no_mosaic_last_epochs
        if n > 0 and epoch >= self.s.epochs - n and not getattr(self, "_mix_off", False):
            count = set_mix_transforms(self.train_set, False)
            self._mix_off = True
            self.loader = self._make_loader()
            logger.info(f"epoch {epoch + 1}: Mosaic/MixUp off for the last {n} epochs ({count} transform(s))")
        self.sampler.set_epoch(epoch)
        self.sampler.skip(self.epoch_iter * self.batch_size)
        self.loader_gen.manual_seed(self.s.seed + epoch)

    def train(self) -> dict[str, Any]:
        """Run the remaining epochs; returns ``{"best": ..., "last_metrics": ...}``.

        Raises:
            TrainingInterrupted: after a SIGINT / SIGTERM, once the checkpoint is written.
            TrainingAborted: on a second signal (a KeyboardInterrupt), at once.
            TrainingDiverged: after ``train.max_nonfinite_steps`` non-finite iterations in a row.
        """
        logger.info(f"work dir {self.work_dir}")
        if self.rank == 0:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            (self.work_dir / "config.py").write_text(format_config(self.cfg), encoding="utf-8")
        metrics: dict[str, float] = {}
        try:
            with StopSignals() as self.signals:
                while self.epoch < self.s.epochs:
                    if any_rank([self.signals.requested is not None], self.device)[0]:
                        self._stop(saved=find_latest_checkpoint(self.work_dir))  # during evaluation
                    metrics = self._train_epoch()
            if self.rank == 0 and self.rt.plot_interval <= 0:
                self._plot()
        finally:
            self.writer.close()
            self.work_lock.release()
        return {"best": dict(self.best), "last_metrics": metrics}

    def _train_epoch(self) -> dict[str, float]:
        epoch = self.epoch
        self._start_epoch(epoch)
        if self.epoch_iter == 0:  # a resumed epoch keeps the sums of its iterations before the kill
            self.epoch_sums, self.epoch_count = {}, 0
            self.guard.new_epoch()
        if self.epoch_iter < self.iters_per_epoch:  # (an epoch stopped after its last iteration has none left)
            self._run_iterations(epoch)
        means = {k: v / max(self.epoch_count, 1) for k, v in du.reduce_mean(
            {k: torch.as_tensor(v) for k, v in self.epoch_sums.items()}).items()}
        self.epoch, self.epoch_iter = epoch + 1, 0
        self._sync_ranks()
        return self._end_epoch(means)

    def _run_iterations(self, epoch: int) -> None:
        from tqdm import tqdm

        seen, t0 = 0, time.perf_counter()
        bar = tqdm(self.loader, desc=f"epoch {epoch + 1}/{self.s.epochs}", initial=self.epoch_iter,
                   total=self.iters_per_epoch, disable=not (self.progress and self.rank == 0), dynamic_ncols=True)
        interval = int(self.s.checkpoint.get("interval_iters", 0) or 0)
        try:
            for batch in bar:
                values, finite, step_now = self._train_step(batch)
                if finite:  # a skipped batch's values are NaN: kept out of the epoch means
                    for k, v in values.items():
                        self.epoch_sums[k] = self.epoch_sums.get(k, 0.0) + float(v)
                    self.epoch_count += 1
                seen += batch["images"].shape[0] * self.world_size
                if self.iter % self.s.log_interval == 0 or self.epoch_iter == self.iters_per_epoch:
                    self._log_iter(values, bar, seen / max(time.perf_counter() - t0, 1e-9))
                if self.guard.diverged:
                    self._diverged()
                saved = None
                if interval and self.iter % interval == 0 and self.iter % self.accumulate == 0 \
                        and self.epoch_iter < self.iters_per_epoch:
                    saved = self.save(f"iter_{self.iter}.pth")
                if step_now and self._stop_requested():
                    self._stop(saved=saved or self.save(f"iter_{self.iter}.pth"))
        finally:
            bar.close()

    def _stop_requested(self) -> bool:
        """A stop signal arrived (on any rank: under DDP the flag agreed in this iteration)."""
        return self._agreed_stop if self.world_size > 1 else self.signals.requested is not None

    def _stop(self, saved: Path | None) -> None:
        """Raise TrainingInterrupted after a stop signal (the checkpoint is already written)."""
        signum = self.signals.requested or signal.SIGTERM  # under DDP another rank may have got it
        name = signal.Signals(signum).name
        where = f"iteration {self.iter} (epoch {self.epoch + 1}, {self.epoch_iter}/{self.iters_per_epoch})"
        if saved is not None:
            msg = f"stopped by {name} after {where}; saved {saved}; continue with --resume"
        else:
            msg = (f"stopped by {name} after {where}; no new checkpoint written (see the warning above); "
                   f"the newest is {find_latest_checkpoint(self.work_dir)}")
        logger.warning(msg)
        raise TrainingInterrupted(msg, int(signum), saved)

    def _diverged(self) -> None:
        msg = self.guard.divergence_message(self.iter - 1, self.epoch, find_latest_checkpoint(self.work_dir))
        logger.error(msg)
        raise TrainingDiverged(msg)

    def _train_step(self, batch: dict[str, Any]) -> tuple[dict[str, Tensor], bool, bool]:
        """One iteration; returns ``(values to log, whether the loss was finite, whether it ended an
        optimizer step)``."""
        it = self.iter
        self.schedule.step(self.optimizer, it)
        batch = move_batch(batch, self.device)
        if self.s.multi_scale is not None:
            lo, hi = (int(v) for v in self.s.multi_scale)
            step = it // max(1, self.s.multi_scale_interval)
            divisor = int(getattr(self.detector, "size_divisor", 32))
            batch = resize_batch(batch, multi_scale_size(lo, hi, self.s.seed, step, divisor), divisor)
        step_now = (it + 1) % self.accumulate == 0 or self.epoch_iter + 1 == self.iters_per_epoch
        sync = contextlib.nullcontext() if step_now or self.world_size == 1 else self.forward.no_sync()
        self.buffers.take()
        with sync:
            with torch.autocast(self.device.type, enabled=self.amp):
                out = self.forward(batch)
            loss_keys = [k for k in out if k.startswith("loss_")]
            if not loss_keys:
                raise ValueError(f"the model's loss dict has no 'loss_*' key (keys: {sorted(out)})")
            loss = sum(out[k].float() for k in loss_keys)
            finite = bool(torch.isfinite(loss))
            if self.world_size > 1:  # every rank skips together, or DDP's gradient all-reduce would hang
                bad_any, self._agreed_stop = any_rank([not finite, self.signals.requested is not None], self.device)
                finite = not bad_any
            if finite:
                self.scaler.scale(loss * self.loss_multiplier).backward()
            else:
                self._skip_iteration(it, {k: float(out[k].detach()) for k in loss_keys})
        if step_now:
            if finite:
                self._optimizer_step()
            else:  # the window's last backward (DDP's gradient sync) did not run: drop its update
                self.optimizer.zero_grad(set_to_none=True)
        self.iter += 1
        self.epoch_iter += 1
        values = {k: out[k].detach().float() for k in out if k.startswith(("loss_", "stat_"))}
        values["loss"] = loss.detach()
        return values, finite, step_now

    def _skip_iteration(self, it: int, parts: Mapping[str, float]) -> None:
        self.buffers.restore()
        self.guard.loss_skipped(it, parts)
        shown = ", ".join(f"{k}={v:.4g}" for k, v in parts.items())
        if all(math.isfinite(v) for v in parts.values()):
            shown += " here; non-finite on another process"
        logger.warning(f"iteration {it}: non-finite loss ({shown}); batch skipped "
                       f"({self.guard.loss_total} so far, {self.guard.streak} in a row)")

    def _optimizer_step(self) -> None:
        stepped, bad = guarded_optimizer_step(self.optimizer, self.scaler, list(self.detector.named_parameters()),
                                              self.s.grad_clip)
        if not stepped:
            self.guard.grad_skipped(self.iter, bad)
            names = ", ".join(bad[:3]) + (" ..." if len(bad) > 3 else "")
            scale = f"; grad scale lowered to {self.scaler.get_scale():g}" if self.amp else ""
            # Under AMP a few of these are the grad scaler probing its scale: not a warning.
            log = logger.info if self.amp and self.guard.streak < 3 else logger.warning
            log(f"iteration {self.iter}: non-finite gradients in {names or '?'}; optimizer step dropped{scale} "
                f"({self.guard.grad_total} so far, {self.guard.streak} in a row)")
            return
        self.guard.step_ok()
        if self.ema is not None:
            self.ema.update(self.model)

    def _sync_ranks(self) -> None:
        """Give every rank rank 0's BatchNorm statistics and EMA (parameters already agree under DDP)."""
        du.broadcast_state(self.detector)
        if self.ema is not None:
            du.broadcast_state(self.ema.module)

    def _log_iter(self, values: Mapping[str, Tensor], bar: Any, img_s: float) -> None:
        reduced = du.reduce_mean(values)
        lr = self.optimizer.param_groups[0]["lr"]
        record = {k: float(v) for k, v in reduced.items()}
        self.writer.log("train", self.iter, {"epoch": self.epoch + 1, **record, "lr": lr, "img_s": img_s,
                                             **self.guard.run_counters()})
        bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{lr:.2e}", img_s=f"{img_s:.1f}")

    def _end_epoch(self, means: Mapping[str, Tensor]) -> dict[str, float]:
        epoch = self.epoch
        row: dict[str, Any] = {k: float(v) for k, v in means.items()}
        row["lr"] = self.optimizer.param_groups[0]["lr"]
        row.update(self.guard.epoch_counters())
        metrics: dict[str, float] = {}
        e = self.s.eval_interval
        if e and (epoch % e == 0 or epoch == self.s.epochs):
            metrics = self.evaluate()
            row.update({k: v for k, v in metrics.items() if "/" not in k})
        self.writer.log_epoch(epoch, row)
        value = metrics.get(self.best["metric"])
        is_best = self.rank == 0 and value is not None and value > self.best["value"]
        if is_best:
            self.best.update(value=float(value), epoch=epoch)
        saved = self.save(f"epoch_{epoch}.pth")
        if is_best and saved is not None:
            self.checkpoints.save(self.state_dict(), "best.pth")
            logger.info(f"new best {self.best['metric']} {value:.4f} at epoch {epoch}")
        if self.rank == 0:
            k = self.rt.plot_interval
            if k > 0 and (epoch % k == 0 or epoch == self.s.epochs):
                self._plot()
            parts = [f"{k} {v:.4f}" for k, v in row.items() if not math.isnan(v)]
            logger.info(f"epoch {epoch}/{self.s.epochs}: " + ", ".join(parts))
        return metrics

    def _plot(self) -> None:
        plot_training(self.writer.epochs, self.work_dir)
        if self.evaluator is not None and self.evaluator.precision is not None:
            plot_pr_curves(self.evaluator.precision, self.work_dir / "pr_curves.png", self.evaluator.class_names)

    def evaluate(self) -> dict[str, float]:
        """COCO metrics of the EMA weights (or the model's) on ``data.val`` (rank 0; {} elsewhere)."""
        if self.val_set is None:
            self.val_set = build_dataset(self.cfg, "val")
            self.evaluator = build_evaluator(self.val_set) if self.rank == 0 else None
        val = self.cfg.data.val
        model = self.ema.module if self.ema is not None else self.detector
        metrics, _ = evaluate_dataset(model, self.val_set, self.evaluator, self.device, self.collate,
                                      int(val.get("batch_size", self.batch_size)), int(val.get("num_workers", 0)),
                                      self.progress)
        if self.rank == 0:
            self.writer.log("val", self.epoch, {k: v for k, v in metrics.items()})
            logger.info(f"evaluation after epoch {self.epoch}:\n{self.evaluator.summary()}\n"
                        f"{self.evaluator.per_class_table()}")
        return metrics
