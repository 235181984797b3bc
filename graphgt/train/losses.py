"""The loss of each task kind (the data module's :class:`Task` decides which applies)."""
from __future__ import annotations

from typing import Callable, Dict

import torch
import torch.nn.functional as F
from torch import Tensor


def multiclass_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy; ``pred [M, C]`` logits, ``target [M]`` class ids."""
    return F.cross_entropy(pred, target.reshape(-1).long())


def masked_bce_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Binary cross-entropy over labelled entries only (NaN target = missing label, as in OGB)."""
    target = target.reshape(pred.shape).float()
    valid = ~torch.isnan(target)
    return F.binary_cross_entropy_with_logits(pred[valid], target[valid])


def masked_l1_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error over non-NaN targets."""
    target = target.reshape(pred.shape).float()
    valid = ~torch.isnan(target)
    return (pred[valid] - target[valid]).abs().mean()


LOSSES: Dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "multiclass": multiclass_loss,
    "binary": masked_bce_loss,
    "multilabel": masked_bce_loss,
    "regression": masked_l1_loss,
}
