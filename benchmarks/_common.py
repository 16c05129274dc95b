"""Shared pieces of the benchmark scripts: the machine line, interleaved timing, the
ratio line.

Speed is measured as a ratio against a floor run in the same process, repeat by repeat
(floor, subject, floor, subject, …), so that a machine shared with other work slows
both sides of each ratio alike; the median over the repeats is reported.
"""
from __future__ import annotations

import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:          # `python benchmarks/x.py` from anywhere
    sys.path.insert(0, str(ROOT))


def machine_line(device: str = "cpu") -> str:
    """One line saying where the numbers come from."""
    import torch

    gpu = ""
    if torch.cuda.is_available():
        gpu = f", gpus={torch.cuda.device_count()} ({torch.cuda.get_device_name(0)})"
    return (f"machine: cpus={os.cpu_count()} torch_threads={torch.get_num_threads()} "
            f"device={device}{gpu} torch={torch.__version__} python={platform.python_version()} "
            f"date={datetime.date.today().isoformat()}")


def clock(fn: Callable[[], object], sync: Callable[[], None] | None = None) -> float:
    """Seconds one call of ``fn`` takes (``sync`` waits for queued device work)."""
    if sync is not None:
        sync()
    t0 = time.perf_counter()
    fn()
    if sync is not None:
        sync()
    return time.perf_counter() - t0


def interleaved(floor: Callable[[], object], subject: Callable[[], object], repeats: int,
                sync: Callable[[], None] | None = None) -> tuple[list[float], list[float]]:
    """Time ``floor`` then ``subject``, ``repeats`` times → (floor times, subject times)."""
    f_times, s_times = [], []
    for _ in range(repeats):
        f_times.append(clock(floor, sync))
        s_times.append(clock(subject, sync))
    return f_times, s_times


def median_ratio(subject: list[float], floor: list[float]) -> float:
    """Median of the per-repeat ratios subject / floor."""
    return statistics.median(s / f for s, f in zip(subject, floor))


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def ratio_line(name: str, value: float, meaning: str) -> str:
    """The line the smoke test looks for: ``ratio <name> = <value>  (<meaning>)``."""
    return f"ratio {name} = {value:.3f}  ({meaning})"
