"""Transforms on the sample dict (see :mod:`detkit.data.base`), usable as config entries.

Train pipeline (YOLOv4 style)::

    [L(Mosaic)(size=640), L(RandomAffine)(size=640, scale=0.5, translate=0.1),
     L(MixUp)(p=0.1), L(RandomHSV)(), L(RandomFlip)(p=0.5)]

Test pipeline: ``[L(LetterBox)(size=640)]``.
"""

from detkit.data.transforms.albu import Albu
from detkit.data.transforms.color import RandomHSV
from detkit.data.transforms.compose import Compose, Transform
from detkit.data.transforms.geometric import LetterBox, RandomAffine, RandomFlip, affine_boxes, box_candidates
from detkit.data.transforms.mix import MixUp, Mosaic

__all__ = [
    "Albu",
    "Compose",
    "LetterBox",
    "MixUp",
    "Mosaic",
    "RandomAffine",
    "RandomFlip",
    "RandomHSV",
    "Transform",
    "affine_boxes",
    "box_candidates",
]
