"""Weights of a dual-branch head's two losses (one-to-many, one-to-one), as a function of the epoch.

A :class:`~detkit.models.heads.DecoupledHead` with ``one2one=True`` trains two sets of branches; its
total loss is ``w_o2m * L_o2m + w_o2o * L_o2o``. The trainer tells the head each epoch
(``head.set_epoch(epoch, epochs)``, 0-based, also on the first epoch of a resumed run), and the head
asks its schedule for the epoch's pair:

* :class:`FixedWeights`: the same pair every epoch (YOLOv10: 1 and 1, the head's default);
* :class:`ProgressiveWeights`: YOLO26's progressive loss (ProgLoss, Ultralytics 8.4's ``E2ELoss``):
  the one-to-many weight moves linearly from ``start`` at the first epoch to ``end`` at the last,
  the one-to-one weight is 1 minus it.
"""

from __future__ import annotations

__all__ = ["BranchWeights", "FixedWeights", "ProgressiveWeights"]


class BranchWeights:
    """A schedule of the two branch weights; subclasses define :meth:`__call__`."""

    def __call__(self, epoch: int, epochs: int) -> tuple[float, float]:
        """``(one-to-many weight, one-to-one weight)`` at ``epoch`` (0-based) of ``epochs``."""
        raise NotImplementedError


def _check_weight(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


class FixedWeights(BranchWeights):
    """The same weights every epoch.

    Args:
        one2many: weight of the one-to-many losses.
        one2one: weight of the one-to-one losses.
    """

    def __init__(self, one2many: float = 1.0, one2one: float = 1.0) -> None:
        self.one2many = _check_weight("one2many", one2many)
        self.one2one = _check_weight("one2one", one2one)

    def __call__(self, epoch: int, epochs: int) -> tuple[float, float]:
        return self.one2many, self.one2one

    def __repr__(self) -> str:
        return f"FixedWeights(one2many={self.one2many}, one2one={self.one2one})"


class ProgressiveWeights(BranchWeights):
    """One-to-many weight ``max(1 - e / max(E - 1, 1), 0) * (start - end) + end`` at epoch ``e`` of ``E``
    (``start`` at epoch 0, ``end`` at the last), one-to-one weight ``1 -`` that, clamped at 0.

    Args:
        start: one-to-many weight at the first epoch (YOLO26: 0.8).
        end: one-to-many weight at the last epoch (YOLO26: 0.1).
    """

    def __init__(self, start: float = 0.8, end: float = 0.1) -> None:
        self.start = _check_weight("start", start)
        self.end = _check_weight("end", end)
        if self.start > 1 or self.end > 1:
            raise ValueError(f"start and end are one-to-many weights in [0, 1], got start={start}, end={end}")

    def __call__(self, epoch: int, epochs: int) -> tuple[float, float]:
        if epoch <= 0:  # Ultralytics starts from ``start`` itself (the formula may round differently)
            return self.start, max(1.0 - self.start, 0.0)
        one2many = max(1 - epoch / max(epochs - 1, 1), 0) * (self.start - self.end) + self.end
        return one2many, max(1.0 - one2many, 0.0)

    def __repr__(self) -> str:
        return f"ProgressiveWeights(start={self.start}, end={self.end})"
