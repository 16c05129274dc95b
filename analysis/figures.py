"""The paper's figures from a sweep's Parquet results (matplotlib, Agg canvas, no pyplot
state, so importing this never changes the caller's backend).

* `ap_vs_beta`: AP@0.5 vs β, one line per N with a ±std band (ddof=1 over seeds) and the
  random baseline of the same N as a dashed horizontal line; oracle and predicted
  panels side by side (a mode the sweep lacks is a grey panel saying so).
* `subsets` (Fig. 5): per β, the mean number of objects per image and the mean object
  size of the selected images (bars per N, ±std over the images), the whole pool's mean
  as a dotted line; oracle and predicted columns.
* `image_grid` (Fig. 6): the first selected images per β, only when the sweep saved
  image files (``SWEEP/images/<image_id>.png`` or ``SWEEP/stages/*/images/``).
* `ap_vs_days`: AP@0.5 vs annotation days, one panel per N, one line per strategy/mode
  (mean over seeds), a marker per selection round (``study.rounds``; the ``rounds``
  table), ±std (ddof=1) as error bars.

Each function writes ``<stem>.png`` (``dpi`` 100, the size given in pixels below) and
``<stem>.pdf`` and returns both paths.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from analysis.schema import Status
from analysis.tables import arm_label

MODES = ("oracle", "predicted")
DPI = 100
#: (width, height) in pixels of each figure's PNG.
SIZES = {"ap_vs_beta": (1000, 420), "subsets": (1000, 700), "image_grid": None,
         "ap_vs_days": (1000, 420), "delta_vs_beta": (1000, 420)}
#: The marker of selection round 1, 2, … in `ap_vs_days` (then again from the first).
ROUND_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _figure(size: tuple[int, int]) -> Figure:
    fig = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, stem: Path) -> list[Path]:
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for p in paths:
        fig.savefig(p, dpi=DPI)  # no bbox_inches="tight": the PNG keeps its stated size
    return paths


def _colors(ns: list[int]) -> dict[int, tuple]:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return {n: cmap(0.15 + 0.7 * i / max(len(ns) - 1, 1)) for i, n in enumerate(ns)}


def _grey(ax, text: str) -> None:
    ax.set_facecolor("0.93")
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes,
            color="0.35", wrap=True)
    # tick_params, not set_yticks([]): the latter would clear a shared axis too
    ax.tick_params(left=False, bottom=False, labelleft=False, labelbottom=False)


def _same_ylim(axes: list) -> None:
    """One y range over the panels that hold data (a grey panel keeps its own)."""
    live = [ax for ax in axes if ax.has_data()]
    if len(live) > 1:
        lo = min(ax.get_ylim()[0] for ax in live)
        hi = max(ax.get_ylim()[1] for ax in live)
        for ax in live:
            ax.set_ylim(lo, hi)


def _mean_std(values: pd.Series) -> tuple[float, float]:
    v = values.dropna().astype(float)
    if v.empty:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def ap_vs_beta(trials: pd.DataFrame, stem: str | Path, metric: str = "ap50",
               scale: float = 100.0) -> list[Path]:
    """AP vs β per N, oracle | predicted, random baseline dashed."""
    ok = trials[trials["status"] == Status.COMPLETED.value]
    ns = sorted(int(n) for n in trials["N"].dropna().unique())
    colors = _colors(ns)
    fig = _figure(SIZES["ap_vs_beta"])
    axes = fig.subplots(1, 2)
    ylabel = "AP@0.5 (%)" if metric == "ap50" else f"{metric} ×{scale:g}"
    for ax, mode in zip(axes, MODES):
        ax.set_title(f"{mode} IoU")
        sel = ok[ok["mode"] == mode]
        if not (trials["mode"] == mode).any():
            _grey(ax, f"no {mode} trials\nin this sweep")
            continue
        for n in ns:
            part = sel[sel["N"] == n]
            betas = sorted(part["beta"].dropna().unique())
            stats = [_mean_std(part.loc[part["beta"] == b, metric]) for b in betas]
            mean = np.array([s[0] for s in stats]) * scale
            std = np.array([s[1] for s in stats]) * scale
            if len(betas):
                ax.plot(betas, mean, "o-", color=colors[n], label=f"N = {n}")
                ax.fill_between(betas, mean - std, mean + std, color=colors[n], alpha=0.2,
                                linewidth=0)
            rnd = ok[(ok["mode"] == "random") & (ok["N"] == n)]
            r_mean, _ = _mean_std(rnd[metric])
            if not math.isnan(r_mean):
                ax.axhline(r_mean * scale, color=colors[n], linestyle="--", linewidth=1.2,
                           label=f"random, N = {n}")
        ax.set_xlabel("β (target image IoU score)")
        ax.set_ylabel(ylabel)
        ax.set_xlim(-0.05, 1.05)
        ax.margins(y=0.12)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    _same_ylim(list(axes))
    fig.suptitle("AP@0.5 vs β: mean ± std over seeds; dashed: random selection")
    fig.tight_layout()
    return _save(fig, Path(stem))


def delta_vs_beta(summary: pd.DataFrame, stem: str | Path, scale: float = 100.0
                  ) -> list[Path]:
    """Paired Δ AP (arm − random of the same seed and N) vs β per N, oracle | predicted:
    the mean difference and its 95 % t interval as a band; 0 (no gain) dashed.

    Args:
        summary: `analysis.paired.summary` of the annotation network's differences.
    """
    ns = sorted(int(n) for n in summary["N"].dropna().unique())
    colors = _colors(ns)
    fig = _figure(SIZES["delta_vs_beta"])
    axes = fig.subplots(1, 2, sharey=True)
    for ax, mode in zip(axes, MODES):
        ax.set_title(f"{mode} IoU")
        part = summary[(summary["mode"] == mode) & summary["beta"].notna()]
        if part.empty:
            _grey(ax, f"no paired {mode} results\nin this sweep")
            continue
        for n in ns:
            rows = part[part["N"] == n].sort_values("beta")
            if rows.empty:
                continue
            beta = rows["beta"].to_numpy(float)
            ax.plot(beta, rows["mean"].to_numpy(float) * scale, "o-", color=colors[n],
                    label=f"N = {n}")
            lo, hi = rows["ci_lo"].to_numpy(float), rows["ci_hi"].to_numpy(float)
            ax.fill_between(beta, lo * scale, hi * scale, color=colors[n], alpha=0.2,
                            linewidth=0)
        ax.axhline(0.0, color="0.3", linestyle="--", linewidth=1.0)
        ax.set_xlabel("β (target image IoU score)")
        ax.set_ylabel("Δ AP@0.5 vs random (points)")
        ax.set_xlim(-0.05, 1.05)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle("Paired Δ AP@0.5 vs β: mean of per-seed differences to random, "
                 "95 % CI band")
    fig.tight_layout()
    return _save(fig, Path(stem))


def ap_vs_days(rounds: pd.DataFrame, stem: str | Path, scale: float = 100.0) -> list[Path]:
    """AP@0.5 vs annotation days per N: one line per strategy/mode (and β), through the
    mean (over seeds) of each selection round, marked by round."""
    from matplotlib import colormaps
    from matplotlib.lines import Line2D

    ok = rounds[rounds["status"].fillna(Status.COMPLETED.value) == Status.COMPLETED.value]
    ns = sorted(int(n) for n in rounds["N"].dropna().unique())
    fig = _figure(SIZES["ap_vs_days"])
    axes = np.atleast_1d(fig.subplots(1, max(len(ns), 1), squeeze=False)[0])
    arms = sorted({(str(m), None if pd.isna(b) else float(b))
                   for m, b in ok[["mode", "beta"]].itertuples(index=False)},
                  key=lambda a: (a[0] != "random", a[0], -1.0 if a[1] is None else a[1]))
    colors = {arm: colormaps["tab10"](i % 10) for i, arm in enumerate(arms)}
    numbers = sorted(int(r) for r in ok["round"].dropna().unique())
    for ax, n in zip(axes, ns or [-1]):
        part = ok[ok["N"] == n]
        ax.set_title(f"N = {n}" if n >= 0 else "")
        if part.empty:
            _grey(ax, "no completed rounds" + (f"\nat N = {n}" if n >= 0 else ""))
            continue
        for arm in arms:
            mode, beta = arm
            mine = part[(part["mode"] == mode) & (part["beta"].isna() if beta is None
                                                  else (part["beta"] - beta).abs() < 1e-9)]
            pts = []
            for r in numbers:
                at = mine[mine["round"] == r]
                if at.empty:
                    continue
                ap, sd = _mean_std(at["ap50"])
                pts.append((r, float(at["budget_days"].mean()), ap * scale, sd * scale))
            if not pts:
                continue
            xs, ys = [p[1] for p in pts], [p[2] for p in pts]
            ax.plot(xs, ys, "-", color=colors[arm], linewidth=1.4)
            for r, x, y, sd in pts:
                ax.errorbar([x], [y], yerr=[sd], color=colors[arm], capsize=2,
                            marker=ROUND_MARKERS[(r - 1) % len(ROUND_MARKERS)], markersize=6,
                            elinewidth=0.8)
        ax.set_xlabel("annotation days (Table-1 costs)")
        ax.set_ylabel("AP@0.5 (%)")
        ax.margins(x=0.08, y=0.12)
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=colors[a], label=arm_label(*a)) for a in arms]
    handles += [Line2D([], [], color="0.2", linestyle="none", label=f"round {r}",
                       marker=ROUND_MARKERS[(r - 1) % len(ROUND_MARKERS)]) for r in numbers]
    if handles:
        axes[-1].legend(handles=handles, fontsize=8, loc="best")
    _same_ylim(list(axes))
    fig.suptitle("AP@0.5 vs annotation days per selection round: mean ± std over seeds")
    fig.tight_layout()
    return _save(fig, Path(stem))


def selected_subsets(trials: pd.DataFrame, selections: pd.DataFrame,
                     scores: pd.DataFrame) -> pd.DataFrame:
    """Selected images joined with their trial (N, β, seed, mode) and their pool
    statistics (``n_objects``, ``mean_object_area``) from ``image_scores``."""
    cols = ["trial", "N", "beta", "seed"]
    sel = selections.drop(columns=[c for c in ("N", "beta", "seed") if c in selections])
    joined = sel.merge(trials[cols], on="trial", how="inner")
    keys = ["image_id", "seed"] if "seed" in scores.columns else ["image_id"]
    stats = scores[keys + ["n_objects", "mean_object_area"]].drop_duplicates(keys)
    return joined.merge(stats, on=keys, how="inner")


def subsets(trials: pd.DataFrame, selections: pd.DataFrame, scores: pd.DataFrame,
            stem: str | Path) -> list[Path]:
    """Fig. 5: objects per image and mean object size of each β's selection."""
    data = selected_subsets(trials, selections, scores)
    pool = scores[~scores["in_init"].fillna(False).astype(bool)] \
        if "in_init" in scores.columns else scores
    ns = sorted(int(n) for n in trials["N"].dropna().unique())
    colors = _colors(ns)
    fig = _figure(SIZES["subsets"])
    axes = fig.subplots(2, 2)
    quantities = [("n_objects", "objects per image"),
                  ("mean_object_area", "mean object size (fraction of image)")]
    rnd = data[data["mode"] == "random"]
    for j, mode in enumerate(MODES):
        part = data[data["mode"] == mode]
        for i, (col, label) in enumerate(quantities):
            ax = axes[i, j]
            if i == 0:
                ax.set_title(f"{mode} IoU")
            if part.empty:
                _grey(ax, f"no {mode} selections\nin this sweep")
                continue
            betas = sorted(part["beta"].dropna().unique())
            cats = (["random"] if not rnd.empty else []) + [f"{b:.1f}" for b in betas]
            x = np.arange(len(cats))
            width = 0.8 / max(len(ns), 1)
            for k, n in enumerate(ns):
                means, stds = [], []
                groups = ([rnd[rnd["N"] == n]] if not rnd.empty else []) + \
                    [part[(part["N"] == n) & (part["beta"] == b)] for b in betas]
                for g in groups:
                    m, s = _mean_std(g[col])
                    means.append(m)
                    stds.append(s)
                ax.bar(x - 0.4 + width * (k + 0.5), means, width, yerr=stds,
                       color=colors[n], label=f"N = {n}", capsize=2,
                       error_kw={"elinewidth": 0.8})
            pool_mean = float(pool[col].mean()) if not pool.empty else math.nan
            if not math.isnan(pool_mean):
                ax.axhline(pool_mean, color="0.3", linestyle=":", linewidth=1.2,
                           label="pool mean")
            ax.set_xticks(x)
            ax.set_xticklabels(cats)
            ax.grid(axis="y", alpha=0.3)
            ax.set_ylabel(label)
            if i == 1:
                ax.set_xlabel("β (selection target)")
            if i == 0:
                ax.legend(fontsize=8)
    for row in axes:
        _same_ylim(list(row))
    fig.suptitle("Selected subsets (Fig. 5): mean ± std over the selected images")
    fig.tight_layout()
    return _save(fig, Path(stem))


