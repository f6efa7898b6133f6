"""detkit: YOLO-style object detection whose label assignment is a swappable, batched part."""

__version__ = "0.1.0"
