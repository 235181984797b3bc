"""Synchronised batch normalisation that works on every device (CPU/gloo as well as GPU/NCCL).

Why: ``torch.nn.SyncBatchNorm`` only accepts CUDA/XPU tensors ("expected input tensor to be on
GPU"), so DDP training that normalises over the *global* batch could not run, or be tested, on
CPU with the gloo backend.  :class:`SyncBatchNorm` here is a drop-in ``nn.BatchNorm1d`` (same
parameters, buffers and ``state_dict`` keys, so checkpoints load either way) whose training-mode
statistics are computed over the rows of *all* ranks of the process group.

Math.  Rank ``r`` holds ``x_r`` of shape ``[N_r, C]`` (or ``[N_r, C, L]``; then every one of the
``N_r * L`` positions is a row of its channel).  With ``n = sum_r N_r`` rows in all::

    mean = sum_r sum_i x_ri / n                       (all-reduce 1: [C sums | N_r])
    var  = sum_r sum_i (x_ri - mean)^2 / n            (all-reduce 2: [C squared deviations])
    y_ri = (x_ri - mean) / sqrt(var + eps) * weight + bias

i.e. exactly ``nn.BatchNorm1d`` applied to the concatenation of all ranks' rows (biased variance
for the normalisation, unbiased ``var * n / (n - 1)`` for ``running_var``; ``momentum=None`` gives
the cumulative average).  Statistics are accumulated in float32 even for bf16/fp16 inputs
(float64 for float64 inputs) and the output has the input's dtype.

Numerics: *two-pass*.  The global mean is all-reduced first, then the sum of squared deviations
from it.  The one-pass alternative (``SS / n - mean^2`` from one all-reduce of sums and sums of
squares) cancels catastrophically in float32 when ``|mean| >> std`` (the error grows like
``eps_f32 * mean^2``), while the two-pass variance matches ``nn.BatchNorm1d`` on the union batch
to float32 rounding whatever the offset.  Measured on 14 x 4 float32 rows ~ N(offset, 1),
max |y - BatchNorm1d(y)|: offset 0: 6e-7 one-pass / 5e-7 two-pass; offset 100: 6e-3 / 3e-5;
offset 1000: 0.46 / 3e-4 (BatchNorm1d itself is 2e-4 off the float64 result there).

Gradients: both reductions go through an autograd-aware all-reduce (:class:`_AllReduceSum`,
with the semantics of ``torch.distributed.nn.functional.all_reduce``: its backward all-reduces
the incoming gradients), so the gradient on every rank is exactly that of one big batch: with a
loss summed over ranks, the sum over ranks of the parameter gradients equals the single-process
gradient of ``nn.BatchNorm1d`` on the union batch.  (Under DDP, which *averages* gradients, this
is the gradient of the mean of the per-rank losses, as with ``torch.nn.SyncBatchNorm``.)

Cost per training call with ``world_size > 1``: two blocking all-reduces, of ``C + 1`` and ``C``
float32 values (``2C + 1`` in all), plus one host synchronisation on ranks holding at most one
row (to raise on a global batch of one row).  Eval mode, ``world_size == 1`` or no initialised
process group: exactly ``nn.BatchNorm1d.forward`` (bitwise), no communication.

Every rank of the group must call the layer the same number of times in the same order (ranks
with zero rows too: they contribute zeros and get an empty output), as for any collective.

:func:`convert_sync_batchnorm` swaps every ``nn.BatchNorm1d`` of a model (including the one
inside ``torch_geometric.nn.norm.BatchNorm``) for a :class:`SyncBatchNorm` that shares its
parameters and buffers.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["SyncBatchNorm", "convert_sync_batchnorm"]


class _AllReduceSum(torch.autograd.Function):
    """SUM all-reduce with autograd: the backward all-reduces (sums) the incoming gradient, as
    ``torch.distributed.nn.functional.all_reduce`` does.  That function is not used because
    (a) torch >= 2.6 flags it deprecated (a FutureWarning per call) and (b) its
    ``group=group.WORLD`` default is evaluated when the module is first imported: imported
    after ``init_process_group`` it pins the default process group, which is then torn down
    at interpreter exit and aborts the process ("terminate called without an active
    exception", in 25-50% of our 2-rank gloo test runs)."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor, group: Any) -> Tensor:  # type: ignore[override]
        ctx.group = group
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return _AllReduceSum.apply(grad, ctx.group), None


def _all_reduce_sum(t: Tensor, group: Any) -> Tensor:
    """Autograd-aware SUM all-reduce over ``group`` (``None``: the default group)."""
    return _AllReduceSum.apply(t, group)