def image_files(sweep: str | Path) -> dict[int, Path]:
    """image_id → a saved image file, from ``SWEEP/images/`` or ``SWEEP/stages/*/images/``
    (files named ``<image_id>.png``/``.jpg``); empty when the jobs saved none."""
    sweep = Path(sweep)
    out: dict[int, Path] = {}
    for folder in [sweep / "images", *sorted(sweep.glob("stages/*/images"))]:
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES and p.stem.isdigit():
                out.setdefault(int(p.stem), p)
    return out


def image_grid(trials: pd.DataFrame, selections: pd.DataFrame, files: dict[int, Path],
               stem: str | Path, per_row: int = 6) -> list[Path] | None:
    """Fig. 6: the ``per_row`` first-ranked selected images of each β (predicted mode,
    else oracle; largest N, first seed). ``None`` when no selected image has a file."""
    from matplotlib.image import imread

    if not files or selections.empty:
        return None
    mode = "predicted" if (selections["mode"] == "predicted").any() else "oracle"
    sel = selections[selections["mode"] == mode].merge(
        trials[["trial", "N", "beta", "seed"]], on="trial")
    if sel.empty:
        return None
    sel = sel[(sel["N"] == sel["N"].max()) & (sel["seed"] == sel["seed"].min())]
    betas = sorted(sel["beta"].dropna().unique())
    rows = []
    for b in betas:
        ids = [int(i) for i in sel[sel["beta"] == b].sort_values("rank")["image_id"]
               if int(i) in files][:per_row]
        rows.append((b, ids))
    if not any(ids for _, ids in rows):
        return None
    fig = _figure((150 * per_row + 60, 150 * len(rows) + 40))
    axes = np.atleast_2d(fig.subplots(len(rows), per_row, squeeze=False))
    for r, (b, ids) in enumerate(rows):
        for c in range(per_row):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(ids):
                ax.imshow(imread(files[ids[c]]))
            else:
                ax.axis("off")
            if c == 0:
                ax.set_ylabel(f"β = {b:.1f}")
    fig.suptitle(f"Selected images per β ({mode} IoU, N = {int(sel['N'].max())})")
    fig.tight_layout()
    return _save(fig, Path(stem))
