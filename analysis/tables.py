"""The paper's tables from a sweep's Parquet results.

Table 3 (oracle) and Table 4 (predicted): mean ± std of AP@0.5 over seeds, rows
"Random subset" and each β, columns N; the best mean of each column in bold. Std is
the sample standard deviation (ddof=1), as the paper's "5 runs" suggests; a cell with
a single seed shows no std. A cell where some seeds are missing or failed is marked
with its count (e.g. ``(2/3)``) so a mean is never silently taken over fewer runs.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from analysis.io import read

TITLES = {"predicted": "Table 4 — predicted IoU", "oracle": "Table 3 — oracle IoU"}


def _cell(values: pd.Series, expected: int, scale: float) -> tuple[str, float]:
    vals = values.dropna().astype(float) * scale
    if vals.empty:
        return "—", -math.inf
    mean = float(vals.mean())
    text = f"{mean:.1f}"
    if len(vals) > 1:
        text += f" ± {float(vals.std(ddof=1)):.1f}"
    if len(vals) < expected:
        text += f" ({len(vals)}/{expected})"
    return text, mean


def selection_table(trials: pd.DataFrame, mode: str = "predicted", metric: str = "ap50",
                    scale: float = 100.0) -> str:
    """A Table-3/4-shaped Markdown table of ``metric`` (×``scale``) for ``mode`` vs random.

    Args:
        trials: the ``trials`` table (one row per trial).
        mode: ``predicted`` (Table 4) or ``oracle`` (Table 3).
    """
    if trials.empty:
        raise ValueError("no trials in the results yet")
    ok = trials[trials["status"] == "COMPLETED"]
    seeds = sorted(trials["seed"].dropna().unique())
    ns = sorted(int(n) for n in trials["N"].dropna().unique())
    rows: list[tuple[str, pd.DataFrame]] = [("Random subset", ok[ok["mode"] == "random"])]
    sel = ok[ok["mode"] == mode]
    betas = sorted(trials.loc[trials["mode"] == mode, "beta"].dropna().unique())
    rows += [(f"β = {b:.1f}", sel[sel["beta"] == b]) for b in betas]

    cells = [[_cell(df.loc[df["N"] == n, metric], len(seeds), scale) for n in ns]
             for _, df in rows]
    best = [max((r[j][1] for r in cells), default=-math.inf) for j in range(len(ns))]
    header = "| | " + " | ".join(str(n) for n in ns) + " |"
    lines = [header, "|---|" + "---|" * len(ns)]
    for (label, _), row in zip(rows, cells):
        texts = [f"**{t}**" if m == best[j] and m > -math.inf else t
                 for j, (t, m) in enumerate(row)]
        lines.append(f"| {label} | " + " | ".join(texts) + " |")
    failed = int((trials["status"] != "COMPLETED").sum())
    title = TITLES.get(mode, mode)
    note = (f"{title}: {metric} ×{scale:g}, mean ± std (ddof=1) over seeds "
            f"{', '.join(str(int(s)) for s in seeds)}; best per column in bold")
    if failed:
        note += f"; {failed} failed trial(s) left out, see the trials table"
    return note + "\n\n" + "\n".join(lines) + "\n"


def render(sweep: str | Path, mode: str = "predicted") -> str:
    """Read ``SWEEP/results`` and render the selection table for ``mode``."""
    return selection_table(read(sweep, "trials"), mode=mode)
