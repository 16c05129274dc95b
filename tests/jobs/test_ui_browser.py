"""``basis ui`` in a real browser: the URL it prints, opened in headless Chromium, lists
the sweep's parent run and every child run under it, and each run's page shows the
params and metrics that are in the store.

Chromium comes from ``tests/browser/install_chromium.sh`` (``make test`` runs it);
without it the test is skipped, or fails under ``BASIS_REQUIRE_SLURM=1`` (CI).
``BASIS_UI_SCREENSHOT=docs/mlflow-ui.png`` also saves the expanded runs list there.
"""
from __future__ import annotations

import math
import os
import re
import time
from pathlib import Path

import pytest

from jobs.cli import main
from jobs.sweep import read_meta
from tests.browser.cdp import CHROMIUM, INSTALL, Chromium
from tests.jobs.test_sweep_e2e import CONFIG, basis
from tests.jobs.test_ui import _free_port, stop_ui

#: The runs table's rows: run id, place from the top, the name and how far it is
#: indented (px; nesting), and whether it has an expander (a parent's).
ROWS_JS = r"""
Array.from(document.querySelectorAll('[role=row][row-id]')).flatMap(row => {
  const cell = row.querySelector('[col-id="attributes.`Run Name`"]');
  const link = cell && cell.querySelector('a[href*="/runs/"]');
  if (!link) return [];   // the same row's other column containers
  return [{id: row.getAttribute('row-id'), index: Number(row.getAttribute('row-index')),
           name: link.innerText.trim(), expander: !!cell.querySelector('button'),
           indent: link.getBoundingClientRect().left - cell.getBoundingClientRect().left}];
})
"""
#: Each key-value table on a run's page → [[header...], [key, value], ...].
TABLES_JS = r"""
Array.from(document.querySelectorAll('[role=table]')).map(t =>
  Array.from(t.querySelectorAll('[role=row]')).map(r =>
    Array.from(r.querySelectorAll('[role=cell],[role=columnheader]'))
      .map(c => c.innerText.trim())))
"""


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Skip (or fail, under BASIS_REQUIRE_SLURM=1) unless headless Chromium is installed."""
    if not os.access(CHROMIUM, os.X_OK):
        why = f"{CHROMIUM} is missing (run {INSTALL} as root, or make test)"
        if os.environ.get("BASIS_REQUIRE_SLURM") == "1":
            pytest.fail(f"Chromium is required (BASIS_REQUIRE_SLURM=1) but {why}")
        pytest.skip(why)
    return CHROMIUM


def _screenshot(browser: Chromium, path: Path) -> None:
    """The runs list for the README: the assistant panel closed, whole run names."""
    browser.js("""document.querySelector('[data-component-id="mlflow.assistant.chat_panel.close"]')
                  ?.click()""")
    time.sleep(1)   # the page re-lays out once the panel is gone
    handle = browser.js("""(() => {
      const e = document.querySelector(
        '.ag-header-cell[col-id="attributes.`Run Name`"] .ag-header-cell-resize');
      const r = e && e.getBoundingClientRect();
      return r && [r.left + 2, r.top + r.height / 2];   // its right half is under the next
    })()""")
    if handle:
        browser.drag(tuple(handle), (handle[0] + 150, handle[1]))
    time.sleep(1)   # the grid re-lays out
    browser.screenshot(path)


def _tables(browser: Chromium) -> dict[str, dict[str, str]]:
    """The run page's tables by their first header ("Parameter", "Metric")."""
    return {t[0][0]: dict(row for row in t[1:] if len(row) == 2)
            for t in browser.js(TABLES_JS) if t and len(t[0]) == 2}