class SyncBatchNorm(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` whose training statistics span all ranks of a process group.

    Shapes: ``x`` ``[N, C]`` or ``[N, C, L]`` -> same shape and dtype; ``N`` may differ between
    ranks and may be 0 on some.  In training mode with an initialised process group of size > 1,
    the mean and (biased) variance per channel are those of the union of all ranks' rows::

        mean = sum over all ranks' rows of x / n,  var = sum (x - mean)^2 / n,  n = sum_r N_r (* L)
        y    = (x - mean) / sqrt(var + eps) * weight + bias

    computed two-pass (global mean first, then global squared deviations: two all-reduces of
    ``C + 1`` and ``C`` float32 values), accumulated in float32.  Gradients flow through the
    all-reduces, so they are exact for the union batch.  ``running_mean``/``running_var`` are
    updated with ``momentum`` from the global mean and unbiased global variance exactly as
    ``nn.BatchNorm1d`` would on the union batch (``momentum=None``: cumulative average), and
    ``num_batches_tracked`` is incremented.  A global batch of a single row raises ``ValueError``
    on every rank.

    Otherwise (eval mode with running stats, ``torch.distributed`` unavailable or not
    initialised, group of size 1) it *is* ``nn.BatchNorm1d.forward``, bitwise.  Eval mode
    without running stats normalises with the local batch, like ``torch.nn.SyncBatchNorm``.

    Unlike ``torch.nn.SyncBatchNorm`` (CUDA/XPU only) it runs on any device and backend (CPU
    with gloo, GPU with NCCL).  Parameters, buffers and ``state_dict`` keys are those of
    ``nn.BatchNorm1d``.

    Args:
        num_features: ``C``.
        eps, momentum, affine, track_running_stats: as for ``nn.BatchNorm1d``.
        process_group: group to synchronise over; ``None`` = the default (world) group.
        device, dtype: factory arguments for the parameters and buffers.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: bool = True, track_running_stats: bool = True,
                 process_group: Any = None, device: Any = None, dtype: Any = None) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine,
                         track_running_stats=track_running_stats, device=device, dtype=dtype)
        self.process_group = process_group

    def extra_repr(self) -> str:
        return super().extra_repr() + ", sync=True"

    def _world_size(self) -> int:
        if not (dist.is_available() and dist.is_initialized()):
            return 1
        return dist.get_world_size(self.process_group)

    def forward(self, x: Tensor) -> Tensor:
        # eval mode (running stats, or local batch stats without them) / no group: plain BN
        if not self.training or self._world_size() <= 1:
            return super().forward(x)
        self._check_input_dim(x)
        C = self.num_features
        if x.size(1) != C:
            raise ValueError(f"expected {C} channels (dim 1), got input of shape {tuple(x.shape)}")

        # momentum / num_batches_tracked handling exactly as in _BatchNorm.forward
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                      else self.momentum)

        dims = (0,) if x.dim() == 2 else (0, 2)
        shape = (1, C) if x.dim() == 2 else (1, C, 1)
        acc = torch.promote_types(x.dtype, torch.float32)      # float32 for bf16/fp16 inputs
        local_n = x.numel() // C
        # pass 1: global count and mean
        count = torch.full((1,), float(local_n), dtype=acc, device=x.device)
        stats = _all_reduce_sum(torch.cat([x.sum(dims, dtype=acc), count]), self.process_group)
        total, n = stats[:C], stats[C:]
        update_running = self.track_running_stats and self.running_mean is not None
        if local_n <= 1:        # only then can the global count be < 2; all such ranks check
            n_host = int(n.item())
            if n_host == 1:
                raise ValueError("Expected more than 1 value per channel when training, got a "
                                 f"global batch of 1 row over {self._world_size()} ranks")
            if n_host == 0:     # every rank empty: empty output, running stats left alone
                n = n.clamp_min(1.0)                                     # (as nn.BatchNorm1d)
                update_running = False
        mean = total / n
        # pass 2: global sum of squared deviations from the global mean
        xc = x - mean.view(shape)             # promoted to `acc` for low-precision x
        var = _all_reduce_sum((xc * xc).sum(dims), self.process_group) / n
        scale = torch.rsqrt(var + self.eps)
        if self.weight is not None:
            scale = scale * self.weight.to(acc)
        y = xc * scale.view(shape)
        if self.bias is not None:
            y = y + self.bias.to(acc).view(shape)

        if update_running:
            with torch.no_grad():
                unbiased = var * (n / (n - 1))
                rm, rv = self.running_mean, self.running_var
                rm.copy_((1 - factor) * rm + factor * mean.to(rm.dtype))
                rv.copy_((1 - factor) * rv + factor * unbiased.to(rv.dtype))
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module, process_group: Any = None) -> nn.Module:
    """Replace every ``nn.BatchNorm1d`` in ``module`` (recursively; subclasses too, except
    :class:`SyncBatchNorm`) by a :class:`SyncBatchNorm` sharing its parameter and buffer
    objects (so values, ``requires_grad``, device, dtype and optimiser references carry over),
    with the same hyper-parameters and ``training`` flag.  ``BatchNorm2d``/``3d``, lazy and
    ``torch.nn.SyncBatchNorm`` modules are left alone.  Works on the inner ``module`` of
    ``torch_geometric.nn.norm.BatchNorm``.  Returns the new root when ``module`` itself is a
    ``BatchNorm1d``, else ``module`` (modified in place); ``state_dict`` keys are unchanged.
    """
    out = module
    if isinstance(module, nn.BatchNorm1d) and not isinstance(module, SyncBatchNorm):
        ref = module.weight if module.weight is not None else module.running_mean
        kw = {} if ref is None else {"device": ref.device, "dtype": ref.dtype}
        out = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                            module.track_running_stats, process_group, **kw)
        if module.affine:
            with torch.no_grad():
                out.weight = module.weight
                out.bias = module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.training = module.training
        if hasattr(module, "qconfig"):
            out.qconfig = module.qconfig
    for name, child in module.named_children():
        out.add_module(name, convert_sync_batchnorm(child, process_group))
    return out
