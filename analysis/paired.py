"""Paired statistics: each arm against the random baseline of the same seed and N.

Arms that share a seed share the initial network and the pool's scores, so the
difference to the random arm of the same seed removes most of the seed-to-seed noise
that an unpaired mean ± std carries (the paper reports the latter, over 5 runs).

* `differences`: one row per (arm, N, seed): the arm's value, the random arm's value of
  the same seed and N, and their difference.
* `summary`: per (arm, N): the number of pairs, the mean difference, its sample standard
  deviation, its 95 % confidence interval (t distribution, n − 1 degrees of freedom),
  the seeds with a positive difference, and the two-sided paired t-test's p.
* `network_differences`: Tables 5/7's pairs, within each trial of the segmentation
  study: the segmentation network against the strong-only RSIS control and against the
  annotation network; and the segmentation network of mask-guided selection against
  that of random selection of the same seed and N.
* `table`: a `Table` of the summaries (rows arms, columns N), as ``basis tables SWEEP
  --paired`` prints it.

Only pandas and scipy (the import rule of ``analysis``).
"""
from __future__ import annotations

import math

import pandas as pd
from scipy import stats

from analysis.tables import (
    Cell, Table, _fractions, _mask_guided_betas, _ok, annotation_trials, arm_label, main_study,
)

#: Columns of `summary`.
SUMMARY_COLUMNS = ("arm", "mode", "beta", "N", "n", "mean", "sd", "ci_lo", "ci_hi",
                   "n_positive", "p")
LEVEL = 0.95


def differences(trials: pd.DataFrame, metric: str = "ap50") -> pd.DataFrame:
    """Every completed non-random arm's ``metric`` minus the random arm's of the same seed
    and N (main study: no Table-2 schedule trials, one pool fraction).

    Returns:
        Columns ``arm, mode, beta, N, seed, value, baseline, diff``; a seed whose random
        arm did not complete (or lacks the metric) has no row.
    """
    ok = _ok(annotation_trials(trials))
    ok = ok[ok[metric].notna()] if metric in ok.columns else ok.iloc[0:0]
    rnd = ok[ok["mode"] == "random"].groupby(["N", "seed"])[metric].first()
    arms = ok[ok["mode"] != "random"]
    rows = []
    for _, t in arms.iterrows():
        key = (t["N"], t["seed"])
        if key not in rnd.index:
            continue
        beta = None if pd.isna(t.get("beta")) else float(t["beta"])
        base = float(rnd.loc[key])
        rows.append({"arm": arm_label(t["mode"], beta), "mode": t["mode"], "beta": beta,
                     "N": int(t["N"]), "seed": int(t["seed"]), "value": float(t[metric]),
                     "baseline": base, "diff": float(t[metric]) - base})
    return pd.DataFrame(rows, columns=["arm", "mode", "beta", "N", "seed", "value",
                                       "baseline", "diff"])


def describe(diffs: pd.Series) -> dict[str, float]:
    """n, mean, sd (ddof=1), the 95 % t interval, positives and the paired t-test's p of
    one arm's per-seed differences (NaN where n is too small for them)."""
    d = diffs.dropna().astype(float)
    n = len(d)
    mean = float(d.mean()) if n else math.nan
    sd = float(d.std(ddof=1)) if n > 1 else math.nan
    lo = hi = p = math.nan
    if n > 1:
        half = stats.t.ppf(0.5 + LEVEL / 2, n - 1) * sd / math.sqrt(n)
        lo, hi = mean - half, mean + half
        # equal differences (sd 0 up to rounding): the test is degenerate
        p = (float(stats.ttest_1samp(d, 0.0).pvalue) if sd > 1e-12 * max(1.0, abs(mean))
             else (1.0 if mean == 0 else 0.0))
    return {"n": n, "mean": mean, "sd": sd, "ci_lo": lo, "ci_hi": hi,
            "n_positive": int((d > 0).sum()), "p": p}


def summary(diffs: pd.DataFrame) -> pd.DataFrame:
    """`describe` per (arm, N) of `differences` (or `network_differences`) rows."""
    rows = []
    for (arm, n), part in diffs.groupby(["arm", "N"], sort=False):
        first = part.iloc[0]
        rows.append({"arm": arm, "mode": first["mode"], "beta": first["beta"], "N": int(n),
                     **describe(part["diff"])})
    out = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    return out.sort_values(["mode", "beta", "N"], na_position="first", kind="stable"
                           ).reset_index(drop=True)


