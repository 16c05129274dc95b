"""What a trial tells its observers: the stages it starts and finishes, the images it
selects, its per-epoch metrics and its outcome. MLflow (`jobs.tracking.MlflowObserver`),
Parquet (`jobs.records.ParquetObserver`) and Tune (`jobs.trial.TuneObserver`) are
observers; the trial itself (`jobs.trial`) knows none of them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analysis.schema import Status
from jobs.config import TrialConfig

if TYPE_CHECKING:   # the dag imports submitit; observers need only its types
    from jobs.dag import StageFailed, StageResult
    from jobs.specs import StageFolder, StageSpec


@dataclass
class TrialOutcome:
    """How a trial ended: its status, its Parquet row (the trial's flat config, its
    results, where to look), the final metrics, the files worth attaching and one row
    per selection round it finished (the ``rounds`` table, `analysis.schema.ROUNDS`)."""

    trial: TrialConfig
    status: Status
    row: dict[str, Any]
    metrics: dict[str, float | None] = field(default_factory=dict)
    artifacts: list[Path] = field(default_factory=list)
    rounds: list[dict[str, Any]] = field(default_factory=list)   # its ``rounds`` rows

    def final(self) -> dict[str, Any]:
        """The row as reported to Tune (without the long log path)."""
        return {k: v for k, v in self.row.items() if k != "log_path"}


class TrialObserver:
    """Receives a trial's events, in order; override what you need. Observers are
    called in the order the trial was given them."""

    def trial_started(self, trial: TrialConfig, params: dict[str, Any],
                      tags: dict[str, Any]) -> None:
        """Before its first stage. ``params`` are the trial's flat config and the sweep's
        method settings; ``tags`` its grid coordinates."""

    def stage_started(self, spec: "StageSpec", folder: "StageFolder") -> None:
        """Before the trial makes sure the stage exists (it may be found done)."""

    def stage_finished(self, result: "StageResult") -> None:
        """The stage is done (computed now, or reused)."""

    def stage_failed(self, spec: "StageSpec", error: "StageFailed") -> None:
        """The stage's job failed, after every retry."""

    def epoch(self, record: dict[str, Any]) -> None:
        """A per-epoch record of a running stage: ``{"stage", "epoch", metric: value}``."""

    def selected(self, trial: TrialConfig, selected: list[int], round_no: int = 1) -> None:
        """The images selection round ``round_no`` (1 … ``study.rounds``) chose, in rank
        order; called once per round."""

    def trial_finished(self, outcome: TrialOutcome) -> None:
        """The trial ended (completed or failed)."""
