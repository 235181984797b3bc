"""Every error graphgt raises on purpose, at the ground floor so that any package may raise them.

Each is a :class:`GraphGTError` with an ``exit_code``; the command line catches the base class in
one place (:func:`graphgt.cli.main`) and prints ``graphgt: error: <message>`` without a traceback,
then exits with that code.  The message names the key, file or value at fault and what would fix
it.  The errors pickle with their arguments, so a DDP worker can hand one back to the launcher.

====================  ====  ==============================================================
error                 exit  meaning
====================  ====  ==============================================================
ConfigError           2     bad user input (config key, value, file, data on disk)
StoreError            2     a graph store is missing, incomplete or inconsistent
CheckpointError       2     a checkpoint is unreadable, foreign or from another config
NonFiniteLossError    1     the training loss or an evaluation's outputs became NaN/inf
WriteError            1     a result or checkpoint could not be written (the previous one is intact)
RunDirLocked          2     another graphgt process is running in the same run directory
DistributedError      1     a collective failed: another rank died, hung or disconnected
Preempted             128+s stopped by signal ``s`` after writing the checkpoint
====================  ====  ==============================================================
"""
from __future__ import annotations

from typing import Any, Tuple


class GraphGTError(Exception):
    """Base of graphgt's errors: a message for the user and the process exit status."""

    exit_code: int = 1

    def __reduce__(self) -> Tuple[Any, ...]:  # pickles with its arguments (DDP workers report errors)
        return type(self), self.args


class ConfigError(GraphGTError, ValueError):
    """Bad user input: names the key, file or value at fault and says how to fix it."""

    exit_code = 2


class StoreError(ConfigError):
    """A store directory is missing, incomplete, of another format version, or inconsistent."""


class CheckpointError(ConfigError):
    """A checkpoint cannot be used: unreadable, not graphgt's, or from an incompatible run."""


class NonFiniteLossError(GraphGTError, RuntimeError):
    """The loss became NaN/inf: the message names the epoch and step and the last good checkpoint."""


class WriteError(GraphGTError, OSError):
    """A file graphgt writes (checkpoint, results, metrics) could not be written: disk full, a file-size
    limit, permissions.  Writes are atomic, so the previous version of the file is intact."""


class RunDirLocked(ConfigError):
    """Another graphgt process holds the run directory (two runs must never write into one directory)."""


class DistributedError(GraphGTError, RuntimeError):
    """A collective operation failed: another rank died, hung or lost its connection."""


class Preempted(GraphGTError):
    """The run stopped on a signal after writing its checkpoint; ``exit_code`` = 128 + signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message, int(signum))
        self.signum = int(signum)
        self.exit_code = 128 + int(signum)

    def __str__(self) -> str:
        return str(self.args[0])


__all__ = ["GraphGTError", "ConfigError", "StoreError", "CheckpointError", "NonFiniteLossError", "WriteError",
           "RunDirLocked", "DistributedError", "Preempted"]
