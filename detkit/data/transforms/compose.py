"""Compose: run transforms in order and hand the dataset to those that need other samples."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

__all__ = ["Compose", "SwitchableTransform", "Transform"]

Sample = dict[str, Any]


class Transform:
    """Base of the transforms: a callable on the sample dict (see :mod:`detkit.data.base`).

    Transforms that need other samples (Mosaic, MixUp) override :meth:`bind`, which the dataset
    calls through :class:`Compose` with itself and the transforms that run before this one.
    """

    def __call__(self, sample: Sample) -> Sample:  # pragma: no cover - abstract
        raise NotImplementedError

    def bind(self, dataset: Any, before: Sequence[Callable] = ()) -> None:
        """Give the transform the dataset it draws extra samples from (default: unused)."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_") and k != "dataset")
        return f"{type(self).__name__}({args})"


@runtime_checkable
class SwitchableTransform(Protocol):
    """A transform the trainer switches off for the last ``schedule.no_mosaic_last_epochs`` epochs
    (Mosaic, MixUp): it finds every transform of the training set with this method and calls it."""

    def set_enabled(self, enabled: bool) -> None:
        """Turn the transform on (it runs as configured) or off (it passes samples through)."""


class Compose(Transform):
    """Apply ``transforms`` in order: ``Compose([Mosaic(640), RandomAffine(size=640), RandomFlip()])``.

    Args:
        transforms: callables taking and returning a sample dict.
    """

    def __init__(self, transforms: Sequence[Callable]) -> None:
        for t in transforms:
            if not callable(t):
                raise ValueError(
                    f"Compose got {t!r}, which is not callable; accepted: transforms (callables on a sample)"
                )
        self.transforms = list(transforms)

    def bind(self, dataset: Any, before: Sequence[Callable] = ()) -> None:
        for i, t in enumerate(self.transforms):
            if hasattr(t, "bind"):
                t.bind(dataset, list(before) + self.transforms[:i])

    def __call__(self, sample: Sample) -> Sample:
        for t in self.transforms:
            sample = t(sample)
        return sample

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"Compose([{inner}\n])"
