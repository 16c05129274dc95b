"""``basis report SWEEP``: one Markdown and one HTML page with every table and figure
the sweep's results support, its config, the software versions, the command that ran
it, and what is missing (failed trials, cells without all their seeds, grid cells not
run yet).

Layout under ``SWEEP/report/`` (or ``--out``): ``report.md``, ``report.html``,
``figures/*.png|pdf``, ``tables/table<N>.{md,tex,csv}`` and ``tables/rounds.{md,tex,csv}``
(AP vs annotation days per selection round). The pages link the figures by relative
path, so the folder can be copied as a whole.
"""
from __future__ import annotations

import html
import importlib.metadata
import os
import platform
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd

from analysis import figures, paired, tables
from analysis.io import read, read_optional, sweep_config, sweep_meta
from analysis.schema import Status, SweepLayout

#: Packages whose versions are read from their installed metadata, never imported.
METADATA_ONLY = ("torch", "torchvision", "ray", "mlflow", "submitit", "numpy")


def versions() -> dict[str, str]:
    """Python and the analysis libraries (imported here anyway), plus the cluster-side
    packages read with `importlib.metadata` — which does not import them."""
    import matplotlib
    import pyarrow

    out = {"python": platform.python_version(), "pandas": pd.__version__,
           "pyarrow": pyarrow.__version__, "matplotlib": matplotlib.__version__}
    for name in METADATA_ONLY:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


@dataclass
class Missing:
    """What a partial sweep lacks."""

    failed: pd.DataFrame = field(default_factory=pd.DataFrame)     # trial, error, log_path
    incomplete: list[str] = field(default_factory=list)            # cells with k/n seeds
    not_run: list[str] = field(default_factory=list)               # grid cells with no row

    def empty(self) -> bool:
        return self.failed.empty and not self.incomplete and not self.not_run


def _cell_name(mode: str, beta: object, n: int) -> str:
    b = "" if beta is None or (isinstance(beta, float) and pd.isna(beta)) else \
        f" β={float(beta):.1f}"
    return f"{mode}{b} N={int(n)}"


def expected_grid(study: dict, trials: pd.DataFrame) -> tuple[list[tuple], list[int]]:
    """(mode, β, N) cells and seeds the sweep should hold: from the config's ``study``
    section when it has one, else from the trials present."""
    ns = study.get("N") or sorted(int(n) for n in trials["N"].dropna().unique())
    seeds = study.get("seed") or sorted(int(s) for s in trials["seed"].dropna().unique())
    if study.get("N"):
        modes = list(study.get("modes") or ["predicted"])
        betas = list(study.get("beta") or [])
        cells = [(m, float(b), int(n)) for m in modes for b in betas for n in ns]
        if study.get("random_baseline", True):
            cells += [("random", None, int(n)) for n in ns]
    else:
        cells = sorted({(str(m), None if pd.isna(b) else float(b), int(n))
                        for m, b, n in trials[["mode", "beta", "N"]].itertuples(index=False)},
                       key=lambda c: (c[0], -1 if c[1] is None else c[1], c[2]))
    if isinstance(seeds, int):
        seeds = [seeds]
    return cells, [int(s) for s in seeds]


def missing(trials: pd.DataFrame, study: dict) -> Missing:
    """Failed trials, cells short of seeds, and grid cells without any row."""
    if trials.empty:
        cells, seeds = expected_grid(study, trials) if study.get("N") else ([], [])
        return Missing(not_run=[_cell_name(*c) for c in cells])
    failed = trials[trials["status"] != Status.COMPLETED.value][["trial", "error", "log_path"]]
    cells, seeds = expected_grid(study, trials)
    ok = trials[trials["status"] == Status.COMPLETED.value]
    incomplete, not_run = [], []
    for mode, beta, n in cells:
        part = trials[(trials["mode"] == mode) & (trials["N"] == n)]
        done = ok[(ok["mode"] == mode) & (ok["N"] == n)]
        if beta is None:
            part, done = part[part["beta"].isna()], done[done["beta"].isna()]
        else:
            part = part[(part["beta"] - beta).abs() < 1e-9]
            done = done[(done["beta"] - beta).abs() < 1e-9]
        have = sorted(int(s) for s in done["seed"].unique() if int(s) in seeds)
        if part.empty:
            not_run.append(_cell_name(mode, beta, n))
        elif len(have) < len(seeds):
            lacking = [s for s in seeds if s not in have]
            incomplete.append(f"{_cell_name(mode, beta, n)}: {len(have)}/{len(seeds)} seeds "
                              f"(missing or failed: {', '.join(map(str, lacking))})")
    return Missing(failed.reset_index(drop=True), incomplete, not_run)