def network_differences(trials: pd.DataFrame, full_pool: bool = True) -> pd.DataFrame:
    """Tables 5/7's paired differences of the segmentation network (AP@0.5).

    Arms (``arm`` column): ``seg − strong-only (<selection>)`` and ``seg − annotation
    (<selection>)``, both within one trial, for random and mask-guided selection (the
    best β per N, as in Table 5); and ``mask-guided − random (seg)``: the segmentation
    network of mask-guided selection minus that of random selection, same seed and N.
    ``full_pool``: the trials of Table 5 (pool fraction 1), else Table 7's.

    Returns:
        The columns of `differences`.
    """
    cols = ["arm", "mode", "beta", "N", "seed", "value", "baseline", "diff"]
    main = main_study(trials)
    frac = _fractions(main)
    scoped = _ok(main[frac >= 1.0] if full_pool else main[frac < 1.0])
    if "seg_ap50" not in scoped.columns:
        return pd.DataFrame(columns=cols)
    scoped = scoped[scoped["seg_ap50"].notna()]
    sel_mode = "predicted" if (scoped["mode"] == "predicted").any() else "oracle"
    sel = scoped[scoped["mode"] == sel_mode]
    betas = _mask_guided_betas(sel, sorted(int(n) for n in scoped["N"].unique()))
    guided = sel[[betas.get(int(n), math.nan) == b for n, b in zip(sel["N"], sel["beta"])]]
    rnd = scoped[scoped["mode"] == "random"]
    rows = []
    for label, part in (("random", rnd), ("mask-guided", guided)):
        for other, name in (("ctl_ap50", "strong-only"), ("ap50", "annotation")):
            if other not in part.columns:
                continue
            for _, t in part[part[other].notna()].iterrows():
                rows.append({"arm": f"seg − {name} ({label})", "mode": label,
                             "beta": None if pd.isna(t.get("beta")) else float(t["beta"]),
                             "N": int(t["N"]), "seed": int(t["seed"]),
                             "value": float(t["seg_ap50"]), "baseline": float(t[other]),
                             "diff": float(t["seg_ap50"]) - float(t[other])})
    base = rnd.groupby(["N", "seed"])["seg_ap50"].first()
    for _, t in guided.iterrows():
        key = (t["N"], t["seed"])
        if key in base.index:
            rows.append({"arm": "mask-guided − random (seg)", "mode": "mask-guided",
                         "beta": float(t["beta"]), "N": int(t["N"]), "seed": int(t["seed"]),
                         "value": float(t["seg_ap50"]), "baseline": float(base.loc[key]),
                         "diff": float(t["seg_ap50"]) - float(base.loc[key])})
    return pd.DataFrame(rows, columns=cols)


def _cell(row: pd.Series | None, scale: float) -> Cell:
    if row is None or not row["n"]:
        return Cell("—")
    mean = row["mean"] * scale
    text = f"{mean:+.1f}"
    if row["n"] > 1:
        text += f" [{row['ci_lo'] * scale:+.1f}, {row['ci_hi'] * scale:+.1f}]"
    text += f" ({int(row['n_positive'])}/{int(row['n'])} > 0)"
    return Cell(text, mean, None if math.isnan(row["sd"]) else row["sd"] * scale,
                int(row["n"]), int(row["n"]))


def table(summ: pd.DataFrame, title: str, what: str, scale: float = 100.0,
          number: str = "paired") -> Table:
    """Rows the arms, columns N; each cell ``Δ [95 % CI] (positives/pairs)`` ×``scale``;
    ``number`` names the table (and its file in a report)."""
    if summ.empty:
        return Table(number, title, absent=f"{title}: no paired results in this sweep.")
    ns = sorted(int(n) for n in summ["N"].unique())
    rows = []
    for arm in dict.fromkeys(summ["arm"]):
        part = summ[summ["arm"] == arm].set_index("N")
        rows.append((arm, [_cell(part.loc[n] if n in part.index else None, scale)
                           for n in ns]))
    note = (f"{title}: {what} ×{scale:g}, mean of the per-seed differences, its 95 % "
            "confidence interval (t distribution) and the seeds with a positive "
            "difference")
    return Table(number, title, note, [str(n) for n in ns], rows)


def tables(trials: pd.DataFrame, metric: str = "ap50") -> list[Table]:
    """The paired table of the annotation network's selections (``paired``), then Table
    5's and 7's paired differences of the segmentation network (``paired5``,
    ``paired7``; those the sweep has data for)."""
    out = [table(summary(differences(trials, metric)),
                 "Paired — selection vs random, annotation network",
                 f"Δ {metric} (arm − random, same seed and N)")]
    for full, number in ((True, 5), (False, 7)):
        diffs = network_differences(trials, full)
        if not diffs.empty:
            out.append(table(summary(diffs), f"Paired — Table {number}, segmentation "
                             "network", "Δ AP@0.5 (within a trial or against random, "
                             "same seed and N)", number=f"paired{number}"))
    return out


def render(sweep: str, form: str = "md", metric: str = "ap50") -> str:
    """``basis tables SWEEP --paired``: `tables` of ``SWEEP/results`` in ``form``."""
    from analysis.io import read
    from analysis.tables import fmt

    trials = read(sweep, "trials")
    if trials.empty:
        raise ValueError("no trials in the results yet")
    return "\n".join(fmt(t, form) for t in tables(trials, metric))
