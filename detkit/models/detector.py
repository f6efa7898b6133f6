"""One-stage detector: backbone -> neck -> head, with inference mapped to original images."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from detkit.models.postprocess import undo_letterbox_batch

__all__ = ["Detector"]


class Detector(nn.Module):
    """``backbone -> neck -> head``.

    The neck's and head's input channels are read from the part before them when their
    configs leave ``in_channels`` out (``neck.bind(backbone.out_channels)``,
    ``head.bind(neck.out_channels)``); given explicitly, they must agree.

    Args:
        backbone: module with ``out_channels`` and ``strides``, returning a list of maps.
        neck: module with ``bind``/``out_channels`` (or None to feed the backbone to the head).
        head: a :class:`~detkit.models.heads.YOLOHead` (``forward``, ``loss``, ``predict``).
    """

    def __init__(self, backbone: nn.Module, neck: nn.Module | None, head: nn.Module) -> None:
        super().__init__()
        self.backbone: Any = backbone
        self.neck: Any = neck
        self.head: Any = head
        # duck-typed parts (see Args): their own attributes and methods, read as they are
        parts: tuple[Any, Any, Any] = (backbone, neck, head)
        channels = list(parts[0].out_channels)
        if neck is not None:
            parts[1].bind(channels)
            channels = list(parts[1].out_channels)
        parts[2].bind(channels)
        self.strides: list[int] = [int(s) for s in parts[0].strides]
        gen_strides = getattr(getattr(head, "prior_generator", None), "strides", None)
        if gen_strides is not None and [int(s) for s in gen_strides] != self.strides:
            raise ValueError(
                f"the head's prior generator has strides {list(gen_strides)} but the backbone's "
                f"levels have strides {self.strides}; make them agree in the config"
            )

    @property
    def size_divisor(self) -> int:
        """Input H and W must be multiples of this (the largest stride)."""
        return max(self.strides)

    def check_input(self, images: Tensor) -> None:
        """ValueError unless ``images`` is ``(B, 3, H, W)`` with H, W multiples of the stride."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got shape {tuple(images.shape)}")
        h, w = images.shape[-2:]
        d = self.size_divisor
        if h % d or w % d:
            raise ValueError(
                f"input size {h}x{w} (HxW) is not a multiple of the largest stride {d}; "
                f"pad or resize to multiples of {d} (e.g. {-(-h // d) * d}x{-(-w // d) * d})"
            )

    def extract(self, images: Tensor) -> list[Tensor]:
        """Neck outputs ``[(B, C_i, H / s_i, W / s_i)]``.

        Args:
            images: ``Tensor[B, 3, H, W]`` float, H and W multiples of :attr:`size_divisor`.

        Returns:
            One feature map per level, finest first.

        Raises:
            ValueError: an input that is not ``(B, 3, H, W)`` with sides multiples of the largest stride.
        """
        self.check_input(images)
        feats = self.backbone(images)
        return self.neck(feats) if self.neck is not None else feats

    def forward(self, images: Tensor) -> list[Tensor]:
        """Raw head maps, one per level: ``[(B, A*(5+C), H / s_i, W / s_i)]`` for the anchor head, the
        box, class (and objectness) channels of each prior for the decoupled head.

        Args:
            images: ``Tensor[B, 3, H, W]`` float in 0..1, H and W multiples of :attr:`size_divisor`.

        Returns:
            The head's raw maps (``head.decode_outputs`` / ``predict`` read them).
        """
        return self.head(self.extract(images))

    def forward_decoded(self, images: Tensor, channels_first: bool = False) -> tuple[Tensor, Tensor]:
        """The network up to decoded boxes and scores, before any filtering (what is exported).

        Args:
            images: ``(B, 3, H, W)`` float, H and W multiples of :attr:`size_divisor`.
            channels_first: ``boxes (B, 4, N)``, ``scores (B, C, N)`` (an exported graph's layout without NMS:
                ``head.decode_channels``).

        Returns:
            ``boxes (B, N, 4)`` xyxy in input pixels and ``scores (B, N, C)`` (``obj * cls``), fp32.
        """
        if channels_first:
            return self.head.decode_channels(self.extract(images))
        return self.head.decode_outputs(self(images))

    def loss(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """The head's loss dict for a training batch (sum the ``loss_*`` keys).

        Args:
            batch: a collated batch: ``images (B, 3, H, W)``, ``gt_boxes (B, M, 4)`` xyxy input pixels,
                ``gt_labels (B, M)``, ``gt_mask (B, M)`` (False on padding rows).

        Returns:
            ``loss_*`` scalar tensors (the terms of the recipe: ``loss_cls``, ``loss_box``, ...) and
            ``stat_*`` detached assignment statistics (``stat_pos_per_gt``, ``stat_gt_no_pos``, ...).
        """
        return self.head.loss(self(batch["images"]), batch)

    @torch.no_grad()
    def predict(self, batch: Mapping[str, Any], **overrides: Any) -> list[dict[str, Tensor]]:
        """Detections per image, boxes in original-image pixels.

        Args:
            batch: ``images (B, 3, H, W)``; when present, ``scale_factors (B, 2)``, ``pads (B, 2)``
                and ``ori_sizes (B, 2)`` (h, w) undo the letterbox and clip to the original size.
            overrides: post-processing settings for this call (``score_thr=0.25``, ...).

        Returns:
            ``[dict(boxes (K, 4) xyxy, scores (K,), labels (K,))]`` per image.
        """
        images = batch["images"]
        dets = self.head.predict(self(images), batch, **overrides)
        return undo_letterbox_batch(dets, batch, images.shape[-2:])