@dataclass
class Report:
    md: Path
    html: Path
    figures: list[Path]
    tables: dict[int | str, tables.Table]     # 2–8 and "rounds"


def _qualitative(sweep: Path) -> list[Path]:
    """Fig. 7-style pictures the jobs saved (``stages/*/qualitative*.png``)."""
    return sorted(sweep.glob("stages/*/qualitative*.png"))


def build(sweep: str | Path, out: str | Path | None = None) -> Report:
    """Write the report of ``sweep`` into ``out`` (default ``SWEEP/report``)."""
    sweep = Path(sweep)
    out = Path(out) if out is not None else SweepLayout(sweep).report
    fig_dir, tab_dir = out / "figures", out / "tables"
    for d in (fig_dir, tab_dir):
        d.mkdir(parents=True, exist_ok=True)
    trials = read(sweep, "trials")
    cfg_text, cfg = sweep_config(sweep)
    meta = sweep_meta(sweep)
    study = cfg.get("study") or {}
    default_schedule = ((cfg.get("train") or {}).get("iou_schedule"),
                        (cfg.get("loss") or {}).get("iou_target"))

    md: list[str] = []
    body: list[str] = []   # html
    name = meta.get("name") or sweep.name

    def section(title: str) -> None:
        md.extend([f"## {title}", ""])
        body.append(f"<h2>{html.escape(title)}</h2>")

    def para(text: str) -> None:
        md.extend([text, ""])
        body.append(f"<p>{html.escape(text)}</p>")

    def code(text: str, lang: str = "") -> None:
        md.extend([f"```{lang}", text.rstrip("\n"), "```", ""])
        body.append(f"<pre>{html.escape(text)}</pre>")

    def image(path: Path, caption: str) -> None:
        rel = os.path.relpath(path, out).replace(os.sep, "/")
        md.extend([f"![{caption}]({rel})", "", f"*{caption}*", ""])
        body.append(f"<figure><img src=\"{html.escape(rel)}\" alt=\"{html.escape(caption)}\">"
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>")

    md.extend([f"# Sweep report: {name}", ""])
    body.append(f"<h1>Sweep report: {html.escape(name)}</h1>")
    n_ok = int((trials["status"] == Status.COMPLETED.value).sum()) if not trials.empty else 0
    para(f"Folder {sweep.resolve()}; {len(trials)} trial(s) recorded, {n_ok} completed. "
         f"Generated {datetime.now().isoformat(timespec='seconds')}.")

    # ------------------------------------------------------------ tables
    section("Tables")
    built: dict[int | str, tables.Table] = {}
    rounds = read_optional(sweep, "rounds")

    def put(t: tables.Table, stem: str) -> None:
        """One table into the report and into tables/STEM.{md,tex,csv}; or its reason."""
        if t.absent:
            para(t.absent)
            return
        for form, ext in (("md", "md"), ("latex", "tex"), ("csv", "csv")):
            (tab_dir / f"{stem}.{ext}").write_text(tables.fmt(t, form))
        md.extend([f"### {t.title}", "", tables.to_markdown(t)])
        body.append(f"<h3>{html.escape(t.title)}</h3>")
        body.append(tables.to_html(t))

    if trials.empty:
        para("No trials recorded yet: no tables.")
    else:
        for number in tables.NUMBERS:
            t = built[number] = tables.build(trials, number, default_schedule)
            put(t, f"table{number}")
        t = built["rounds"] = tables.rounds_table(rounds)
        put(t, "rounds")
        section("Paired differences")
        para("Each arm minus the random arm of the same seed and N (arms that share a "
             "seed share the initial network and the pool's scores): the mean, its 95 % "
             "t interval and the seeds with a positive difference. `basis tables SWEEP "
             "--paired` prints the same.")
        for t in paired.tables(trials):
            put(t, str(t.number))
        para("Each table is also under tables/ as Markdown, LaTeX (.tex) and CSV.")

    # ------------------------------------------------------------ figures
    section("Figures")
    made: list[Path] = []
    if trials.empty:
        para("No trials recorded yet: no figures.")
    else:
        made += figures.ap_vs_beta(tables.annotation_trials(trials), fig_dir / "ap_vs_beta")
        image(made[-2], "AP@0.5 vs β per N (mean ± std over seeds); dashed: random "
              "selection. Left oracle IoU, right predicted IoU.")
        summ = paired.summary(paired.differences(trials))
        if summ.empty:
            para("Δ AP vs β skipped: no arm has a random arm of the same seed and N yet.")
        else:
            made += figures.delta_vs_beta(summ, fig_dir / "delta_vs_beta")
            image(made[-2], "Paired Δ AP@0.5 vs β per N: the mean per-seed difference to "
                  "random selection, 95 % t interval as a band. Left oracle, right "
                  "predicted IoU.")
        selections = read_optional(sweep, "selections")
        scores = read_optional(sweep, "image_scores")
        if selections is None or selections.empty or scores is None or scores.empty:
            para("Fig. 5 (selected subsets) skipped: the sweep has no "
                 + ("selections" if selections is None or selections.empty else "image scores")
                 + " yet.")
        else:
            made += figures.subsets(tables.annotation_trials(trials), selections, scores,
                                    fig_dir / "subsets")
            image(made[-2], "Fig. 5: objects per image and mean object size of the "
                  "images each β selects (mean ± std over the selected images).")
        if rounds is None or rounds.empty:
            para("AP vs annotation days skipped: the sweep has no rounds table (trials of "
                 "a basis before study.rounds).")
        else:
            made += figures.ap_vs_days(tables.annotation_trials(rounds), fig_dir / "ap_vs_days")
            image(made[-2], "AP@0.5 vs annotation days per N: one line per strategy, a "
                  "marker per selection round (mean ± std over seeds).")
        files = figures.image_files(sweep)
        grid = None
        if files and selections is not None:
            grid = figures.image_grid(trials, selections, files, fig_dir / "image_grid")
        if grid:
            made += grid
            image(grid[0], "Fig. 6: the first-ranked selected images per β.")
        else:
            para("Fig. 6 (selected images per β) skipped: the sweep saved no image files "
                 "(SWEEP/images/<image_id>.png or SWEEP/stages/*/images/).")
        quali = _qualitative(sweep)
        for q in quali:
            image(q, f"Fig. 7-style predictions: {q.parent.name}")
        if not quali:
            para("Fig. 7 (annotation vs segmentation predictions) skipped: no "
                 "stages/*/qualitative*.png saved.")

    # ------------------------------------------------------------ missing
    section("Missing")
    miss = missing(trials, study)
    if miss.empty():
        para("Nothing: every cell of the grid has all its seeds completed.")
    else:
        if not miss.failed.empty:
            para(f"{len(miss.failed)} failed trial(s):")
            lines = []
            for r in miss.failed.itertuples(index=False):
                err = str(r.error or "").strip().splitlines()
                lines.append(f"- {r.trial}: {err[-1] if err else '(no error recorded)'}"
                             f" — log: {r.log_path or '(none)'}")
            md.extend(lines + [""])
            body.append("<ul>" + "".join(f"<li>{html.escape(x[2:])}</li>" for x in lines)
                        + "</ul>")
        for title, items in (("Cells without all their seeds", miss.incomplete),
                             ("Grid cells with no trial recorded yet", miss.not_run)):
            if items:
                para(f"{title} ({len(items)}):")
                md.extend([f"- {x}" for x in items] + [""])
                body.append("<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in items)
                            + "</ul>")

    # ------------------------------------------------------------ provenance
    section("Provenance")
    command = meta.get("command")
    para("Command that ran the sweep:" if command else "No sweep.json: command unknown.")
    if command:
        code(command, "sh")
    if meta.get("started"):
        para(f"Started {meta['started']}; MLflow store {meta.get('mlflow_uri', '?')}.")
    default_out = out == SweepLayout(sweep).report
    report_cmd = f"basis report {sweep}" + ("" if default_out else f" --out {out}")
    para(f"This report: {report_cmd}")
    para("Sweep config (config.yaml):" if cfg_text else "No config.yaml in the sweep folder.")
    if cfg_text:
        code(cfg_text, "yaml")
    para("Software versions (cluster-side packages read from their metadata, not imported):")
    vers = versions()
    md.extend(["| package | version |", "|---|---|"]
              + [f"| {k} | {v} |" for k, v in vers.items()] + [""])
    body.append("<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td>"
                                    "</tr>" for k, v in vers.items()) + "</table>")

    md_path, html_path = out / "report.md", out / "report.html"
    md_path.write_text("\n".join(md).rstrip("\n") + "\n")
    html_path.write_text(_page(f"Sweep report: {name}", "\n".join(body)))
    return Report(md_path, html_path, made, built)


def _page(title: str, body: str) -> str:
    style = ("body{font-family:sans-serif;max-width:1050px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0}"
             "th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "tr th:first-child{text-align:left}caption{caption-side:top;text-align:left;"
             "font-size:90%;color:#444;padding-bottom:4px}img{max-width:100%}"
             "pre{background:#f4f4f4;padding:8px;overflow-x:auto}.absent{color:#777}"
             "figcaption{font-size:90%;color:#444}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{style}</style></head>\n"
            f"<body>\n{body}\n</body></html>\n")
