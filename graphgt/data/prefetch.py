"""Copy the next batch to the device while the current one is used.

:class:`DevicePrefetcher` wraps any iterable of batches (PyG ``Data``/``Batch``, or anything with
``.to(device, non_blocking=...)``) and yields them on ``device``, in the same order and with the
same values.  On a CUDA device a background thread takes batch ``i + 1`` from the loader (in the
store loaders: waiting for a worker, or gathering on the device) and issues its host-to-device
copy on a side CUDA stream (``non_blocking=True``, asynchronous from page-locked host memory), while
the training step of batch ``i`` runs on the default stream::

    thread:  next(loader) -> batch.to(device, non_blocking) on the side stream -> event -> queue
    caller:  queue -> default stream waits for the event -> record_stream -> use batch

so neither the loader's host work nor the copy stalls the step, and a per-step host sync (the
trainer's ``loss.item()``) does not stop the next batch from being prepared.  ``record_stream``
tells the caching allocator that the batch's memory, allocated on the side stream, is used on the
default stream.  On any other device it is a pass-through (``batch.to(device)``; a no-op for CPU
tensors), so the trainer runs one code path everywhere.

``len()`` and ``set_epoch(epoch, start)`` are the wrapped loader's.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Iterable, Iterator, Optional

import torch

_DONE = object()


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


def _record_stream(batch: Any, stream: "torch.cuda.Stream") -> None:
    for key in batch.keys():
        value = batch[key]
        if isinstance(value, torch.Tensor) and value.is_cuda:
            value.record_stream(stream)


class DevicePrefetcher:
    """Yields the batches of ``loader`` on ``device``, copying batch ``i + 1`` while batch ``i`` is used.

    Args:
        loader: any iterable of batches with ``.to(device, non_blocking=...)`` and ``.keys()``.
        device: the device the consumer computes on.
        depth: batches prepared ahead on a CUDA device (each holds device memory until used).
    """

    def __init__(self, loader: Iterable, device: Any, depth: int = 1):
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be an int >= 1, got {depth!r}")
        self.loader, self.device, self.depth = loader, torch.device(device), depth

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        if hasattr(self.loader, "set_epoch"):
            self.loader.set_epoch(epoch, start)

    @property
    def overlaps(self) -> bool:
        """Whether copies run on a side stream (a CUDA device) or the wrapper is a pass-through."""
        return self.device.type == "cuda"

    def __iter__(self) -> Iterator[Any]:
        if not self.overlaps:
            return (batch.to(self.device) for batch in self.loader)
        return self._cuda()

    def _cuda(self) -> Iterator[Any]:
        stream = torch.cuda.Stream(self.device)
        ready: "queue.Queue[Any]" = queue.Queue(maxsize=self.depth)
        stop = threading.Event()
        it = iter(self.loader)

        def put(item: Any) -> bool:
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def fill() -> None:
            try:
                with torch.cuda.device(self.device), torch.cuda.stream(stream):
                    for batch in it:
                        if stop.is_set():
                            return
                        batch = batch.to(self.device, non_blocking=True)
                        event = torch.cuda.Event()
                        event.record(stream)
                        if not put((batch, event)):
                            return
                put(_DONE)
            except BaseException as e:  # handed to the consumer, raised there
                put(_Failed(e))

        thread = threading.Thread(target=fill, name="graphgt-prefetch", daemon=True)
        thread.start()
        current = torch.cuda.current_stream(self.device)
        try:
            while True:
                item = ready.get()
                if item is _DONE:
                    return
                if isinstance(item, _Failed):
                    raise item.error
                batch, event = item
                current.wait_event(event)
                _record_stream(batch, current)
                yield batch
        finally:
            stop.set()
            while thread.is_alive():  # the loader must not be iterated by two threads at once
                try:
                    ready.get_nowait()
                except queue.Empty:
                    thread.join(timeout=0.05)

    def __repr__(self) -> str:
        return f"DevicePrefetcher(device='{self.device}', depth={self.depth}, loader={self.loader!r})"


def prefetch(loader: Optional[Iterable], device: Any) -> Optional[Iterable]:
    """``loader`` wrapped in a :class:`DevicePrefetcher` for ``device`` (``None`` stays ``None``, and
    so does a loader that predicts by itself, e.g. :class:`~graphgt.data.layerwise.LayerwiseInference`)."""
    if loader is None or callable(getattr(loader, "predict", None)):
        return loader
    return DevicePrefetcher(loader, device)
