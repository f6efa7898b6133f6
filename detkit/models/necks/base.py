"""Shared behaviour of necks: input channels given now, or read from the backbone later.

A neck written in a config usually leaves ``in_channels`` out; :class:`~detkit.models.detector.Detector`
then calls ``neck.bind(backbone.out_channels)``, which builds the layers. Given explicitly, the
layers are built at once and ``bind`` only checks that the backbone agrees.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

__all__ = ["BindableModule"]


class BindableModule(nn.Module):
    """A module whose layers depend on input channels that may arrive after construction.

    Subclasses implement ``_build(in_channels)``, which must set ``self.out_channels``.
    """

    in_channels: list[int] | None
    out_channels: list[int]

    def __init__(self) -> None:
        super().__init__()
        self.in_channels = None

    @property
    def is_bound(self) -> bool:
        return self.in_channels is not None

    def bind(self, in_channels: Sequence[int]) -> None:
        """Build the layers for ``in_channels`` (per input level), or check them if built."""
        in_channels = [int(c) for c in in_channels]
        if self.in_channels is not None:
            if in_channels != self.in_channels:
                raise ValueError(
                    f"{type(self).__name__} was built for in_channels={self.in_channels} but "
                    f"its input has {in_channels}; leave in_channels out of the config to read "
                    f"them from the previous part"
                )
            return
        if not in_channels or any(c <= 0 for c in in_channels):
            raise ValueError(f"in_channels must be positive ints per level, got {in_channels}")
        self.in_channels = in_channels
        self._build(in_channels)

    def _build(self, in_channels: list[int]) -> None:
        raise NotImplementedError

    def _check_bound(self) -> None:
        if self.in_channels is None:
            raise RuntimeError(
                f"{type(self).__name__} has no layers yet: pass in_channels or call bind() "
                f"(Detector does this from the backbone's out_channels)"
            )
