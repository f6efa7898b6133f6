"""The ``data`` config section as typed settings: one class per split, checked when a config loads.

    data = dict(
        train=dict(dataset=L(CocoDataset)(...), batch_size=16, num_workers=8),
        val=dict(dataset=L(CocoDataset)(...), batch_size=16, num_workers=4),   # and test=dict(...)
        img_size=640, num_classes=80, class_names=[...],
        collate=None,                          # a collate function instead of detkit's (tests' stand-ins)
    )

Every key is optional here (a tool that only evaluates needs ``val`` alone; the code that builds a
split says when it is missing). Unknown keys are errors naming the accepted ones
(``data.train.batchsize=8`` would otherwise be ignored and train with the default batch); values
of the wrong type or out of range are errors naming the key (:mod:`detkit.schema`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from detkit.lazy import TARGET_KEY
from detkit.schema import SettingError

__all__ = ["DataSettings", "SplitSettings"]

SPLITS = ("train", "val", "test")


@dataclass
class SplitSettings:
    """``data.<split>``: the dataset (a lazy call of a dataset class) and its loader's settings.

    ``batch_size`` / ``num_workers`` left out take the loader builders' defaults
    (:mod:`detkit.engine.builders`: 16 and 2 for training; validation: the training batch, no workers).
    """

    dataset: Any = None
    batch_size: int | None = None
    num_workers: int | None = None

    def check(self, key: str) -> None:
        """Raise SettingError for a value out of range (``key``: the split's dotted key, ``data.train``)."""
        if self.batch_size is not None and self.batch_size < 1:
            raise SettingError(f"{key}.batch_size", f"must be >= 1, got {self.batch_size}")
        if self.num_workers is not None and self.num_workers < 0:
            raise SettingError(f"{key}.num_workers", f"must be >= 0, got {self.num_workers}")
        dataset = self.dataset
        if isinstance(dataset, (str, bytes, int, float, list, tuple)) or (
                isinstance(dataset, Mapping) and TARGET_KEY not in dataset):
            got = "a dict without a class" if isinstance(dataset, Mapping) else repr(dataset)
            raise SettingError(f"{key}.dataset", f"expected a lazy call of a dataset class such as "
                                                 f"L(CocoDataset)(ann_file=..., img_dir=...), got {got}")


@dataclass
class DataSettings:
    """The ``data`` section (see the module docstring)."""

    train: SplitSettings | None = None
    val: SplitSettings | None = None
    test: SplitSettings | None = None
    img_size: int | None = None  # the side, in pixels, images are letterboxed / trained at
    num_classes: int | None = None
    class_names: list[str] | None = None
    collate: Any = None

    def __post_init__(self) -> None:
        for split in SPLITS:
            if getattr(self, split) is not None:
                getattr(self, split).check(f"data.{split}")
        if self.img_size is not None and self.img_size < 1:
            raise SettingError("data.img_size", f"must be >= 1 (pixels), got {self.img_size}")
        if self.num_classes is not None and self.num_classes < 1:
            raise SettingError("data.num_classes", f"must be >= 1, got {self.num_classes}")
        if self.class_names is not None and self.num_classes is not None and len(self.class_names) != self.num_classes:
            raise SettingError("data.num_classes", f"is {self.num_classes} but data.class_names has "
                                                   f"{len(self.class_names)} names")
        if self.collate is not None and not callable(self.collate) and not isinstance(self.collate, Mapping):
            raise SettingError("data.collate", f"expected a function or a lazy call, got {self.collate!r}")
