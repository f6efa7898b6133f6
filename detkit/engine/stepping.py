"""The optimizer step with its non-finite guards (:mod:`detkit.engine.guards`), as the trainer takes it.

Per iteration: :meth:`GuardedStep.begin` before the forward pass, then :meth:`~GuardedStep.backward`
for a finite loss or :meth:`~GuardedStep.skip` for a non-finite one; at the end of an accumulation
window :meth:`~GuardedStep.step` (or :meth:`~GuardedStep.drop` when the window's last loss was
skipped). Every skipped iteration and dropped step is counted in the :class:`NonFiniteGuard` and
logged.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from detkit.engine.ema import ModelEMA
from detkit.engine.guards import BufferSnapshot, NonFiniteGuard, guarded_optimizer_step, nonfinite_tensors

__all__ = ["GuardedStep", "save_refusal"]

logger = logging.getLogger("detkit")


class GuardedStep:
    """Backward, optimizer step and EMA update that never let a non-finite value into the weights.

    Args:
        model: the trained model (its parameters are checked; DDP unwrapped by the caller).
        optimizer / scaler: the optimizer and the AMP grad scaler (disabled on CPU).
        ema: the weights' moving average, updated after each good step (or None).
        guard: counts skipped iterations and dropped steps; says when the run diverged.
        grad_clip: max global gradient L2 norm, or None.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                 ema: ModelEMA | None, guard: NonFiniteGuard, grad_clip: float | None) -> None:
        self.model = model
        self.optimizer = optimizer
        self.scaler = scaler
        self.ema = ema
        self.guard = guard
        self.grad_clip = grad_clip
        self.buffers = BufferSnapshot(model)  # undoes a skipped batch's BatchNorm updates

    def begin(self) -> None:
        """Before the forward pass: remember the buffers a skipped batch must not change."""
        self.buffers.take()

    def backward(self, loss: Tensor) -> None:
        self.scaler.scale(loss).backward()

    def skip(self, iteration: int, parts: Mapping[str, float]) -> None:
        """A non-finite loss: no backward; the forward pass's BatchNorm updates put back."""
        self.buffers.restore()
        self.guard.loss_skipped(iteration, parts)
        shown = ", ".join(f"{k}={v:.4g}" for k, v in parts.items())
        if all(math.isfinite(v) for v in parts.values()):
            shown += " here; non-finite on another process"
        logger.warning(f"iteration {iteration}: non-finite loss ({shown}); batch skipped "
                       f"({self.guard.loss_total} so far, {self.guard.streak} in a row)")

    def step(self, iteration: int) -> None:
        """The optimizer step of an accumulation window, dropped when a gradient is not finite."""
        stepped, bad = guarded_optimizer_step(self.optimizer, self.scaler, list(self.model.named_parameters()),
                                              self.grad_clip)
        if not stepped:
            self.guard.grad_skipped(iteration, bad)
            names = ", ".join(bad[:3]) + (" ..." if len(bad) > 3 else "")
            amp = self.scaler.is_enabled()
            scale = f"; grad scale lowered to {self.scaler.get_scale():g}" if amp else ""
            # Under AMP a few of these are the grad scaler probing its scale: not a warning.
            log = logger.info if amp and self.guard.streak < 3 else logger.warning
            log(f"iteration {iteration}: non-finite gradients in {names or '?'}; optimizer step dropped{scale} "
                f"({self.guard.grad_total} so far, {self.guard.streak} in a row)")
            return
        self.guard.step_ok()
        if self.ema is not None:
            self.ema.update(self.model)

    def drop(self) -> None:
        """The window's last backward did not run (skipped loss; under DDP no gradient sync): no update."""
        self.optimizer.zero_grad(set_to_none=True)


def save_refusal(model: nn.Module, ema: ModelEMA | None, guard: NonFiniteGuard) -> str | None:
    """Why a checkpoint must not be written now (a non-finite streak, or weights that are not
    finite), or None: a diverging run never replaces the last good checkpoint."""
    if guard.streak:
        return f"{guard.streak} non-finite iteration(s)/step(s) since the last good step"
    bad = nonfinite_tensors(model.state_dict())
    if ema is not None:
        bad += nonfinite_tensors(ema.module.state_dict())
    return f"non-finite weights in {', '.join(bad[:5])}" if bad else None
