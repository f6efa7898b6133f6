"""Datasets (COCO json, YOLO txt, Pascal VOC, synthetic shapes), transforms, batching, loaders.

Datasets yield sample dicts (see :mod:`detkit.data.base`); :func:`collate` pads them into the
batch of ``docs/design.md``; :func:`build_dataloader` wires seeded workers and the
distributed sampler.
"""

from detkit.data.base import DEFAULT_MAX_SIZE, DetDataset, ImageReadError, ProblemLog, clean_boxes, read_image
from detkit.data.coco import COCO_CLASSES, CocoDataset
from detkit.data.collate import collate
from detkit.data.imageio import LoadedImage, load_image
from detkit.data.loader import DetDataLoader, build_dataloader, init_worker, merge_batch_problems
from detkit.data.shapes import SHAPE_CLASSES, ShapesDataset, ensure_shapes_dataset, make_shapes_dataset
from detkit.data.transforms import (
    Albu,
    Compose,
    LetterBox,
    MixUp,
    Mosaic,
    RandomAffine,
    RandomFlip,
    RandomHSV,
)
from detkit.data.voc import VOC_CLASSES, VocDataset
from detkit.data.yolo import YoloDataset, load_class_names

__all__ = [
    "COCO_CLASSES",
    "DEFAULT_MAX_SIZE",
    "SHAPE_CLASSES",
    "VOC_CLASSES",
    "Albu",
    "CocoDataset",
    "Compose",
    "DetDataLoader",
    "DetDataset",
    "ImageReadError",
    "LetterBox",
    "LoadedImage",
    "MixUp",
    "Mosaic",
    "ProblemLog",
    "RandomAffine",
    "RandomFlip",
    "RandomHSV",
    "ShapesDataset",
    "VocDataset",
    "YoloDataset",
    "build_dataloader",
    "clean_boxes",
    "collate",
    "ensure_shapes_dataset",
    "init_worker",
    "load_class_names",
    "load_image",
    "make_shapes_dataset",
    "merge_batch_problems",
    "read_image",
]