def _same_metrics(shown: dict[str, str], stored: dict[str, float]) -> bool:
    if shown.keys() != stored.keys():
        return False
    for key, value in stored.items():
        got = float(shown[key])
        if not (math.isclose(got, value, rel_tol=1e-9) or math.isnan(got) and math.isnan(value)):
            return False
    return True


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_printed_url_lists_every_run_with_its_params_and_metrics(chromium, tmp_path, capsys):
    import yaml
    from mlflow.tracking import MlflowClient

    # the tiny sweep at one N: 2 trials on one shared init and score, 9 runs in all
    raw = yaml.safe_load(CONFIG.read_text())
    raw["study"]["N"] = raw["study"]["N"][:1]
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(raw))
    sweep = tmp_path / "sweep"
    basis("sweep", str(config), "--profile", "local", "--sweep-dir", str(sweep))
    meta = read_meta(sweep)
    exp_id, client = meta["experiment_id"], MlflowClient(meta["mlflow_uri"])
    assert client.get_experiment(exp_id).tags["mlflow.experimentKind"] == \
        "custom_model_development"
    runs = {r.info.run_id: r for r in client.search_runs([exp_id])}
    parent_of = {rid: r.data.tags.get("mlflow.parentRunId") for rid, r in runs.items()}

    def depth(rid: str) -> int:
        return 0 if parent_of[rid] is None else 1 + depth(parent_of[rid])

    assert len(runs) == 9 and [depth(rid) for rid in runs].count(0) == 1
    port = _free_port()
    pid_path = sweep / "mlflow-ui.pid"
    try:
        assert main(["ui", str(sweep), "--port", str(port), "--no-wait"]) == 0
        url = re.search(r"at (http://\S+) runs in the background", capsys.readouterr().out)[1]
        with Chromium(tmp_path / "chromium.log") as browser:
            browser.goto(url)

            def listed() -> str | None:
                text = browser.text()
                return text if f"{len(runs)} matching runs" in text else None

            # the runs list of the model-training view, not the GenAI trace overview
            text = browser.wait(listed, f"the runs list at {url}")
            assert "No data available" not in text
            assert browser.js("location.hash").startswith(f"#/experiments/{exp_id}/runs")
            # children are collapsed under their parent: open every expander once
            opened: set[str] = set()

            def expand() -> list[dict] | None:
                rows = browser.js(ROWS_JS)
                for row in rows:
                    if row["expander"] and row["id"] not in opened:
                        browser.js(f"document.querySelector('[role=row][row-id=\"{row['id']}\"] "
                                   f"[col-id=\"attributes.`Run Name`\"] button').click()")
                        opened.add(row["id"])
                return rows if {r["id"] for r in rows} == runs.keys() else None

            rows = {r["id"]: r for r in browser.wait(expand, f"all {len(runs)} runs in the table")}
            levels = sorted({r["indent"] for r in rows.values()})   # one indent per level
            assert {rid: (r["name"], levels.index(r["indent"])) for rid, r in rows.items()} == {
                rid: (r.info.run_name, depth(rid)) for rid, r in runs.items()}
            assert all(rows[rid]["index"] > rows[parent]["index"]   # below its parent
                       for rid, parent in parent_of.items() if parent)
            if os.environ.get("BASIS_UI_SCREENSHOT"):
                _screenshot(browser, Path(os.environ["BASIS_UI_SCREENSHOT"]))
            # each run's own page: every param and metric of the store, as stored
            for rid, run in runs.items():
                page = f"#/experiments/{exp_id}/runs/{rid}?workflowType=machine_learning"
                browser.js(f"location.hash = '{page}'")

                def loaded(rid: str = rid, run=run) -> tuple[dict] | None:
                    if rid not in browser.text():   # still the page before
                        return None
                    tables = _tables(browser)
                    counts = (len(tables.get("Parameter", ())), len(tables.get("Metric", ())))
                    return (tables,) if counts == (len(run.data.params),
                                                   len(run.data.metrics)) else None

                (tables,) = browser.wait(loaded, f"the page of {run.info.run_name}, {page}")
                assert tables["Parameter"] == run.data.params, run.info.run_name
                assert _same_metrics(tables.get("Metric", {}), run.data.metrics), (
                    run.info.run_name, tables.get("Metric"), run.data.metrics)
    finally:
        stop_ui(pid_path, port)
