"""The synthetic shapes set (generated on first use under data/shapes, or $DETKIT_SHAPES): 320 px."""

from detkit.config import L
from detkit.data import LetterBox, Mosaic, RandomAffine, RandomFlip, RandomHSV, ShapesDataset
from detkit.data.roots import dataset_root
from detkit.data.shapes import SHAPE_CLASSES

_root = dataset_root("shapes", "DETKIT_SHAPES")
_size = 320

data = dict(
    train=dict(
        dataset=L(ShapesDataset)(
            root=_root,
            split="train",
            cache_size=1000,  # decoded images kept per loader worker (~300 MB each): the set fits
            pipeline=[
                L(Mosaic)(size=_size, p=0.5),
                L(RandomAffine)(size=_size, degrees=0.0, translate=0.1, scale=0.25, shear=0.0),
                # class identity lives partly in the hue: keep the hue gain small
                L(RandomHSV)(h=0.01, s=0.4, v=0.3),
                L(RandomFlip)(p=0.5),
            ],
        ),
        batch_size=16,
        num_workers=2,
    ),
    val=dict(
        dataset=L(ShapesDataset)(root=_root, split="val", pipeline=[L(LetterBox)(size=_size)]),
        batch_size=16,
        num_workers=2,
    ),
    img_size=_size,
    num_classes=len(SHAPE_CLASSES),
    class_names=list(SHAPE_CLASSES),
)
