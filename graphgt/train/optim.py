"""Learning-rate schedules (per optimisation step)."""
from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class WarmupCosine:
    """Linear warm-up for ``warmup_epochs`` then cosine decay to ``min_lr_ratio * lr`` at the last step.

    A config node (``trainer.scheduler``); :meth:`build` makes the ``LambdaLR`` once the number
    of steps is known.  ``warmup_epochs=0, min_lr_ratio=1`` gives a constant rate.
    """

    def __init__(self, warmup_epochs: float = 5.0, min_lr_ratio: float = 0.0):
        if warmup_epochs < 0 or not 0.0 <= min_lr_ratio <= 1.0:
            raise ValueError("trainer.scheduler: need warmup_epochs >= 0 and 0 <= min_lr_ratio <= 1")
        self.warmup_epochs, self.min_lr_ratio = warmup_epochs, min_lr_ratio

    def build(self, optimizer: Optimizer, steps_per_epoch: int, max_epochs: int) -> LambdaLR:
        warmup = int(round(self.warmup_epochs * steps_per_epoch))
        total = max(1, steps_per_epoch * max_epochs)
        floor = self.min_lr_ratio

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

        return LambdaLR(optimizer, factor)

    def __repr__(self) -> str:
        return f"WarmupCosine(warmup_epochs={self.warmup_epochs}, min_lr_ratio={self.min_lr_ratio})"
