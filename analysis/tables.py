"""The paper's tables from a sweep's Parquet results, in Markdown, LaTeX or CSV.

* Table 2: MAE ×100 of the predicted image IoU score, rows the IoU-branch schedule
  (``joint``, ``freeze``, ``freeze + sqrt`` …), columns N; lowest per column in bold.
* Table 3 (oracle) and Table 4 (predicted): AP@0.5 ×100, rows "Random subset" and
  each β, then one row per acquisition baseline the sweep ran (``study.strategies``,
  each its own ``mode`` value; ``band`` one row per β), columns N; the best mean of
  each column in bold.
* Tables 5 and 7: AP@0.5 ×100 of the annotation and the segmentation network (and,
  when the sweep ran it, the strong-only RSIS control), rows random vs mask-guided
  selection, column groups network × N. Table 5 is the sweep's
  trials with the whole additional pool pseudo-labelled (``pool_fraction`` 1 or
  unset), Table 7 those with a smaller fraction (the paper's 50 %).
* Tables 6 and 8: the annotation budgets of the same configurations, in days.
* ``rounds``: AP@0.5 ×100 vs annotation days per selection round and strategy
  (``study.rounds``; the ``rounds`` table): rows one per arm (random, each mode's β,
  each baseline) and round, column groups (images labelled, annotation days, AP) × N;
  the best AP per N and round in bold.

Every cell is the mean over seeds; AP and MAE cells add ``± std``, the *sample*
standard deviation (``ddof=1``, as the paper's "5 runs" suggests); a cell with a single
seed shows no std. The seeds behind the table are listed in its note, and a cell where
some seeds are missing or failed is marked with its count (e.g. ``(2/3)``), so a mean
is never silently taken over fewer runs. A table whose data the sweep does not hold
renders as one line saying so.

The mask-guided row of Tables 5–8 uses, per N, the β whose mean annotation AP is best
(predicted mode; oracle if the sweep has no predicted trials), among the β that have
segmentation results when any do — as the paper takes the best β of Table 4.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.io import read
from analysis.schema import Status

TITLES = {"predicted": "Table 4 — predicted IoU", "oracle": "Table 3 — oracle IoU"}
TABLE_MODES = {3: "oracle", 4: "predicted"}
NUMBERS = (2, 3, 4, 5, 6, 7, 8)
FORMATS = ("md", "latex", "csv")
SCHEDULE_ORDER = ("joint", "freeze")
#: The acquisition baselines (trial ``mode`` values of ``study.strategies``) → their row
#: label in Tables 3/4, in row order; a mode not listed here follows under its own name.
BASELINES = {
    "lowest": "Lowest score", "highest": "Highest score", "band": "Band",
    "stratified": "Stratified", "entropy": "Class entropy",
    "least_confidence": "Least confidence", "mask_entropy": "Mask entropy",
    "coreset": "Core-set (k-center)",
}


@dataclass
class Cell:
    """One cell: ``text`` as displayed, ``mean``/``std`` as numbers (already scaled)."""

    text: str
    mean: float = -math.inf
    std: float | None = None
    n: int = 0
    expected: int = 0
    best: bool = False


@dataclass
class Table:
    """A rendered-format-independent table.

    ``groups`` spans the columns with a second header line above them (Tables 5–8):
    ``[("Annotation network", 2), ("Segmentation network", 2)]``; empty for one group.
    ``absent`` holds the one-line reason when the sweep has no data for the table.
    """

    number: int | str          # 2–8, or "rounds"
    title: str
    note: str = ""
    columns: list[str] = field(default_factory=list)
    rows: list[tuple[str, list[Cell]]] = field(default_factory=list)
    groups: list[tuple[str, int]] = field(default_factory=list)
    corner: str = ""
    absent: str | None = None


# ---------------------------------------------------------------- cells


def arm_label(mode: str, beta: float | None) -> str:
    """``predicted, β = 0.5`` (a mode without β: the mode's name)."""
    if beta is None or (isinstance(beta, float) and math.isnan(beta)):
        return str(mode)
    return f"{mode}, β = {float(beta):.1f}"


def _cell(values: pd.Series, expected: int, scale: float, digits: int = 1,
          show_std: bool = True) -> Cell:
    vals = values.dropna().astype(float) * scale
    if vals.empty:
        return Cell("—", expected=expected)
    mean = float(vals.mean())
    std = float(vals.std(ddof=1)) if len(vals) > 1 else None
    text = f"{mean:.{digits}f}"
    if show_std and std is not None:
        text += f" ± {std:.{digits}f}"
    if len(vals) < expected:
        text += f" ({len(vals)}/{expected})"
    return Cell(text, mean, std, len(vals), expected)


def _mark_best(rows: list[tuple[str, list[Cell]]], lowest: bool = False) -> None:
    if not rows:
        return
    for j in range(len(rows[0][1])):
        col = [r[1][j] for r in rows if r[1][j].mean > -math.inf]
        if not col:
            continue
        best = (min if lowest else max)(c.mean for c in col)
        for c in col:
            c.best = c.mean == best


def _seeds(trials: pd.DataFrame) -> list[int]:
    return sorted(int(s) for s in trials["seed"].dropna().unique())


def _ns(trials: pd.DataFrame) -> list[int]:
    return sorted(int(n) for n in trials["N"].dropna().unique())


def _ok(trials: pd.DataFrame) -> pd.DataFrame:
    return trials[trials["status"] == Status.COMPLETED.value]


def _col(trials: pd.DataFrame, name: str) -> pd.Series:
    if name in trials.columns:
        return trials[name]
    return pd.Series([None] * len(trials), index=trials.index, dtype=object)


def _primary(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials of the main study: with ``pool_fraction`` 1 or unset when any are, so a
    cell's annotation-network runs are not counted once per pool fraction (Table 7's
    trials repeat Table 5's annotation stage)."""
    frac = _fractions(trials)
    return trials[frac >= 1.0] if (frac >= 1.0).any() else trials


def main_study(trials: pd.DataFrame) -> pd.DataFrame:
    """The main study's trials: without the Table-2 schedule trials (``variant`` set),
    which train the random arm under other IoU-branch settings."""
    variant = _col(trials, "variant")
    return trials[variant.isna() | (variant == "")]


def annotation_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """One trial per annotation network of the main study (Tables 3/4, the AP-vs-β
    figure): no Table-2 schedule trials, one pool fraction."""
    return main_study(_primary(trials))


def _seed_note(trials: pd.DataFrame) -> str:
    return "seeds " + ", ".join(str(s) for s in _seeds(trials))


def _failed_note(trials: pd.DataFrame) -> str:
    failed = int((trials["status"] != Status.COMPLETED.value).sum())
    return f"; {failed} failed trial(s) left out, see the trials table" if failed else ""


# ---------------------------------------------------------------- Tables 3 / 4


def selection(trials: pd.DataFrame, mode: str = "predicted", metric: str = "ap50",
              scale: float = 100.0) -> Table:
    """Table 3 (``mode="oracle"``) or Table 4 (``"predicted"``) of ``metric`` ×``scale``."""
    number = 3 if mode == "oracle" else 4
    title = TITLES.get(mode, mode)
    if trials.empty:
        raise ValueError("no trials in the results yet")
    trials = annotation_trials(trials)
    baselines = _baselines(trials)
    if not (trials["mode"] == mode).any() and not baselines:
        return Table(number, title, absent=f"{title}: no {mode} trials in this sweep.")
    ok = _ok(trials)
    n_seeds = len(_seeds(trials))
    ns = _ns(trials)
    groups: list[tuple[str, pd.DataFrame]] = [("Random subset", ok[ok["mode"] == "random"])]
    sel = ok[ok["mode"] == mode]
    betas = sorted(trials.loc[trials["mode"] == mode, "beta"].dropna().unique())
    groups += [(f"β = {b:.1f}", sel[sel["beta"] == b]) for b in betas]
    for base in baselines:   # like the random row: one per strategy (band: per β)
        label = BASELINES.get(base, base)
        part, done = trials[trials["mode"] == base], ok[ok["mode"] == base]
        base_betas = sorted(part["beta"].dropna().unique())
        groups += ([(f"{label}, β = {b:.1f}", done[done["beta"] == b]) for b in base_betas]
                   or [(label, done)])
    rows = [(label, [_cell(df.loc[df["N"] == n, metric], n_seeds, scale) for n in ns])
            for label, df in groups]
    _mark_best(rows)
    note = (f"{title}: {metric} ×{scale:g}, mean ± std (ddof=1) over {_seed_note(trials)}; "
            f"best per column in bold{_failed_note(trials)}")
    return Table(number, title, note, [str(n) for n in ns], rows)


def _baselines(trials: pd.DataFrame) -> list[str]:
    """The acquisition-baseline modes of ``trials``, in `BASELINES` order (others after,
    by name): every mode but random, predicted and oracle."""
    modes = set(trials["mode"].dropna()) - {"random", "predicted", "oracle"}
    order = list(BASELINES)
    return sorted(modes, key=lambda m: (order.index(m) if m in order else len(order), m))


def selection_table(trials: pd.DataFrame, mode: str = "predicted", metric: str = "ap50",
                    scale: float = 100.0) -> str:
    """A Table-3/4-shaped Markdown table of ``metric`` (×``scale``) for ``mode`` vs random.

    Args:
        trials: the ``trials`` table (one row per trial).
        mode: ``predicted`` (Table 4) or ``oracle`` (Table 3).
    """
    return to_markdown(selection(trials, mode, metric, scale))


# ---------------------------------------------------------------- Table 2


def schedule_labels(trials: pd.DataFrame, default: tuple[str | None, str | None] = (None, None)
                    ) -> pd.Series:
    """Row label of Table 2 per trial: ``iou_schedule`` plus `` + iou_target`` unless the
    target is the identity (``freeze + sqrt``). ``default`` = (schedule, target) from the
    sweep config for trials that did not record them."""
    sched = _col(trials, "iou_schedule").where(_col(trials, "iou_schedule").notna(), default[0])
    target = _col(trials, "iou_target").where(_col(trials, "iou_target").notna(), default[1])

    def label(s: object, t: object) -> str:
        base = str(s) if isinstance(s, str) and s else "default schedule"
        if isinstance(t, str) and t and t != "identity":
            base += f" + {t}"
        return base

    return pd.Series([label(s, t) for s, t in zip(sched, target)], index=trials.index,
                     dtype=object)


def mae(trials: pd.DataFrame, default_schedule: tuple[str | None, str | None] = (None, None)
        ) -> Table:
    """Table 2: MAE ×100 of the image IoU score by IoU-branch schedule × N.

    Uses the random-selection trials (the paper's N random images) when the sweep has
    any, else every trial.
    """
    title = "Table 2 — MAE of the IoU prediction"
    if trials.empty or trials["mae"].dropna().empty:
        return Table(2, title, absent=f"{title}: no MAE values in this sweep.")
    trials = _primary(trials)
    scope = "random-selection trials"
    pool = trials[trials["mode"] == "random"]
    if pool["mae"].dropna().empty:
        pool, scope = trials, "all trials"
    labels = schedule_labels(pool, default_schedule)
    ok_mask = pool["status"] == Status.COMPLETED.value
    order = sorted(labels.unique(), key=lambda s: (
        next((i for i, p in enumerate(SCHEDULE_ORDER) if s.startswith(p)), len(SCHEDULE_ORDER)),
        s))
    n_seeds = len(_seeds(pool))
    ns = _ns(pool)
    rows = []
    for lab in order:
        df = pool[ok_mask & (labels == lab)]
        rows.append((lab, [_cell(df.loc[df["N"] == n, "mae"], n_seeds, 100.0) for n in ns]))
    _mark_best(rows, lowest=True)
    note = (f"{title}: mae ×100 of {scope}, mean ± std (ddof=1) over {_seed_note(pool)}; "
            f"lowest per column in bold{_failed_note(pool)}")
    return Table(2, title, note, [str(n) for n in ns], rows, corner="IoU branch")


# ---------------------------------------------------------------- Tables 5–8


def _fractions(trials: pd.DataFrame) -> pd.Series:
    return pd.to_numeric(_col(trials, "pool_fraction"), errors="coerce").fillna(1.0)


def _mask_guided_betas(sel: pd.DataFrame, ns: list[int]) -> dict[int, float]:
    """Per N, the β with the best mean annotation AP (among β with segmentation results
    when any have them)."""
    out: dict[int, float] = {}
    for n in ns:
        df = sel[(sel["N"] == n) & sel["beta"].notna()]
        with_seg = df[_col(df, "seg_ap50").notna()]
        if not with_seg.empty:
            df = with_seg
        means = df.groupby("beta")["ap50"].mean().dropna()
        if not means.empty:
            out[n] = float(means.idxmax())
    return out


def networks(trials: pd.DataFrame, number: int) -> Table:
    """Tables 5/7 (AP@0.5 ×100) and 6/8 (budget, days): annotation vs segmentation
    network, random vs mask-guided selection."""
    budget = number in (6, 8)
    full = number in (5, 6)
    what = "annotation budget in days" if budget else "AP@0.5 ×100"
    pool_text = "all of the additional pool" if full else "part of the additional pool"
    title = f"Table {number} — annotation vs segmentation network, {what} ({pool_text})"
    if trials.empty:
        return Table(number, title, absent=f"{title}: no trials in this sweep.")
    trials = main_study(trials)
    frac = _fractions(trials)
    scoped = trials[frac >= 1.0] if full else trials[frac < 1.0]
    if scoped.empty:
        return Table(number, title, absent=f"Table {number}: no trials with "
                     f"{'pool_fraction = 1' if full else 'pool_fraction < 1'} in this sweep.")
    fr = sorted(set(_fractions(scoped)))
    if not full:
        title = title.replace(pool_text, "pool_fraction " + ", ".join(f"{f:g}" for f in fr))
    seg_col = "seg_budget_days" if budget else "seg_ap50"
    ann_col = "budget_days" if budget else "ap50"
    has_seg = _col(scoped, seg_col).notna().any()
    if not has_seg and not budget:
        return Table(number, title, absent=f"Table {number}: no segmentation-network "
                     f"results ({seg_col}) in this sweep.")
    ok = _ok(scoped)
    sel_mode = "predicted" if (scoped["mode"] == "predicted").any() else "oracle"
    sel = ok[ok["mode"] == sel_mode]
    rnd = ok[ok["mode"] == "random"]
    ns = _ns(scoped)
    betas = _mask_guided_betas(sel, ns)
    n_seeds = len(_seeds(scoped))
    scale, digits = (1.0, 2) if budget else (100.0, 1)

    # the strong-only RSIS control (AP tables only: it adds no annotation cost)
    has_ctl = not budget and _col(scoped, "ctl_ap50").notna().any()
    cols = (ann_col, seg_col, "ctl_ap50") if has_ctl else (ann_col, seg_col)

    def cells(df: pd.DataFrame, by_beta: bool) -> list[Cell]:
        out = []
        for col in cols:
            for n in ns:
                part = df[df["N"] == n]
                if by_beta:
                    part = part[part["beta"] == betas.get(n, math.nan)]
                values = _col(part, col)
                out.append(_cell(values, n_seeds, scale, digits, show_std=not budget))
        return out

    rows = [("Random (W-RSIS)", cells(rnd, False)),
            ("Mask-guided (IoU-W-RSIS)", cells(sel, True))]
    if not budget:
        _mark_best(rows)
    picked = ", ".join(f"N={n}: β={b:.1f}" for n, b in sorted(betas.items())) or "none"
    stat = "mean" if budget else "mean ± std (ddof=1)"
    note = (f"{title}: {stat} over {_seed_note(scoped)}; mask-guided = {sel_mode} "
            f"selection at the best β per N ({picked})"
            + ("" if budget else "; best per column in bold") + _failed_note(scoped))
    if budget and not has_seg:
        note += "; no segmentation-network budgets recorded"
    groups = [("Annotation network", len(ns)), ("Segmentation network", len(ns))]
    if has_ctl:
        groups.append(("Strong-only RSIS", len(ns)))
        note += ("; strong-only RSIS = the segmentation network's architecture trained on "
                 "the same N strong images without pseudo-labels (the control)")
    return Table(number, title, note, [str(n) for n in ns] * len(cols), rows, groups,
                 corner="Selection")


# ---------------------------------------------------------------- rounds

ROUNDS_TITLE = "Rounds — AP@0.5 vs annotation days per round and strategy"
MODE_LABELS = {"predicted": "Predicted IoU", "oracle": "Oracle IoU"}


def round_arms(rounds: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The arms of ``rounds`` (or of any table with ``mode`` and ``beta``), labelled and in
    the order of Tables 3/4: random, predicted and oracle per β, then the baselines
    (``band`` per β)."""
    out: list[tuple[str, pd.DataFrame]] = []
    if (rounds["mode"] == "random").any():
        out.append(("Random subset", rounds[rounds["mode"] == "random"]))
    for mode in (*MODE_LABELS, *_baselines(rounds)):
        part = rounds[rounds["mode"] == mode]
        if part.empty:
            continue
        label = MODE_LABELS.get(mode) or BASELINES.get(mode, mode)
        betas = sorted(part["beta"].dropna().unique())
        out += ([(f"{label}, β = {b:.1f}", part[part["beta"] == b]) for b in betas]
                or [(label, part)])
    return out


def rounds_table(rounds: pd.DataFrame | None) -> Table:
    """AP@0.5 ×100 and annotation days per selection round and strategy, from the
    ``rounds`` table (one row per trial and round)."""
    title = ROUNDS_TITLE
    if rounds is None or rounds.empty:
        return Table("rounds", title, absent="Rounds: no rounds recorded in this sweep "
                     "(trials of a basis before study.rounds, or none finished a round).")
    rounds = annotation_trials(rounds)
    ok = rounds[_col(rounds, "status").fillna(Status.COMPLETED.value)
                == Status.COMPLETED.value]
    ns, n_seeds = _ns(rounds), len(_seeds(rounds))
    numbers = sorted(int(r) for r in rounds["round"].dropna().unique())
    rows: list[tuple[str, list[Cell]]] = []
    round_of: list[int] = []
    for label, arm in round_arms(ok):
        for r in numbers:
            part = arm[arm["round"] == r]
            if part.empty:
                continue
            at = [part[part["N"] == n] for n in ns]
            rows.append((f"{label}, round {r}",
                         [_cell(a["n_labelled"], 0, 1.0, 0, show_std=False) for a in at]
                         + [_cell(a["budget_days"], 0, 1.0, 2, show_std=False) for a in at]
                         + [_cell(a["ap50"], n_seeds, 100.0) for a in at]))
            round_of.append(r)
    for r in numbers:            # the best AP per N among the arms at the same round:
        # the images and days cells are stand-ins without a mean, so only AP is marked
        _mark_best([(lab, [c if j >= 2 * len(ns) else Cell(c.text) for j, c in enumerate(cells)])
                    for (lab, cells), k in zip(rows, round_of) if k == r])
    failed = int(rounds.loc[_col(rounds, "status").fillna(Status.COMPLETED.value)
                            != Status.COMPLETED.value, "trial"].nunique())
    note = (f"{title}: per round, the images labelled so far (n_init + selected), their "
            "annotation days (Table-1 costs: masks for those, IL+C for the rest of the pool "
            f"where the selection scores it) and AP@0.5 ×100, mean ± std (ddof=1) over "
            f"{_seed_note(rounds)}; best AP per N and round in bold"
            + (f"; {failed} failed trial(s) left out, see the trials table" if failed else ""))
    groups = [("Images labelled", len(ns)), ("Annotation days", len(ns)),
              ("AP@0.5 ×100", len(ns))]
    return Table("rounds", title, note, [str(n) for n in ns] * 3, rows, groups,
                 corner="Selection, round")


# ---------------------------------------------------------------- dispatch


def build(trials: pd.DataFrame, number: int,
          default_schedule: tuple[str | None, str | None] = (None, None)) -> Table:
    """Table ``number`` (2–8) from the ``trials`` table."""
    if number == 2:
        return mae(trials, default_schedule)
    if number in TABLE_MODES:
        if trials.empty:
            return Table(number, TITLES[TABLE_MODES[number]],
                         absent=f"{TITLES[TABLE_MODES[number]]}: no trials in this sweep.")
        return selection(trials, TABLE_MODES[number])
    if number in (5, 6, 7, 8):
        return networks(trials, number)
    raise ValueError(f"no Table {number}: choose one of {NUMBERS}")


def fmt(table: Table, form: str = "md") -> str:
    """``table`` as ``md`` (Markdown), ``latex`` or ``csv``."""
    if form == "md":
        return to_markdown(table)
    if form == "latex":
        return to_latex(table)
    if form == "csv":
        return to_csv(table)
    raise ValueError(f"format {form!r} not in {FORMATS}")


# ---------------------------------------------------------------- renderers


def to_markdown(t: Table) -> str:
    if t.absent:
        return t.absent + "\n"
    texts = [[f"**{c.text}**" if c.best else c.text for c in cells] for _, cells in t.rows]
    if t.groups:
        top = [t.corner]
        for label, span in t.groups:
            top += [label] + [""] * (span - 1)
        lines = ["| " + " | ".join(top) + " |", "|---|" + "---|" * len(t.columns),
                 "| | " + " | ".join(t.columns) + " |"]
    else:
        head = f"| {t.corner} | " if t.corner else "| | "
        lines = [head + " | ".join(t.columns) + " |", "|---|" + "---|" * len(t.columns)]
    for (label, _), row in zip(t.rows, texts):
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    return t.note + "\n\n" + "\n".join(lines) + "\n"


def _tex(text: str) -> str:
    out = (text.replace("\\", "\\textbackslash{}").replace("&", "\\&").replace("%", "\\%")
           .replace("_", "\\_").replace("#", "\\#"))
    return (out.replace("β", "$\\beta$").replace("±", "$\\pm$").replace("—", "--")
            .replace("×", "$\\times$").replace("≥", "$\\geq$"))


def to_latex(t: Table) -> str:
    """A booktabs ``tabular`` in a ``table`` float, the note as its caption."""
    if t.absent:
        return "% " + t.absent + "\n"
    spec = "l" + "c" * len(t.columns)
    lines = ["\\begin{table}[t]", "\\centering", f"\\begin{{tabular}}{{{spec}}}", "\\toprule"]
    if t.groups:
        top, rules, col = [_tex(t.corner)], [], 2
        for label, span in t.groups:
            top.append(f"\\multicolumn{{{span}}}{{c}}{{{_tex(label)}}}")
            rules.append(f"\\cmidrule(lr){{{col}-{col + span - 1}}}")
            col += span
        lines += [" & ".join(top) + " \\\\", "".join(rules),
                  " & " + " & ".join(t.columns) + " \\\\"]
    else:
        lines.append(_tex(t.corner) + " & " + " & ".join(t.columns) + " \\\\")
    lines.append("\\midrule")
    for label, cells in t.rows:
        texts = [f"\\textbf{{{_tex(c.text)}}}" if c.best else _tex(c.text) for c in cells]
        lines.append(_tex(label) + " & " + " & ".join(texts) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", f"\\caption{{{_tex(t.note)}}}",
              f"\\label{{tab:table{t.number}}}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def to_csv(t: Table) -> str:
    """Long format, one line per cell: table, row, group, N, mean, std (ddof=1),
    n_seeds, n_expected, best, text. Means and std are in the table's units. An absent
    table is a ``# reason`` comment line and the header only."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["table", "row", "group", "N", "mean", "std", "n_seeds", "n_expected",
                "best", "text"])
    if t.absent:
        return f"# {t.absent}\n" + buf.getvalue()
    group_of = []
    for label, span in t.groups or [("", len(t.columns))]:
        group_of += [label] * span
    for label, cells in t.rows:
        for j, c in enumerate(cells):
            mean = "" if c.mean == -math.inf else repr(round(c.mean, 10))
            std = "" if c.std is None else repr(round(c.std, 10))
            w.writerow([t.number, label, group_of[j], t.columns[j], mean, std, c.n,
                        c.expected, int(c.best), c.text])
    return buf.getvalue()


def to_html(t: Table) -> str:
    """A plain HTML ``<table>`` with the note as caption (for the report)."""
    from html import escape

    if t.absent:
        return f"<p class=\"absent\">{escape(t.absent)}</p>\n"
    out = [f"<table>\n<caption>{escape(t.note)}</caption>"]
    if t.groups:
        out.append("<tr><th>" + escape(t.corner) + "</th>" + "".join(
            f"<th colspan=\"{span}\">{escape(label)}</th>" for label, span in t.groups)
            + "</tr>")
        out.append("<tr><th></th>" + "".join(f"<th>{escape(c)}</th>" for c in t.columns)
                   + "</tr>")
    else:
        out.append(f"<tr><th>{escape(t.corner)}</th>" + "".join(
            f"<th>{escape(c)}</th>" for c in t.columns) + "</tr>")
    for label, cells in t.rows:
        tds = "".join(f"<td><b>{escape(c.text)}</b></td>" if c.best
                      else f"<td>{escape(c.text)}</td>" for c in cells)
        out.append(f"<tr><th>{escape(label)}</th>{tds}</tr>")
    out.append("</table>")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- entry points


def render(sweep: str | Path, mode: str = "predicted", table: int | str | None = None,
           form: str = "md") -> str:
    """Read ``SWEEP/results`` and render one table: ``table`` (2–8, or ``rounds``) if
    given, else the selection table of ``mode`` (Table 4 for predicted, Table 3 for
    oracle)."""
    if isinstance(table, str) and table.isdigit():
        table = int(table)
    if table == "rounds":
        from analysis.io import read_optional

        read(sweep, "trials")          # a folder with no results is an error, as for 2–8
        return fmt(rounds_table(read_optional(sweep, "rounds")), form)
    if isinstance(table, str):
        raise ValueError(f"no table {table!r}: choose one of {NUMBERS} or rounds")
    trials = read(sweep, "trials")
    if table is None:
        if trials.empty:
            raise ValueError("no trials in the results yet")
        return fmt(selection(trials, mode), form)
    default = (None, None)
    if table == 2:
        from analysis.io import sweep_config

        cfg = sweep_config(sweep)[1]
        default = ((cfg.get("train") or {}).get("iou_schedule"),
                   (cfg.get("loss") or {}).get("iou_target"))
    return fmt(build(trials, table, default), form)
