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
"""
from __future__ import annotations

import contextlib
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
from graphgt.train.logging import Logger, NoLogger
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
    """

    def __init__(self, max_epochs: int = 100, optimizer: Optional[Callable[..., torch.optim.Optimizer]] = None,
                 scheduler: Optional[WarmupCosine] = None, grad_clip: Optional[float] = 1.0,
                 device: str = "auto", bf16: Union[bool, str] = "auto",
                 compile: Union[bool, str] = False, progress: bool = True, checkpoint: bool = True,
                 limit_train_batches: Optional[int] = None, test_every_epoch: bool = True,
                 evaluate_test: bool = True, accumulate_grad_batches: int = 1, sync_batchnorm: bool = False,
                 distributed: Optional[DDPConfig] = None):
        if max_epochs < 1:
            raise ValueError(f"trainer.max_epochs must be >= 1, got {max_epochs}")
        if limit_train_batches is not None and limit_train_batches < 1:
            raise ValueError(f"trainer.limit_train_batches must be >= 1 or null, got {limit_train_batches}")
        if accumulate_grad_batches < 1:
            raise ValueError(f"trainer.accumulate_grad_batches must be >= 1, got {accumulate_grad_batches}")
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
        computes the whole split itself, identically on every rank.
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
        return EpochResult(float(objective.loss(pred, target)), float(objective.metric(pred, target)), pred)

    @staticmethod
    def _metric(objective: Objective, pred: Optional[Tensor], target: Optional[Tensor]) -> float:
        if pred is None:
            return float("nan")
        try:
            return float(objective.metric(pred, target))
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
        try:
            with StopSignal() as stop:
                for epoch in self._bar(range(run.position["epoch"], self.max_epochs + 1), "epochs", leave=True,
                                       show=run.dist.is_main):
                    run.epoch(epoch, stop)
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
                "epoch_time_s": sum(times) / len(times) if times else float("nan"), "device": str(self.device),
                "world_size": run.dist.world_size}

    def __repr__(self) -> str:
        return (f"Trainer(max_epochs={self.max_epochs}, scheduler={self.scheduler!r}, grad_clip={self.grad_clip}, "
                f"device='{self.device}', bf16={self.bf16}, compile={self.compile!r}, "
                f"accumulate_grad_batches={self.accumulate_grad_batches}, "
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

    def epoch(self, epoch: int, stop: StopSignal) -> None:
        """Train, evaluate, select, log and checkpoint one epoch; :class:`Preempted` on a signal."""
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
        if dist.is_main:
            name = self.objective.metric.name
            self.logger.log(epoch, {"train_loss": train.loss, f"train_{name}": train.metric,
                                    "val_loss": val.loss, f"val_{name}": val.metric,
                                    "test_loss": test.loss, f"test_{name}": test.metric,
                                    "lr": self.optimizer.param_groups[0]["lr"],
                                    "epoch_time_s": self.history["epoch_times"][-1]})
        self.position, self.sums = {"epoch": epoch + 1, "batch": 0}, EpochSums()
        self.save()
        if dist.all_sum([1.0 if stop.requested else 0.0])[0] > 0:
            raise Preempted(f"stopped by {stop.name} after epoch {epoch}; checkpoint '{self.last_path}'",
                            stop.requested or 15)

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
