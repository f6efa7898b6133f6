"""Run-time defaults: EMA, AMP, clipping, evaluation / checkpoint / log intervals, seed, device.

``train`` keys set here (merged with a schedule's ``train``):
    ema=dict(enabled, decay, tau)    ModelEMA; decay ramps as decay * (1 - exp(-updates / tau))
    amp                              mixed precision on CUDA (ignored with a log line on CPU)
    grad_clip                        max global gradient L2 norm, or None
    eval_interval                    evaluate every N epochs (and after the last); 0 = never
    checkpoint=dict(keep_last, interval_iters)   epoch_<E>.pth kept K deep; iter_<I>.pth every N iterations (0 = off)
    log_interval                     iterations between log records / progress-bar updates
    seed, sync_bn                    reproducibility; SyncBatchNorm under DDP on CUDA
``runtime`` keys: device ("auto" | "cpu" | "cuda"), deterministic, progress, dist_backend,
plot_interval (epochs between PNG plot updates; 0 = only at the end), loggers (experiment trackers:
"tensorboard", "mlflow", "wandb" or L(Tracker)(...); see detkit.engine.trackers).
"""

train = dict(
    ema=dict(enabled=True, decay=0.9999, tau=2000),
    amp=True,
    grad_clip=10.0,
    eval_interval=1,
    checkpoint=dict(keep_last=3, interval_iters=0),
    log_interval=50,
    seed=0,
    sync_bn=False,
)
runtime = dict(device="auto", deterministic=False, progress=True, dist_backend=None, plot_interval=1,
               loggers=["tensorboard"])
