"""What a dense head hands to its loss pipeline and to post-processing: named, flattened predictions.

Every head family (coupled :class:`~detkit.models.heads.YOLOHead`, anchor-free
:class:`~detkit.models.heads.DecoupledHead`) flattens its raw maps to the same record, so one loss
pipeline and one post-processing path serve both. Priors are laid out level by level, then
row-major over locations, then anchor (the order of :mod:`detkit.anchors`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from detkit.anchors import PriorGrid
from detkit.models.postprocess import class_scores

__all__ = ["DensePredictions"]


@dataclass
class DensePredictions:
    """Flattened predictions of one batch and the priors they belong to.

    Attributes:
        box: ``Tensor[B, N, R]`` raw box parameters (R = ``coder.num_params``: 4, or
            ``4 * reg_max`` bin logits for a distribution coder).
        cls: ``Tensor[B, N, C]`` class logits.
        obj: ``Tensor[B, N]`` objectness logits, or None for heads without objectness.
        priors: ``Tensor[N, 4]`` xyxy priors (shared by the batch).
        strides: ``Tensor[N]`` stride of each prior.
        num_level_priors: priors per level, summing to N.
        coder: the head's box coder (``decode(priors, box, strides) -> xyxy``).
        grid: the priors as a :class:`~detkit.anchors.PriorGrid` (levels' grid arithmetic for the assigner),
            None for priors that are not grids.
    """

    box: Tensor
    cls: Tensor
    obj: Tensor | None
    priors: Tensor
    strides: Tensor
    num_level_priors: list[int]
    coder: Any
    grid: PriorGrid | None = None

    @property
    def batch_size(self) -> int:
        return self.cls.shape[0]

    @property
    def num_priors(self) -> int:
        return self.cls.shape[1]

    @property
    def num_classes(self) -> int:
        return self.cls.shape[2]

    def check(self) -> None:
        """ValueError unless the shapes agree with each other (see the attributes)."""
        b, n, _ = self.cls.shape
        problems = []
        if self.box.dim() != 3 or tuple(self.box.shape[:2]) != (b, n):
            problems.append(f"box {tuple(self.box.shape)} is not (B, N, R) with B={b}, N={n}")
        if self.obj is not None and tuple(self.obj.shape) != (b, n):
            problems.append(f"obj {tuple(self.obj.shape)} is not (B, N) = ({b}, {n})")
        if tuple(self.priors.shape) != (n, 4) or tuple(self.strides.shape) != (n,):
            problems.append(f"priors {tuple(self.priors.shape)} / strides {tuple(self.strides.shape)} "
                            f"are not (N, 4) / (N,) with N={n}")
        if sum(self.num_level_priors) != n:
            problems.append(f"num_level_priors {self.num_level_priors} do not sum to N={n}")
        if problems:
            raise ValueError("inconsistent head predictions: " + "; ".join(problems))

    def decode(self, box: Tensor | None = None) -> Tensor:
        """``Tensor[B, N, 4]`` xyxy boxes (fp32) of ``box`` (default: :attr:`box`)."""
        boxes: Tensor = self.coder.decode(self.priors, self.box if box is None else box, self.strides)
        return boxes.float()

    def image_ltrb_scale(self) -> Tensor:
        """``Tensor[4]`` fp32 ``(W, H, W, H)``: the network input's width and height in pixels, as the first
        level's grid spans them (``cells * stride``, Ultralytics' ``imgsz``), the divisors of ltrb distances.

        Raises:
            ValueError: the priors are not a :class:`~detkit.anchors.PriorGrid` (no extent to read).
        """
        if self.grid is None or not self.grid.levels:
            raise ValueError("image-normalised distances need the priors as a PriorGrid (the input's extent)")
        level = self.grid.levels[0]
        w, h = level.width * level.stride, level.height * level.stride
        return torch.tensor([w, h, w, h], dtype=torch.float32, device=self.priors.device)

    def scores(self) -> Tensor:
        """``Tensor[B, N, C]`` fp32 detection scores: ``sigmoid(cls) * sigmoid(obj)``, or
        ``sigmoid(cls)`` without objectness."""
        return class_scores(self.cls, self.obj)

    def to_dtype(self, dtype: torch.dtype) -> DensePredictions:
        """A copy with ``box``, ``cls`` and ``obj`` in ``dtype`` (the loss pipeline computes in fp32)."""
        return DensePredictions(
            box=self.box.to(dtype), cls=self.cls.to(dtype), obj=None if self.obj is None else self.obj.to(dtype),
            priors=self.priors, strides=self.strides, num_level_priors=self.num_level_priors, coder=self.coder,
            grid=self.grid,
        )
