"""Preemption: SIGTERM/SIGINT become a request to stop at the next safe point.

Clusters announce preemption with SIGTERM (Slurm's ``--signal``, Kubernetes, torchrun forwarding
its own SIGTERM), users with Ctrl-C (SIGINT).  Inside :class:`StopSignal` neither kills the
process: the handler records the request, the trainer notices it at the end of the current
optimisation step (all DDP ranks agree on the step through the step's all-reduce), writes a
checkpoint and raises :class:`Preempted`, which the command line turns into a clean exit with status
``128 + signal number`` (143 for SIGTERM, 130 for SIGINT: the run did not finish, and
``trainer.resume=auto`` continues it).  Further signals while stopping are ignored (torchrun
forwards the terminal's SIGINT a second time); SIGKILL still ends the process at once.
"""
from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Dict, Optional, Sequence

from graphgt.errors import Preempted

__all__ = ["Preempted", "StopSignal"]


class StopSignal:
    """Context manager: while active, the given signals set :attr:`requested` instead of killing.

    Handlers can only be installed from the main thread; elsewhere (a test runner thread) the
    context changes nothing and :attr:`requested` stays ``None``.
    """

    def __init__(self, signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT)):
        self.signals = tuple(signals)
        self.requested: Optional[int] = None
        self._previous: Dict[int, object] = {}

    @property
    def name(self) -> str:
        return signal.Signals(self.requested).name if self.requested else "none"

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.requested is None:
            self.requested = signum
            print(f"graphgt: {signal.Signals(signum).name} received: stopping after the current step and "
                  "writing a checkpoint", file=sys.stderr, flush=True)

    def __enter__(self) -> "StopSignal":
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()
