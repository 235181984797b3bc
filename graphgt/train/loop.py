"""The training loop: one short loop for every dataset and model, in one process or under DDP.

Per epoch: train on the training loader (AdamW, warm-up + cosine schedule, gradient clipping and
accumulation, bf16 autocast on GPU), evaluate validation and test, keep the model with the best
validation score, write ``last.pt``.  Everything dataset-specific comes from the
:class:`~graphgt.train.losses.Objective` (loss and metric, built by the composition root from the
dataset's task) and from the batches themselves (``loss_mask`` marks the nodes of node-level batches
that count).  The trainer never reads a config.

Under DDP (:mod:`graphgt.train.distributed`) the same loop runs on every rank: each rank trains on
its part of every global batch; one all-reduce per step sums the loss, the number of labelled
entries and the stop flag over the ranks, and each rank back-propagates ``W * loss_sum /
global_count``, so DDP's gradient average is the gradient of the mean loss over the global batch
(exactly one process's loss on the same batch).  Evaluation reassembles the ranks' predictions in
single-process order before computing the metric.

Nothing is lost (:mod:`graphgt.train.checkpoint`, :mod:`graphgt.train.signals`): ``last.pt`` after
every epoch, ``best.pt`` on every validation improvement, a mid-epoch ``last.pt`` on SIGTERM/SIGINT
(then :class:`~graphgt.train.signals.Preempted`), a NaN/inf loss stops before it touches the weights
(:class:`NonFiniteLossError`, ``last.pt`` left as it was), and a resumed run continues bit-exactly.

Rank 0 reports progress: the bars' postfix (running train loss; the last epoch's val metric and the
best so far) and one line per epoch on the ``graphgt.train.epochs`` logger (the run's ``cli.log``;
the terminal too when the bars are off).  ``early_stopping`` ends the run after that many epochs
without a validation improvement; its counter is part of the checkpointed ``history``.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from graphgt.data.base import DataModule
from graphgt.data.prefetch import prefetch
from graphgt.train.precision import check_compile, maybe_compile, resolve_bf16
from graphgt.errors import CheckpointError, DistributedError, NonFiniteLossError, Preempted
from graphgt.train.checkpoint import (BEST, LAST, capture_rng, load_model_state, require_resumable, restore_rng,
                                      save_checkpoint)
from graphgt.train.distributed import DDPConfig, Dist
from graphgt.train.logging import EPOCH_LOG, Logger, NoLogger, bars_quiet_terminal
from graphgt.train.losses import Objective
from graphgt.train.optim import WarmupCosine
from graphgt.train.signals import StopSignal


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def select(out: Tensor, batch) -> Tuple[Tensor, Tensor]:
    """The predictions and targets that count: all of them, or those of ``batch.loss_mask``."""
    y = batch.y
    mask = getattr(batch, "loss_mask", None)
    if mask is not None:
        out, y = out[mask], y[mask]
    return out, y


def _comm_failure(e: BaseException) -> bool:
    """Whether ``e`` is a failed collective (a dead, hung or disconnected peer)."""
    dist_error = getattr(torch.distributed, "DistError", ())
    text = str(e)
    return isinstance(e, dist_error) or any(s in text for s in (
        "Gloo", "gloo", "NCCL", "Connection closed", "Connection reset", "timed out", "Timed out", "ProcessGroup"))


def _non_finite_inputs(loader: Iterable) -> str:
    """Which floating attributes of a loader's batches hold NaN/inf (for the error message)."""
    bad = set()
    for batch in loader:
        for key in batch.keys():
            value = batch[key]
            if key != "y" and isinstance(value, Tensor) and value.is_floating_point() \
                    and not bool(torch.isfinite(value).all()):  # NaN targets are missing labels
                bad.add(key)
    return "in " + ", ".join(sorted(bad)) if bad else "none found in the batches' float attributes"


#: one line per epoch (rank 0): the run's ``cli.log`` through Hydra's logging config, and the
#: terminal when the bars are off (:func:`graphgt.train.logging.bars_quiet_terminal`)
log = logging.getLogger(EPOCH_LOG)


def _fmt(value: float) -> str:
    return "nan" if value != value else f"{value:.4f}"


@dataclass
class EpochResult:
    loss: float
    metric: float
    pred: Optional[Tensor] = field(default=None, repr=False)


