"""Training engine: trainer, checkpoints, EMA, optimizers, LR schedules, distributed helpers, logging."""

from detkit.engine.checkpoint import (
    CheckpointManager,
    atomic_save,
    find_latest_checkpoint,
    get_rng_state,
    load_checkpoint,
    set_rng_state,
)
from detkit.engine.ema import ModelEMA, unwrap_model
from detkit.engine.musgd import MuSGD
from detkit.engine.optim import build_optimizer, param_groups
from detkit.engine.schedules import LRSchedule
from detkit.engine.weights import load_weights

__all__ = [
    "CheckpointManager",
    "LRSchedule",
    "ModelEMA",
    "MuSGD",
    "atomic_save",
    "build_optimizer",
    "find_latest_checkpoint",
    "get_rng_state",
    "load_checkpoint",
    "load_weights",
    "param_groups",
    "set_rng_state",
    "unwrap_model",
]
