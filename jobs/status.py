"""``basis status SWEEP``: where every trial of a sweep stands, from its files alone."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from analysis.schema import Status, SweepLayout
from jobs import dag
from jobs.config import SweepConfig
from jobs.trial import init_spec


def trial_states(sweep_dir: Path) -> list[dict[str, Any]]:
    """One record per grid trial: key, state (done | failed | running | pending),
    Slurm job ids and where to look."""
    from analysis.io import ResultsError, read

    layout = SweepLayout(sweep_dir)
    cfg = SweepConfig.from_dict(yaml.safe_load(layout.config.read_text()))
    try:
        rows = {r["trial"]: r for r in read(sweep_dir, "trials").to_dict("records")}
    except ResultsError:
        rows = {}
    out = []
    for t in cfg.trials():
        row = rows.get(t.key)
        if row is not None:
            state = {Status.COMPLETED.value: "done",
                     Status.CANCELLED.value: "cancelled"}.get(row["status"], "failed")
            out.append({"trial": t.key, "state": state,
                        "jobs": _text(row.get("slurm_job_ids")),
                        "where": _text(row.get("error")) or _text(row.get("log_path"))})
            continue
        init = init_spec(cfg, t).folder(sweep_dir)
        running = _started(layout.trial_events(t.key))
        out.append({"trial": t.key, "state": "running" if running else "pending",
                    "jobs": ",".join(dag.job_ids(init)) if running else "",
                    "where": str(layout.trial_events(t.key)) if running else ""})
    return out


def _started(log: Path) -> bool:
    """A trial has started when it opened its MLflow event log (``tracking/KEY.jsonl``)
    and has not ended it; a driver killed mid-trial leaves it looking started."""
    import json

    lines = log.read_text().splitlines() if log.exists() else []
    return bool(lines) and json.loads(lines[-1]).get("op") != "end"


def render(sweep_dir: Path) -> str:
    states = trial_states(sweep_dir)
    counts: dict[str, int] = {}
    for s in states:
        counts[s["state"]] = counts.get(s["state"], 0) + 1
    width = max(len(s["trial"]) for s in states)
    lines = [f"{s['trial']:<{width}}  {s['state']:<8} {s['jobs']:<12} {s['where'][:100]}"
             for s in states]
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    return f"{sweep_dir}: {len(states)} trials: {summary}\n" + "\n".join(lines)


def _text(value: Any) -> str:
    """A Parquet cell as text; null (None or NaN) is empty."""
    return "" if value is None or value != value else str(value)
