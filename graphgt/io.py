"""Atomic file writes: a temporary file next to the target, then a rename.

A crash or a kill while writing leaves either the old file or the new one, never half of one;
every cache, checkpoint and result file of graphgt is written this way, with the permissions a
plain write would give (``0666 & ~umask``), and a failed write raises :class:`~graphgt.errors.WriteError`.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from graphgt.errors import WriteError


def _umask() -> int:
    """This process's umask.  Read from ``/proc/self/status`` where Linux shows it: setting it to read
    it (``os.umask``) would, for a moment, give every file another thread creates mode 0666."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)  # the fallback: briefly stricter, never looser
    os.umask(mask)
    return mask


def _limits(folder: Path) -> str:
    """What may stop a write: a file-size limit of this process, and the free space of the disk."""
    notes = []
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if soft != resource.RLIM_INFINITY:
            notes.append(f"this process may write files of at most {soft} bytes (ulimit -f)")
    except (ImportError, ValueError, OSError):  # pragma: no cover - non-POSIX
        pass
    try:
        st = os.statvfs(folder)
        notes.append(f"{st.f_bavail * st.f_frsize / 2**30:.1f} GiB free on its disk")
    except OSError:
        pass
    return "; ".join(notes)


def _atomic(path: Path, write: Callable[[str], None]) -> None:
    """Write through a temporary file in the same folder, then rename; the file gets the mode a plain
    ``open(path, "w")`` would give (``0666 & ~umask``: readable by the group, unlike ``mkstemp``'s
    0600).  A failed write (disk full, a file-size limit, permissions; torch's writer reports these
    as a ``RuntimeError``) becomes a :class:`WriteError` naming the file; the previous version of the
    file is intact."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        reason = (e.strerror if isinstance(e, OSError) else None) or " ".join(str(e).split())[:200]
        limits = _limits(path.parent)
        raise WriteError(f"could not write '{path}' ({reason}{'; ' + limits if limits else ''}); the previous "
                         "version of the file, if any, is intact. Free disk space, raise the file-size limit "
                         "or fix the folder's permissions, then run again (trainer.resume=auto continues from "
                         "the last checkpoint)") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save(obj, path)``, atomically."""
    import torch  # here, not at import: the light commands (report, reproduce) write files without torch

    _atomic(path, lambda tmp: torch.save(obj, tmp))


def atomic_write_text(text: str, path: Path) -> None:
    """``text`` at ``path``, atomically."""
    _atomic(path, lambda tmp: Path(tmp).write_text(text))


def atomic_write_json(obj: Any, path: Path) -> None:
    """``obj`` as indented JSON at ``path`` (non-JSON values as ``str``), atomically."""
    text = json.dumps(obj, indent=2, default=str)
    _atomic(path, lambda tmp: Path(tmp).write_text(text))
