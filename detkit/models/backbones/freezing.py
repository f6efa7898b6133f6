"""Frozen stages and BatchNorm kept in eval mode, shared by every backbone.

A backbone that subclasses :class:`FrozenStagesMixin` sets ``frozen_stages`` and ``norm_eval``, says
which of its modules ``frozen_stages`` covers (:meth:`FrozenStagesMixin._frozen_modules`: each backbone
numbers its stages its own way) and calls ``self._freeze()`` at the end of ``__init__``. The mixin then
keeps the contract on every ``train(True)``:

- the frozen modules have ``requires_grad`` off and stay in eval mode (their BatchNorm statistics and
  dropout are fixed);
- with ``norm_eval``, every BatchNorm of the backbone stays in eval mode (pretrained statistics kept), the
  unfrozen parameters still train.

``train(False)`` / ``eval()`` is PyTorch's.
"""

from __future__ import annotations

from typing import TypeVar

from torch import nn

from detkit.models.layers import freeze, norm_to_eval

__all__ = ["FrozenStagesMixin"]

_M = TypeVar("_M", bound="FrozenStagesMixin")


class FrozenStagesMixin(nn.Module):
    """``frozen_stages`` / ``norm_eval`` for a backbone (see the module docstring).

    Attributes (set by the subclass before it calls :meth:`_freeze`):
        frozen_stages: how many stages are frozen, counted as the backbone documents; negative: none.
        norm_eval: keep every BatchNorm in eval mode while training.
    """

    frozen_stages: int
    norm_eval: bool

    def _frozen_modules(self) -> list[nn.Module]:
        """The modules ``frozen_stages`` covers (empty when nothing is frozen)."""
        raise NotImplementedError(f"{type(self).__name__} must say which modules frozen_stages covers")

    def _freeze(self) -> None:
        """Stop the gradients of the frozen modules and put them in eval mode."""
        freeze(self._frozen_modules())

    def train(self: _M, mode: bool = True) -> _M:
        """PyTorch's ``train(mode)``; in training mode the frozen modules (and, with ``norm_eval``, every
        BatchNorm) are put back in eval mode."""
        super().train(mode)
        if mode:
            self._freeze()
            if self.norm_eval:
                norm_to_eval(self)
        return self