class EpochSums:
    """Running sums of the training epoch in progress (checkpointed with a mid-epoch stop).

    ``loss`` and ``count`` are global (summed over ranks, the same on every rank); ``preds`` and
    ``targets`` are this rank's (gathered at the end of the epoch for the training metric).
    """

    def __init__(self) -> None:
        self.batches, self.loss, self.count = 0, 0.0, 0.0
        self.preds: List[Tensor] = []
        self.targets: List[Tensor] = []

    def state_dict(self) -> Dict[str, Any]:
        return {"batches": self.batches, "loss": self.loss, "count": self.count,
                "preds": self.preds, "targets": self.targets}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.batches, self.loss, self.count = int(state["batches"]), float(state["loss"]), float(state["count"])
        self.preds, self.targets = list(state["preds"]), list(state["targets"])


class _Stop(Exception):
    """Internal: the ranks agreed to stop after batch ``batches`` of the epoch (a signal)."""

    def __init__(self, batches: int):
        super().__init__(batches)
        self.batches = batches


class Trainer:
    """Fits a model on a data module and reports the test score at the best validation epoch.

    Args:
        max_epochs: number of training epochs.
        optimizer: factory ``params -> Optimizer`` (a Hydra partial of ``torch.optim.AdamW``).
        scheduler: :class:`WarmupCosine` (per-step schedule) or ``None`` for a constant rate.
        grad_clip: max global gradient norm (``None``: no clipping).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``...  Under DDP on GPUs each rank uses
            ``cuda:LOCAL_RANK``.
        bf16: ``auto`` (bf16 autocast on CUDA for models whose widest projection is >= 128
            wide, see :func:`graphgt.train.precision.resolve_bf16`), ``true`` (always, CPU too)
            or ``false``.
        compile: ``false``, ``true`` or a ``torch.compile`` mode: compile the model's forward
            (:func:`graphgt.train.precision.maybe_compile`, dynamic shapes).
        progress: tqdm bars over epochs and (when there is more than one) batches (rank 0 only).
        checkpoint: write ``last.pt`` (every epoch, and on SIGTERM/SIGINT) and ``best.pt`` (on
            improvement), atomically, from rank 0.
        limit_train_batches: train on at most this many batches per epoch (a compute budget for
            smoke tests and CPU runs of big configs); evaluation always covers every item of
            the validation and test splits.
        test_every_epoch: evaluate the test split after every epoch (``True``), or once, at the
            end, with the weights of the best validation epoch (``False``: for big test splits
            such as ogbn-products' 2.2M nodes, where one test pass costs many training epochs).
        evaluate_test: ``False`` never touches the test split (model selection and budgeted runs
            on validation only); ``test_at_best_val`` is then reported as NaN.
        accumulate_grad_batches: one optimiser step per this many batches; each step minimises
            the mean of its batches' losses (each the mean over its global batch), which is the
            loss of one batch that many times larger when the batches are equally large.
        sync_batchnorm: under DDP, normalise with statistics over all ranks' batches
            (:class:`graphgt.nn.sync_batchnorm.SyncBatchNorm`, also on CPU/gloo), so BatchNorm sees
            the global batch as one process would.
        distributed: a :class:`DDPConfig` (``trainer=ddp``) or ``null`` (one process, unless
            launched by torchrun: then the environment's process group with default settings).
        early_stopping: ``None`` (train ``max_epochs``) or a patience: stop once this many epochs
            in a row did not improve the best validation metric (in the metric's direction) by
            more than ``early_stopping_min_delta``; a NaN validation metric never improves.  The
            test score is still the one at the best validation epoch; the counter is checkpointed,
            so a resumed run stops at the same epoch as an uninterrupted one.
        early_stopping_min_delta: the smallest change of the validation metric that counts as an
            improvement for early stopping (the best epoch itself is the first strictly better one).
    """

    def __init__(self, max_epochs: int = 100, optimizer: Optional[Callable[..., torch.optim.Optimizer]] = None,
                 scheduler: Optional[WarmupCosine] = None, grad_clip: Optional[float] = 1.0,
                 device: str = "auto", bf16: Union[bool, str] = "auto",
                 compile: Union[bool, str] = False, progress: bool = True, checkpoint: bool = True,
                 limit_train_batches: Optional[int] = None, test_every_epoch: bool = True,
                 evaluate_test: bool = True, accumulate_grad_batches: int = 1, sync_batchnorm: bool = False,
                 distributed: Optional[DDPConfig] = None, early_stopping: Optional[int] = None,
                 early_stopping_min_delta: float = 0.0):
        if max_epochs < 1:
            raise ValueError(f"trainer.max_epochs must be >= 1, got {max_epochs}")
        if limit_train_batches is not None and limit_train_batches < 1:
            raise ValueError(f"trainer.limit_train_batches must be >= 1 or null, got {limit_train_batches}")
        if accumulate_grad_batches < 1:
            raise ValueError(f"trainer.accumulate_grad_batches must be >= 1, got {accumulate_grad_batches}")
        if early_stopping is not None and (isinstance(early_stopping, bool) or int(early_stopping) != early_stopping
                                           or early_stopping < 1):
            raise ValueError(f"trainer.early_stopping must be null or a patience in epochs >= 1, got "
                             f"{early_stopping!r}")
        if not (early_stopping_min_delta >= 0):  # NaN too
            raise ValueError(f"trainer.early_stopping_min_delta must be >= 0 (an amount in the metric's units, "
                             f"applied in its direction), got {early_stopping_min_delta!r}")
        self.early_stopping = None if early_stopping is None else int(early_stopping)
        self.early_stopping_min_delta = float(early_stopping_min_delta)
        self.limit_train_batches = limit_train_batches
        self.test_every_epoch = bool(test_every_epoch) and bool(evaluate_test)
        self.evaluate_test = bool(evaluate_test)
        self.max_epochs = max_epochs
        self.optimizer = optimizer or (lambda params: torch.optim.AdamW(params, lr=1e-3))
        self.scheduler = scheduler
        self.grad_clip = grad_clip
        self.device = resolve_device(device)
        # validated now (before any compute); the model-dependent ``auto`` is settled in _Run
        self.bf16_setting, self.compile = bf16, check_compile(compile)
        self.bf16 = resolve_bf16(bf16, self.device, nn.Identity())
        self.progress = progress
        self.checkpoint = checkpoint
        self.accumulate_grad_batches = int(accumulate_grad_batches)
        self.sync_batchnorm = bool(sync_batchnorm)
        self.distributed = distributed

    # ------------------------------------------------------------------ helpers
    def _autocast(self):
        if self.bf16:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _bar(self, iterable: Iterable, desc: str, leave: bool = False, show: bool = True):
        if not (self.progress and show):
            return iterable
        from tqdm.auto import tqdm

        total = len(iterable) if hasattr(iterable, "__len__") else None
        if total is not None and total <= 1:
            return iterable
        return tqdm(iterable, desc=desc, total=total, leave=leave, dynamic_ncols=True)

    def _wrap(self, model: nn.Module, dist: Dist) -> nn.Module:
        """The module that trains: the model itself, or its DDP wrapper (SyncBatchNorm first if asked)."""
        if not dist.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=dist.find_unused_parameters)

    # ------------------------------------------------------------------ epochs
    def train_epoch(self, model: nn.Module, loader: Iterable, objective: Objective, optimizer, scheduler, epoch: int,
                    dist: Optional[Dist] = None, sums: Optional[EpochSums] = None,
                    stop: Optional[StopSignal] = None, checkpoint_hint: str = "") -> EpochResult:
        """One pass over ``loader`` from batch ``sums.batches``; raises :class:`_Stop` on an agreed signal."""
        dist = dist or Dist()
        sums = sums or EpochSums()
        model.train()
        loss_sum_fn = objective.loss_sum
        total = len(loader)
        if self.limit_train_batches is not None:
            total = min(total, self.limit_train_batches)
        k = self.accumulate_grad_batches
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch - 1, sums.batches)
        stopping = False
        if sums.batches == 0:
            optimizer.zero_grad(set_to_none=True)
        bar = self._bar(loader, f"epoch {epoch} train", show=dist.is_main)
        for step, batch in enumerate(bar, start=sums.batches):
            if step >= total:
                break
            window = min(k, total - (step // k) * k)         # batches in this optimiser step
            last = (step % k == window - 1) or step == total - 1
            batch = batch.to(self.device)
            no_sync = model.no_sync() if (dist.distributed and not last) else contextlib.nullcontext()
            with no_sync:
                with self._autocast():
                    out = model(batch)
                pred, y = select(out.float(), batch)
                loss_sum, count = loss_sum_fn(pred, y)
                g_loss, g_count, g_stop = dist.all_sum([loss_sum.item(), count, 1.0 if stop and stop.requested else 0.0])
                if not math.isfinite(g_loss):
                    raise NonFiniteLossError(
                        f"the training loss is {g_loss / max(g_count, 1):.6g} at epoch {epoch}, step {step} "
                        f"(batch {step + 1} of {total}); the run stopped before this step changed the weights. "
                        f"{checkpoint_hint}Lower trainer.optimizer.lr, set trainer.grad_clip, or check the data "
                        "for NaN/inf features")
                if g_count > 0:
                    (loss_sum * (dist.world_size / (g_count * window))).backward()
            stopping = stopping or g_stop > 0
            if last:
                if self.grad_clip:
                    nn.utils.clip_grad_norm_(model.parameters(), self.grad_clip)
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            sums.batches = step + 1
            sums.loss, sums.count = sums.loss + g_loss, sums.count + g_count
            sums.preds.append(pred.detach().cpu())
            sums.targets.append(y.detach().cpu())
            if bar is not loader and sums.count:
                bar.set_postfix_str(f"loss {sums.loss / sums.count:.4f}", refresh=False)
            if last and stopping:
                raise _Stop(sums.batches)
        loss = sums.loss / sums.count if sums.count else float("nan")
        preds = dist.gather_batches(sums.preds) if sums.preds or dist.distributed else None
        targets = dist.gather_batches(sums.targets) if sums.targets or dist.distributed else None
        return EpochResult(loss, self._metric(objective, preds, targets))

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Iterable, objective: Objective, desc: str = "eval",
                 dist: Optional[Dist] = None) -> EpochResult:
        """Loss and metric over a whole split (every node/graph of the split counted once).

        Under DDP each rank evaluates its round-robin share of the batches with the plain model
        (no DDP wrapper, no collectives in the forward pass), then the predictions are reassembled
        in single-process order (:meth:`Dist.gather_batches`): the result equals one process's.
        A loader with a ``predict(model, device) -> (pred, target)`` method (layer-wise inference)
        computes the whole split itself, identically on every rank.  The loss is in the units the
        model learns; the metric and the returned predictions are in the targets' original units
        (:meth:`Objective.predictions`: regression standardisation undone).
        """
        dist = dist or Dist()
        model.eval()
        if callable(getattr(loader, "predict", None)):  # layer-wise inference: the whole split at once
            with self._autocast():
                pred, target = loader.predict(model, self.device)
            pred = pred.float()
        else:
            preds, targets = [], []
            for batch in self._bar(loader, desc, show=dist.is_main):
                batch = batch.to(self.device)
                with self._autocast():
                    out = model(batch)
                pred, y = select(out.float(), batch)
                preds.append(pred.cpu())
                targets.append(y.cpu())
            pred, target = dist.gather_batches(preds), dist.gather_batches(targets)
        if pred.numel() and not bool(torch.isfinite(pred).all()):
            raise NonFiniteLossError(
                f"the model's {desc} predictions contain NaN/inf ({int((~torch.isfinite(pred)).sum())} of "
                f"{pred.numel()} values); the {desc} inputs hold NaN/inf ({_non_finite_inputs(loader)}) or the "
                "weights diverged. The run stopped before this epoch was recorded as the best or logged; fix the "
                f"{desc} data (features, positional encodings) and run again")
        loss = float(objective.loss(pred, target))  # in the units the model learns
        pred = objective.predictions(pred)  # the targets' original units (regression standardisation undone)
        return EpochResult(loss, float(objective.metric(pred, target)), pred)

    @staticmethod
    def _metric(objective: Objective, pred: Optional[Tensor], target: Optional[Tensor]) -> float:
        if pred is None:
            return float("nan")
        try:
            return objective.score(pred, target)
        except ValueError:  # e.g. a split without both classes for ROC-AUC
            return float("nan")

    # ------------------------------------------------------------------ checkpoints
    def _save_last(self, path: Path, dist: Dist, model: nn.Module, optimizer, scheduler, position: Dict[str, int],
                   best: Dict[str, Any], sums: EpochSums, history: Dict[str, Any],
                   config: Optional[Mapping[str, Any]]) -> None:
        """``last.pt`` with every rank's RNG state and running sums (a collective: all ranks call it)."""
        per_rank = dist.all_gather_object({"rng": capture_rng(), "partial": sums.state_dict()})
        if dist.is_main:
            save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "scheduler": scheduler.state_dict() if scheduler else None, "position": position,
                             "best": best, "history": history, "world_size": dist.world_size,
                             "rng": [r["rng"] for r in per_rank], "partial": [r["partial"] for r in per_rank],
                             "config": config}, path)
        dist.barrier()

    def _restore(self, state: Mapping[str, Any], path: Path, dist: Dist, model: nn.Module, optimizer,
                 scheduler, sums: EpochSums) -> None:
        require_resumable(state, path)
        position = state["position"]
        if position["batch"] and state["world_size"] != dist.world_size:
            raise CheckpointError(
                f"checkpoint '{path}' stopped in the middle of epoch {position['epoch']} with "
                f"{state['world_size']} processes; resume it with {state['world_size']} processes (a different "
                "number can resume from a checkpoint taken at the end of an epoch)")
        load_model_state(model, state, path)
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state["scheduler"] is not None:
            scheduler.load_state_dict(state["scheduler"])
        if state["world_size"] == dist.world_size:
            restore_rng(state["rng"][dist.rank])
            if position["batch"]:
                sums.load_state_dict(state["partial"][dist.rank])

    # ------------------------------------------------------------------ fit
    def fit(self, model: nn.Module, data: DataModule, objective: Objective, run_dir: Path, seed: int,
            logger: Optional[Logger] = None, dist: Optional[Dist] = None,
            resume_state: Optional[Mapping[str, Any]] = None, resume_path: Optional[Path] = None,
            config: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        """Train for ``max_epochs`` (or what remains of them after ``resume_state``); returns the
        trainer's part of the run's results (the composition root, :mod:`graphgt.app`, adds the
        rest and writes ``results.json``).  ``config`` (the resolved run config) is stored in
        checkpoints to check a later resume against."""
        run = _Run(self, model, data, objective, Path(run_dir), seed, logger or NoLogger(), dist or Dist(), config)
        if resume_state is not None:
            run.restore(resume_state, Path(resume_path or run.last_path))
        run.start()
        epochs = range(run.position["epoch"], self.max_epochs + 1)
        try:
            # the epoch bar shows each epoch's numbers: the epoch lines stay off the terminal (not the log)
            with StopSignal() as stop, bars_quiet_terminal(self.progress and run.dist.is_main and len(epochs) > 1):
                bar = self._bar(epochs, "epochs", leave=True, show=run.dist.is_main)
                for epoch in bar:
                    if run.history.get("early_stopped"):  # a resumed run that had already stopped early
                        break
                    run.epoch(epoch, stop, bar if bar is not epochs else None)
                    if run.history.get("early_stopped"):
                        break
                if hasattr(bar, "close"):
                    bar.close()
                if not self.test_every_epoch and self.evaluate_test and run.best["epoch"] > 0:
                    run.test_best()
        except RuntimeError as e:
            if run.dist.distributed and _comm_failure(e) and not isinstance(e, DistributedError):
                raise DistributedError(f"rank {run.dist.rank}/{run.dist.world_size}: a collective failed during "
                                       f"training ({str(e).strip().splitlines()[0]}); another rank died, hung or lost "
                                       "its connection") from e
            raise
        times = run.history["epoch_times"]
        metric = objective.metric
        return {"metric": metric.name, "higher_is_better": metric.higher_is_better,
                "best_val": run.best["val"], "test_at_best_val": run.best["test"], "best_epoch": run.best["epoch"],
                "final_train_loss": run.history["train_loss"], "epochs": self.max_epochs,
                "stopped_epoch": run.position["epoch"] - 1, "early_stopped": bool(run.history.get("early_stopped")),
                "epoch_time_s": sum(times) / len(times) if times else float("nan"), "device": str(self.device),
                "world_size": run.dist.world_size}

    def __repr__(self) -> str:
        return (f"Trainer(max_epochs={self.max_epochs}, scheduler={self.scheduler!r}, grad_clip={self.grad_clip}, "
                f"device='{self.device}', bf16={self.bf16}, compile={self.compile!r}, "
                f"accumulate_grad_batches={self.accumulate_grad_batches}, early_stopping={self.early_stopping}, "
                f"distributed={self.distributed!r})")


class _Run:
    """The state of one :meth:`Trainer.fit`: the model, optimiser, loaders, best-so-far and position."""

    def __init__(self, trainer: Trainer, model: nn.Module, data: DataModule, objective: Objective, run_dir: Path,
                 seed: int, logger: Logger, dist: Dist, config: Optional[Mapping[str, Any]]):
        self.trainer, self.objective, self.run_dir, self.logger, self.dist, self.config = \
            trainer, objective, run_dir, logger, dist, config
        if trainer.device.type == "cuda" and dist.distributed:
            trainer.device = torch.device("cuda", dist.local_rank)
        model.to(trainer.device)
        if dist.distributed and trainer.sync_batchnorm:
            from graphgt.nn.sync_batchnorm import convert_sync_batchnorm

            model = convert_sync_batchnorm(model)
        trainer.bf16 = resolve_bf16(trainer.bf16_setting, trainer.device, model)
        self.model = model
        self.optimizer = trainer.optimizer(model.parameters())
        # the data module learns where the batches are consumed (it may keep its features there), and
        # every loader is wrapped to copy batch i + 1 to the device while batch i trains
        data.place(trainer.device)
        self.train_loader = prefetch(data.train_loader(seed, dist.rank, dist.world_size), trainer.device)
        batches = len(self.train_loader) if hasattr(self.train_loader, "__len__") else 1
        if trainer.limit_train_batches is not None:
            batches = min(batches, trainer.limit_train_batches)
        steps_per_epoch = -(-batches // trainer.accumulate_grad_batches)
        self.scheduler = trainer.scheduler.build(self.optimizer, steps_per_epoch, trainer.max_epochs) \
            if trainer.scheduler else None
        self.sign = 1.0 if objective.metric.higher_is_better else -1.0
        self.best: Dict[str, Any] = {"epoch": 0, "val": float("nan"), "test": float("nan"), "score": -float("inf")}
        self.history: Dict[str, Any] = {"epoch_times": [], "train_loss": float("nan")}
        self.position = {"epoch": 1, "batch": 0}
        self.sums = EpochSums()
        self.train_model: nn.Module = model  # wrapped for DDP by start(), after a checkpoint is restored
        self.best_state: Optional[Dict[str, Tensor]] = None
        self.val_loader = prefetch(data.val_loader(dist.rank, dist.world_size), trainer.device)
        self.test_loader = prefetch(data.test_loader(dist.rank, dist.world_size), trainer.device) \
            if trainer.evaluate_test else None
        self.last_path = run_dir / LAST

    def restore(self, state: Mapping[str, Any], path: Path) -> None:
        self.trainer._restore(state, path, self.dist, self.model, self.optimizer, self.scheduler, self.sums)
        self.best, self.history, self.position = dict(state["best"]), dict(state["history"]), dict(state["position"])

    def start(self) -> None:
        """The module that trains: the model, or its DDP wrapper (which broadcasts rank 0's weights)."""
        self.train_model = self.trainer._wrap(maybe_compile(self.model, self.trainer.compile), self.dist)

    def hint(self) -> str:
        return (f"The last good checkpoint is '{self.last_path}' (epoch {self.position['epoch'] - 1} done). "
                if self.trainer.checkpoint and self.last_path.exists() else
                "No checkpoint was written before this step. ")

    def save(self) -> None:
        if self.trainer.checkpoint:
            self.trainer._save_last(self.last_path, self.dist, self.model, self.optimizer, self.scheduler,
                                    self.position, self.best, self.sums, self.history, self.config)

    def epoch(self, epoch: int, stop: StopSignal, bar: Any = None) -> None:
        """Train, evaluate, select, log and checkpoint one epoch; :class:`Preempted` on a signal.

        Sets ``history["early_stopped"]`` when ``trainer.early_stopping`` ends the run after this
        epoch (saved in ``last.pt`` with the patience counter, so a resume stops at the same epoch)."""
        trainer, dist = self.trainer, self.dist
        t0 = time.perf_counter()
        try:
            train = trainer.train_epoch(self.train_model, self.train_loader, self.objective, self.optimizer,
                                        self.scheduler, epoch, dist, self.sums, stop, self.hint())
        except _Stop as s:
            self.position = {"epoch": epoch, "batch": s.batches}
            self.save()
            raise Preempted(f"stopped by {stop.name} at epoch {epoch}, batch {s.batches}; "
                            + (f"checkpoint '{self.last_path}'" if trainer.checkpoint else
                               "trainer.checkpoint=false: nothing saved"), stop.requested) from None
        self.history["epoch_times"].append(time.perf_counter() - t0)
        self.history["train_loss"] = train.loss
        val = trainer.evaluate(self.model, self.val_loader, self.objective, "val", dist)
        test = trainer.evaluate(self.model, self.test_loader, self.objective, "test", dist) \
            if trainer.test_every_epoch else EpochResult(float("nan"), float("nan"))
        if self.sign * val.metric > self.best["score"]:
            self.best = {"epoch": epoch, "val": val.metric, "test": test.metric, "score": self.sign * val.metric}
            if not trainer.test_every_epoch and trainer.evaluate_test and not trainer.checkpoint:
                self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            if trainer.checkpoint and dist.is_main:
                save_checkpoint({"model": self.model.state_dict(), "epoch": epoch, "best": self.best,
                                 "config": self.config}, self.run_dir / BEST)
        self._early_stopping(epoch, val.metric)
        if dist.is_main:
            name = self.objective.metric.name
            lr = self.optimizer.param_groups[0]["lr"]
            self.logger.log(epoch, {"train_loss": train.loss, f"train_{name}": train.metric,
                                    "val_loss": val.loss, f"val_{name}": val.metric,
                                    "test_loss": test.loss, f"test_{name}": test.metric,
                                    "lr": lr, "epoch_time_s": self.history["epoch_times"][-1]})
            self._report(epoch, train, val, test, lr, bar)
        self.position, self.sums = {"epoch": epoch + 1, "batch": 0}, EpochSums()
        self.save()
        if dist.all_sum([1.0 if stop.requested else 0.0])[0] > 0:
            raise Preempted(f"stopped by {stop.name} after epoch {epoch}; checkpoint '{self.last_path}'",
                            stop.requested or 15)

    def _early_stopping(self, epoch: int, val_metric: float) -> None:
        """Count the epochs without an improvement of more than ``min_delta`` (Keras' rule: against
        the last value that improved that much); stop after ``patience`` of them.  The counter
        lives in ``history`` (checkpointed in ``last.pt``); every rank sees the same validation
        metric, so all ranks stop at the same epoch without a collective."""
        patience = self.trainer.early_stopping
        if patience is None:
            return
        score = self.sign * val_metric  # NaN compares False: never an improvement
        if score > self.history.get("es_score", -float("inf")) + self.trainer.early_stopping_min_delta:
            self.history["es_score"], self.history["es_wait"] = score, 0
        else:
            self.history["es_wait"] = self.history.get("es_wait", 0) + 1
        if self.history["es_wait"] >= patience and epoch < self.trainer.max_epochs:
            self.history["early_stopped"] = True

    def _report(self, epoch: int, train: EpochResult, val: EpochResult, test: EpochResult, lr: float,
                bar: Any) -> None:
        """The epoch's line (``graphgt.train.epochs`` logger) and the epoch bar's postfix (rank 0)."""
        trainer, name, best = self.trainer, self.objective.metric.name, self.best
        parts = [f"epoch {epoch}/{trainer.max_epochs}", f"train loss {train.loss:.4f}",
                 f"val {name} {_fmt(val.metric)}"]
        if trainer.test_every_epoch:
            parts.append(f"test {name} {_fmt(test.metric)}")
        parts += [f"best val {_fmt(best['val'])} (epoch {best['epoch']})" if best["epoch"] else "best val none yet",
                  f"lr {lr:.3g}", f"{self.history['epoch_times'][-1]:.2f} s"]
        log.info(", ".join(parts))
        if self.history.get("early_stopped"):
            log.info(f"early stopping after epoch {epoch}: val {name} did not improve by more than "
                     f"{trainer.early_stopping_min_delta:g} for {trainer.early_stopping} epochs (best "
                     f"{_fmt(best['val'])} at epoch {best['epoch']})")
        if bar is not None:
            bar.set_postfix_str(f"loss {train.loss:.4f}, val {name} {_fmt(val.metric)}, best {_fmt(best['val'])}")

    def test_best(self) -> None:
        """One test pass with the best validation epoch's weights (``test_every_epoch=false``)."""
        last_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        best_state = self.best_state
        if best_state is None:
            best_state = torch.load(self.run_dir / BEST, map_location=self.trainer.device, weights_only=True)["model"]
        self.model.load_state_dict(best_state)
        self.best["test"] = self.trainer.evaluate(self.model, self.test_loader, self.objective, "test",
                                                  self.dist).metric
        self.model.load_state_dict(last_state)
        if self.dist.is_main:
            log.info(f"test {self.objective.metric.name} at the best val epoch ({self.best['epoch']}): "
                     f"{_fmt(self.best['test'])}")
