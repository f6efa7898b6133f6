"""YOLO26's training recipe as Ultralytics 8.4.190 runs it on COCO: its ``default.yaml`` with ``optimizer=auto``,
which picks MuSGD there (over 10,000 optimizer steps).

100 epochs; MuSGD (:class:`detkit.engine.musgd.MuSGD`: Muon x0.2 + SGD x1 on the 2-D / 4-D weights, SGD on
norms and biases, the class branches at 3x the LR) with lr 0.01, nesterov, weight decay 5e-4 per 64 images
(scaled by batch * accumulate / 64, as Ultralytics); 3 warm-up epochs (no least number of iterations in
8.4) in which every LR, the biases' included (``auto`` sets ``warmup_bias_lr`` to 0), rises from 0 and the
momentum from 0.8; then a linear decay to 1% of the LR (``lrf=0.01``, ``cos_lr=False``); mosaic off for the
last 10 epochs (``close_mosaic``); the loss times the batch size (Ultralytics' convention).

Momentum 0.937, not the 0.9 that ``auto`` gives MuSGD: Ultralytics' warm-up moves every group's momentum
from ``warmup_momentum`` to ``default.yaml``'s ``momentum`` (0.937) and leaves it there, so a run with a
warm-up trains at 0.937 after it. Not followed: the warm-up's LR target is the epoch's decay factor in
Ultralytics (the iteration's here), and its gradient accumulation ramps from 1 to its nominal count.
"""

from detkit.config import L
from detkit.engine.musgd import MuSGD
from detkit.engine.schedules import LRSchedule

train = dict(
    epochs=100,
    nominal_batch=64,
    optimizer=L(MuSGD)(lr=0.01, momentum=0.937, weight_decay=5e-4, nesterov=True, muon=0.2, sgd=1.0),
    loss_scale="batch",
    multi_scale=None,
)
schedule = dict(
    lr=L(LRSchedule)(policy="linear", min_lr_ratio=0.01, warmup_epochs=3.0, min_warmup_iters=0, warmup_ratio=0.0,
                     warmup_bias_lr=0.0, warmup_momentum=0.8),
    no_mosaic_last_epochs=10,
)
