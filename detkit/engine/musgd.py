"""MuSGD: Muon's orthogonalised momentum update mixed with SGD, as YOLO26 trains (Ultralytics 8.4).

A parameter of a group with ``use_muon=True`` (the 2-D and 4-D weights, :func:`detkit.engine.optim.param_groups`
with ``matrices=True``) takes two steps per call, in this order::

    M   <- momentum * M + (1 - momentum) * g                     (Muon's buffer, an EMA of the gradient)
    U   <- NS5(momentum * M + (1 - momentum) * g)   (nesterov)   or NS5(M)
    W   <- W - lr * muon * s * U                                  (s: see below; no weight decay here)
    B   <- momentum * B + (g + weight_decay * W)                  (SGD's buffer, after the Muon step)
    W   <- W - lr * sgd * ((g + weight_decay * W) + momentum * B) (nesterov)   or   ... * B

``NS5`` is the quintic Newton-Schulz orthogonalisation of torch's ``torch.optim.Muon`` (5 iterations in
bfloat16, coefficients (3.4445, -4.7750, 2.0315)) on the weight flattened to ``(out, in * kh * kw)``.
``s`` is Ultralytics' shape factor ``sqrt(max(1, size(-2) / size(-1)))`` of the *unflattened* tensor: for a
Linear weight ``(out, in)`` it is Muon's usual ``sqrt(max(1, out / in))``, for a conv filter
``(out, in, kh, kw)`` it is ``sqrt(max(1, kh / kw))`` (1 for square kernels), not the flattened matrix's.
A channels-last filter is flattened in its logical ``(out, in, kh, kw)`` order (Ultralytics flattens it in
memory order: the same result up to bfloat16 rounding). Every other group gets SGD's update alone (torch's
``torch.optim.SGD`` arithmetic: coupled weight decay, dampening 0) with ``lr``.

Built on torch: the orthogonalisation is the Newton-Schulz function of ``torch.optim.Muon``
(``torch.optim._muon``), the SGD step torch's functional ``sgd``. ``torch.optim.Muon`` itself cannot hold
the parameters: it refuses anything but 2-D tensors (detectors' weights are 4-D conv filters), scales the
LR by the flattened shape, applies decoupled weight decay to the Muon step (MuSGD decays only its SGD step,
coupled) and writes its momentum EMA as a ``lerp``, whose float32 rounding differs from Ultralytics'
``m * B + (1 - m) * g`` in the last bit, enough to move bfloat16 roundings in Newton-Schulz.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim._muon import DEFAULT_A, DEFAULT_B, DEFAULT_C, DEFAULT_NS_STEPS, EPS
from torch.optim._muon import _zeropower_via_newtonschulz as _newton_schulz
from torch.optim.sgd import sgd as _sgd_step

__all__ = ["MuSGD", "muon_shape_factor"]

# Muon's Newton-Schulz settings: torch's defaults (Keller Jordan's), which Ultralytics' MuSGD uses too.
NS_COEFFICIENTS = (DEFAULT_A, DEFAULT_B, DEFAULT_C)
NS_STEPS = DEFAULT_NS_STEPS
NS_EPS = EPS


def muon_shape_factor(shape: torch.Size | tuple[int, ...]) -> float:
    """Ultralytics' scale of the orthogonalised update of a weight of ``shape`` (2-D or more):
    ``sqrt(max(1, shape[-2] / shape[-1]))``; 1 for square conv kernels whatever their channel counts."""
    return math.sqrt(max(1.0, shape[-2] / shape[-1]))


class MuSGD(torch.optim.Optimizer):
    """Muon + SGD for the groups with ``use_muon=True``, SGD for the others (see the module docstring).

    Args:
        params: parameters or groups; a group may set any argument below, ``muon`` and ``sgd`` included.
        lr: the learning rate (``lr * muon`` for the Muon step, ``lr * sgd`` for the SGD step of a Muon group).
        momentum: Muon's EMA factor and SGD's momentum (one value, as Ultralytics), in [0, 1).
        weight_decay: coupled L2 decay of the SGD step (never on the Muon step).
        nesterov: Nesterov momentum for both steps.
        use_muon: the default of a group's ``use_muon`` (its parameters must be 2-D or more).
        muon: the Muon step's LR multiplier (Ultralytics' ``build_optimizer``: 0.2).
        sgd: the SGD step's LR multiplier in a Muon group (Ultralytics: 1.0; plain groups always use 1).

    State per parameter: ``momentum_buffer`` (SGD's, as ``torch.optim.SGD`` names it) and, in a Muon group,
    ``muon_momentum_buffer``; ``state_dict`` / ``load_state_dict`` are the base class's (resume).

    Raises:
        ValueError: an argument out of range, or a ``use_muon`` group with a parameter of fewer than 2 dims.
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict[str, Any]], lr: float = 0.01, momentum: float = 0.9,
                 weight_decay: float = 0.0, nesterov: bool = True, use_muon: bool = False, muon: float = 0.2,
                 sgd: float = 1.0) -> None:
        if not (math.isfinite(lr) and lr >= 0.0):
            raise ValueError(f"MuSGD lr must be a finite number >= 0, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"MuSGD momentum must be in [0, 1), got {momentum}")
        if not (math.isfinite(weight_decay) and weight_decay >= 0.0):
            raise ValueError(f"MuSGD weight_decay must be a finite number >= 0, got {weight_decay}")
        if not (muon >= 0.0 and sgd >= 0.0):
            raise ValueError(f"MuSGD muon and sgd must be >= 0, got {muon}, {sgd}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov, use_muon=use_muon,
                        muon=muon, sgd=sgd)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        if group["use_muon"]:
            flat = [tuple(p.shape) for p in group["params"] if p.ndim < 2]
            if flat:
                raise ValueError(f"MuSGD: a use_muon group holds parameter(s) of shape {flat[0]}: Muon "
                                 f"orthogonalises matrices and conv filters only (2 dims or more)")

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One update of every parameter that has a gradient; returns ``closure()`` when given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            lr, momentum, nesterov = float(group["lr"]), float(group["momentum"]), bool(group["nesterov"])
            grads = [p.grad for p in params]
            sgd_lr = lr
            if group["use_muon"]:
                self._muon_step(params, grads, lr * float(group["muon"]), momentum, nesterov)
                sgd_lr = lr * float(group["sgd"])
            buffers: list[Tensor | None] = [self.state[p].get("momentum_buffer") for p in params]
            _sgd_step(params, grads, buffers, weight_decay=float(group["weight_decay"]), momentum=momentum,
                      lr=sgd_lr, dampening=0.0, nesterov=nesterov, maximize=False)
            if momentum != 0.0:
                for p, buffer in zip(params, buffers):
                    self.state[p]["momentum_buffer"] = buffer
        return loss

    def _muon_step(self, params: list[Tensor], grads: list[Tensor], lr: float, momentum: float,
                   nesterov: bool) -> None:
        """``W <- W - lr * s * NS5(...)`` for each parameter (torch's Newton-Schulz on the flattened update)."""
        updates = []
        for p, g in zip(params, grads):
            state = self.state[p]
            if "muon_momentum_buffer" not in state:
                state["muon_momentum_buffer"] = torch.zeros_like(p)
            buffer: Tensor = state["muon_momentum_buffer"]
            # the EMA as m * B + (1 - m) * g, not torch Muon's lerp: the last-bit difference in float32 flips bfloat16
            # roundings inside Newton-Schulz (1e-5 on the weights after 3 steps against Ultralytics' MuSGD)
            buffer.mul_(momentum).add_(g, alpha=1.0 - momentum)
            update = buffer.mul(momentum).add_(g, alpha=1.0 - momentum) if nesterov else buffer
            updates.append(update.reshape(update.shape[0], -1))
        tall = tall_orientation([(u.shape[0], u.shape[1], muon_shape_factor(p.shape), u.device, u.dtype)
                                 for u, p in zip(updates, params)])
        for p, matrix, as_tall in zip(params, updates, tall):
            rows, cols = matrix.shape
            if as_tall and rows <= cols:  # zero rows (they stay zero) make torch iterate on the transpose
                matrix = torch.cat([matrix, matrix.new_zeros(cols + 1 - rows, cols)])
            ortho = _newton_schulz(matrix, NS_COEFFICIENTS, NS_STEPS, NS_EPS)[:rows]
            p.add_(ortho.to(p.dtype).mul_(muon_shape_factor(p.shape)).reshape(p.shape), alpha=-lr)


def tall_orientation(matrices: list[tuple[int, int, float, Any, Any]]) -> list[bool]:
    """Whether Ultralytics' MuSGD orthogonalises each matrix of one group through its transpose (the
    ``(cols, cols)`` Gram matrix), given ``(rows, cols, shape factor, device, dtype)`` of each.

    Ultralytics stacks the matrices that share columns, shape factor, device and dtype (sorted by rows,
    a new stack where the rows fall below 1/16 of the stack's first) zero-padded to the stack's most rows,
    and iterates on the transpose when those rows exceed the columns. In exact arithmetic the result does
    not depend on it; in bfloat16 it does (3e-5 on the weights after 3 steps), so MuSGD takes the same side.
    """
    stacks: dict[tuple[Any, ...], list[int]] = {}
    for i, (_, cols, factor, device, dtype) in enumerate(matrices):
        stacks.setdefault((cols, factor, device, dtype), []).append(i)
    tall = [False] * len(matrices)
    for (cols, *_), members in stacks.items():
        members.sort(key=lambda i: -matrices[i][0])
        first = matrices[members[0]][0]
        for i in members:
            if first > 16 * matrices[i][0]:  # this one starts a new stack
                first = matrices[i][0]
            tall[i] = first > cols
    return tall
