"""Training: the :class:`Trainer`, its objective, checkpoints, DDP and preemption.

Nothing here reads a config: the composition root (:mod:`graphgt.app`) builds a :class:`Trainer`
from ``configs/trainer/*.yaml``, an :class:`Objective` from the dataset's task, and calls
:meth:`Trainer.fit`.
"""
from graphgt.errors import CheckpointError, DistributedError, NonFiniteLossError, Preempted
from graphgt.train.checkpoint import (BEST, LAST, check_config, find_resume, load_checkpoint, load_model_state,
                                      save_checkpoint)
from graphgt.train.distributed import DDPConfig, Dist, env_world_size, init_distributed, launch, shutdown
from graphgt.train.logging import CSVLogger, Logger, NoLogger, WandbLogger
from graphgt.train.loop import EpochResult, Trainer, resolve_device, select
from graphgt.train.losses import LOSS_SUMS, LossSum, MetricFn, Objective, loss_for
from graphgt.train.optim import WarmupCosine
from graphgt.train.signals import StopSignal

__all__ = ["Trainer", "EpochResult", "resolve_device", "select", "Objective", "MetricFn", "LossSum", "LOSS_SUMS",
           "loss_for", "WarmupCosine", "Logger", "CSVLogger", "WandbLogger", "NoLogger", "DDPConfig", "Dist",
           "env_world_size", "init_distributed", "launch", "shutdown", "BEST", "LAST", "check_config", "find_resume",
           "load_checkpoint", "load_model_state", "save_checkpoint", "StopSignal", "CheckpointError",
           "DistributedError", "NonFiniteLossError", "Preempted"]
