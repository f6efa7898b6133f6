"""``configs/shapes_yolo11_tal.py`` (the real network, loss and schedule of the shapes comparison) on
``shapes_tiny.py``'s 8 + 8 generated 128 px images, 2 epochs, CPU (``shapes_tiny_overlay.py``): for the tools'
tests."""

_base_ = ["../../../configs/shapes_yolo11_tal.py", "shapes_tiny_overlay.py"]
