"""Guards that keep a long run alive and its work safe: non-finite losses and gradients, stop signals.

* :class:`NonFiniteGuard` counts iterations skipped for a non-finite loss and optimizer steps
  dropped for non-finite gradients, and says when too many came in a row (the run diverged).
* :class:`BufferSnapshot` keeps the model's buffers (BatchNorm statistics) from before a forward
  pass, so a skipped batch leaves no NaN in them.
* :func:`guarded_optimizer_step`: unscale, measure the gradient norm, clip, and step only when the
  norm is finite (a GradScaler lowers its scale either way).
* :class:`StopSignals`: while training, the first SIGINT / SIGTERM asks for a clean stop (finish
  the step, save, exit); a second one aborts at once.
* :func:`any_rank`: one all-reduce so that every process takes the same skip / stop decision.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.utils import clip_grads_with_norm_, get_total_norm

from detkit.errors import ArgumentMessage

__all__ = [
    "STOP_SIGNALS",
    "BufferSnapshot",
    "NonFiniteGuard",
    "StopSignals",
    "TrainingAborted",
    "TrainingDiverged",
    "TrainingInterrupted",
    "any_rank",
    "guarded_optimizer_step",
    "nonfinite_tensors",
    "signal_exit_code",
]

logger = logging.getLogger("detkit")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_NAMES_SHOWN = 5  # parameter / tensor names quoted in a message


def signal_exit_code(signum: int) -> int:
    """The shell's status for a process ended by ``signum``: 128 + signum (130 SIGINT, 143 SIGTERM)."""
    return 128 + int(signum)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class TrainingInterrupted(ArgumentMessage):
    """Training stopped cleanly after a stop signal; ``checkpoint`` is what ``--resume`` continues from.

    The message may name the argument that continues the run (``{resume:'auto'}`` with ``values``:
    :class:`~detkit.errors.ArgumentMessage`; a tool prints it as ``--resume``).

    Attributes:
        signum: the signal that asked for the stop.
        checkpoint: the checkpoint written at the stop (None when none could be written).
        exit_code: 128 + signum, the status tools/train.py exits with.
    """

    def __init__(self, message: str, signum: int, checkpoint: Path | None,
                 values: Mapping[str, object] | None = None) -> None:
        super().__init__(message, values=values)
        self.signum = signum
        self.checkpoint = checkpoint
        self.exit_code = signal_exit_code(signum)


