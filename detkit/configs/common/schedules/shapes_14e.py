"""The shapes comparison's training at the demo's wall time for a network whose step costs ~1.08x the demo's
(``shapes_yolo11_tal.py``, ``shapes_yolo26.py``): ``shapes_short.py``'s SGD and cosine schedule with
``runtime.py``'s defaults over them (EMA, AMP, clipping, intervals), then 14 epochs, lr 0.02 and mosaic off for
the last 3; evaluated once, after the last epoch.

Its bases are merged in this order (``runtime.py``'s EMA and ``eval_interval`` replace ``shapes_short.py``'s),
so a config lists this piece instead of ``shapes_short.py`` and ``runtime.py``, after its model and data.
"""

_base_ = ["shapes_short.py", "../runtime.py"]

train = dict(epochs=14, eval_interval=14, optimizer=dict(lr=0.02))  # merged into shapes_short's SGD call
schedule = dict(no_mosaic_last_epochs=3)
