"""Files that are either whole or absent: write to a temporary name, fsync, rename.

A crash (or a requeue mid-write) never leaves a half-written checkpoint, Parquet
file or ``DONE`` marker behind under the final name.
"""
from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    write_bytes(path, text.encode())


#: Signals a scheduler sends to preempt a job (submitit checkpoints on SIGUSR2).
DEFERRED_SIGNALS = {signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM}


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold preemption signals until the block ends, then deliver them.

    A handler that exits (submitit's requeue does ``sys.exit``) in the middle of
    ``torch.save`` makes torch turn the exit into a RuntimeError, which reads as a
    failed job; deferring the signal lets the write finish first. (Masking with
    ``pthread_sigmask`` is not enough: the kernel hands a process signal to any
    thread that does not block it, and torch runs several.)
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    old = {s: signal.getsignal(s) for s in DEFERRED_SIGNALS}
    for s in DEFERRED_SIGNALS:
        signal.signal(s, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        for signum in pending:
            signal.raise_signal(signum)


def torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` that never leaves a partial file under ``path`` and is not cut
    short by a preemption signal (it is handled once the file is whole)."""
    import torch

    with signals_deferred(), atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