class TrainingAborted(KeyboardInterrupt):
    """A second stop signal arrived before the clean stop finished: training ends at once, without
    writing a checkpoint (the files already written stay intact).

    Args:
        signum: the second signal (``exit_code`` is 128 + signum).
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"aborted by a second {_signal_name(signum)}")
        self.signum = signum
        self.exit_code = signal_exit_code(signum)


class TrainingDiverged(RuntimeError):
    """Too many consecutive iterations had a non-finite loss or non-finite gradients."""


# ----------------------------------------------------------------------------------------------
# non-finite losses and gradients
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class NonFiniteGuard:
    """Counters of skipped iterations and dropped steps, and the divergence rule.

    A *bad event* is an iteration whose loss was not finite (its batch is skipped: no backward)
    or an optimizer step whose gradients were not finite (the step is dropped; under AMP this is
    also how the grad scaler handles fp16 overflow). ``streak`` counts bad events since the last
    optimizer step that went through; when it reaches ``max_consecutive`` the run has diverged.

    Attributes:
        max_consecutive: the limit (``train.max_nonfinite_steps``); None never stops.
        streak: bad events since the last good optimizer step.
        loss_total / grad_total: counts over the whole run (kept in checkpoints).
        loss_epoch / grad_epoch: counts of the current epoch.
        first_bad_iter: iteration of the first bad event of the current streak (-1: none).
        last_loss: ``(iteration, {loss name: value})`` of the newest non-finite loss.
        last_grad: ``(iteration, [parameter names])`` of the newest non-finite gradients.
    """

    max_consecutive: int | None = 20
    streak: int = 0
    loss_total: int = 0
    grad_total: int = 0
    loss_epoch: int = 0
    grad_epoch: int = 0
    first_bad_iter: int = -1
    last_loss: tuple[int, dict[str, float]] | None = None
    last_grad: tuple[int, list[str]] | None = None

    def _bad(self, iteration: int) -> None:
        if self.streak == 0:
            self.first_bad_iter = iteration
        self.streak += 1

    def loss_skipped(self, iteration: int, parts: Mapping[str, float]) -> None:
        """Record an iteration skipped for a non-finite loss (``parts``: its loss values)."""
        self._bad(iteration)
        self.loss_total += 1
        self.loss_epoch += 1
        self.last_loss = (iteration, dict(parts))

    def grad_skipped(self, iteration: int, parameters: Sequence[str]) -> None:
        """Record an optimizer step dropped for non-finite gradients of ``parameters``."""
        self._bad(iteration)
        self.grad_total += 1
        self.grad_epoch += 1
        self.last_grad = (iteration, list(parameters))

    def step_ok(self) -> None:
        """An optimizer step went through: the streak ends."""
        self.streak, self.first_bad_iter = 0, -1

    def new_epoch(self) -> None:
        self.loss_epoch = self.grad_epoch = 0

    @property
    def diverged(self) -> bool:
        return self.max_consecutive is not None and self.streak >= self.max_consecutive

    def run_counters(self) -> dict[str, int]:
        """Whole-run counts, for per-iteration log records."""
        return {"nonfinite_loss_total": self.loss_total, "nonfinite_grad_total": self.grad_total}

    def epoch_counters(self) -> dict[str, int]:
        """This epoch's counts, for the per-epoch metrics row."""
        return {"nonfinite_loss": self.loss_epoch, "nonfinite_grad": self.grad_epoch}

    def divergence_message(self, iteration: int, epoch: int, latest: Path | None) -> str:
        """What happened, where, what was kept, and what to try."""
        lines = [
            f"training diverged: {self.streak} consecutive iterations/steps with a non-finite loss or "
            f"non-finite gradients (iterations {self.first_bad_iter}..{iteration}, epoch {epoch + 1}; "
            f"train.max_nonfinite_steps={self.max_consecutive})"
        ]
        if self.last_loss is not None:
            it, parts = self.last_loss
            shown = ", ".join(f"{k}={v:.4g}" for k, v in parts.items())
            lines.append(f"  last non-finite loss at iteration {it}: {shown or 'on another process'}")
        if self.last_grad is not None:
            it, names = self.last_grad
            more = f" and {len(names) - _NAMES_SHOWN} more" if len(names) > _NAMES_SHOWN else ""
            lines.append(f"  last non-finite gradients at iteration {it} in: "
                         f"{', '.join(names[:_NAMES_SHOWN]) or '?'}{more}")
        kept = f"the newest checkpoint, {latest}," if latest else "no checkpoint"
        lines.append(f"  {kept} was written before the divergence and is left as it was "
                     "(nothing was saved during the non-finite streak)")
        lines.append("  try a lower train.optimizer.lr, a longer warm-up, train.grad_clip, train.amp=False, "
                     "or check the data (tools/check_dataset.py); train.max_nonfinite_steps=None never stops")
        return "\n".join(lines)

    def state_dict(self) -> dict[str, int]:
        return {"loss_total": self.loss_total, "grad_total": self.grad_total,
                "loss_epoch": self.loss_epoch, "grad_epoch": self.grad_epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for key in ("loss_total", "grad_total", "loss_epoch", "grad_epoch"):
            setattr(self, key, int(state.get(key, 0)))


class BufferSnapshot:
    """A copy of a module's buffers (e.g. BatchNorm running statistics) to undo one forward pass.

    A batch whose loss is NaN has usually put NaN into the running statistics during its forward
    pass already; :meth:`restore` after skipping it puts back the values from before.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self._buffers: list[Tensor] = []
        self._copies: list[Tensor] = []

    @torch.no_grad()
    def take(self) -> None:
        """Copy the current buffers (reusing the copies' storage from the previous call)."""
        buffers = list(self.module.buffers())
        same = len(buffers) == len(self._copies) and all(
            b.shape == c.shape and b.dtype == c.dtype and b.device == c.device for b, c in zip(buffers, self._copies))
        if not same:
            self._copies = [b.detach().clone() for b in buffers]
        elif buffers:
            torch._foreach_copy_(self._copies, [b.detach() for b in buffers])
        self._buffers = buffers

    @torch.no_grad()
    def restore(self) -> None:
        """Write the copied values back into the buffers they came from."""
        if self._buffers:
            torch._foreach_copy_(self._buffers, self._copies)


def nonfinite_tensors(named: Mapping[str, Any]) -> list[str]:
    """Names of the floating-point tensors in ``named`` holding a NaN or an infinity."""
    items = [(k, v) for k, v in named.items() if isinstance(v, Tensor) and v.is_floating_point() and v.numel()]
    if not items:
        return []
    finite = torch.stack([torch.isfinite(v).all() for _, v in items]).cpu()  # one device sync
    return [k for (k, _), ok in zip(items, finite.tolist()) if not ok]


def guarded_optimizer_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                           named_parameters: Sequence[tuple[str, nn.Parameter]],
                           grad_clip: float | None) -> tuple[bool, list[str]]:
    """One optimizer step that never applies a NaN or infinite gradient.

    Steps: unscale (AMP) -> total gradient norm -> when finite: clip to ``grad_clip`` and step;
    otherwise drop the step -> ``scaler.update()`` (under AMP a dropped step lowers the scale, as
    the scaler's own overflow check would) -> zero the gradients.

    Returns:
        ``(stepped, names)``: whether the step went through, and the parameters whose gradients
        were not finite (empty when it stepped).
    """
    scaler.unscale_(optimizer)  # no-op when the scaler is disabled
    params = [p for _, p in named_parameters if p.grad is not None]
    grads = [p.grad for p in params if p.grad is not None]  # all of them: params keeps those with one
    norm = get_total_norm(grads) if grads else torch.zeros(())
    stepped = bool(torch.isfinite(norm))
    bad: list[str] = []
    if stepped:
        if grad_clip:
            clip_grads_with_norm_(params, float(grad_clip), norm)
        scaler.step(optimizer)
    else:
        bad = nonfinite_tensors({n: p.grad for n, p in named_parameters if p.grad is not None})
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return stepped, bad


def any_rank(flags: Sequence[bool], device: torch.device) -> list[bool]:
    """Each flag OR-ed over all processes (one all-reduce); the flags themselves in one process."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return [bool(f) for f in flags]
    t = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [v > 0.5 for v in t.tolist()]


# ----------------------------------------------------------------------------------------------
# stop signals
# ----------------------------------------------------------------------------------------------


class StopSignals:
    """Context manager turning SIGINT / SIGTERM into a request to stop at the next safe point.

    Inside the ``with`` block (main thread only: Python lets only the main thread set signal
    handlers; elsewhere the block changes nothing), the first signal sets :attr:`requested` and
    logs what will happen; the trainer then finishes its optimizer step, saves a checkpoint and
    raises :class:`TrainingInterrupted`. A second signal restores the previous handlers and
    raises :class:`TrainingAborted` wherever the main thread is. Leaving the block restores the
    handlers that were there before.

    Forked children (data-loader workers) inherit the handler; it ignores signals delivered to
    any process other than the one that installed it.
    """

    def __init__(self, signals: Sequence[int] = STOP_SIGNALS) -> None:
        self.signals = tuple(signals)
        self.requested: int | None = None
        self._previous: dict[int, Any] = {}
        self._pid = os.getpid()

    @property
    def installed(self) -> bool:
        return bool(self._previous)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            logger.debug("not in the main thread: SIGINT/SIGTERM keep their handlers during training")
            return self
        self._pid = os.getpid()
        for s in self.signals:
            self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def restore(self) -> None:
        """Put back the handlers that were installed before (idempotent)."""
        for s, handler in self._previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self._pid:
            return
        if self.requested is None:
            self.requested = signum
            logger.warning(f"{_signal_name(signum)} received: finishing the current optimizer step, then saving "
                           "a checkpoint and stopping (send it again to abort at once)")
            return
        self.restore()
        raise TrainingAborted(signum)
