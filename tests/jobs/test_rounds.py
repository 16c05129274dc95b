"""Selection rounds (``study.rounds``) of a trial, on fake stage jobs: the round plan, the
stages each round asks for, what it selects from, and the records it writes."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from analysis.io import read
from analysis.schema import Status, to_table
from hpc.profiles import ClusterProfile
from jobs import records
from jobs import trial as trial_mod
from jobs.config import ConfigError, SweepConfig, TrialConfig
from jobs.events import TrialOutcome
from jobs.specs import AnnotateSpec, InitSpec, RoundScoreSpec, ScoreSpec
from jobs.trial import SweepContext, TrialRunner, _budget, round_plan, select_images
from tests.jobs.test_dag import FakeExecutor

POOL, INIT = 24, [0, 1, 2, 3]


def config(**study) -> SweepConfig:
    raw = {"name": "rounds", "data": {"n_pool": POOL, "n_test": 4},
           "study": {"n_init": 4, "N": [12], "beta": [0.5], "seed": [0],
                     "modes": ["predicted"], "random_baseline": False, **study}}
    return SweepConfig.from_dict(raw)


def init_scores(i: int) -> float:
    """The initial network: closest to β = 0.5 are 12, 11, 13, 10, then 14, 9 …"""
    return (i + 0.3) / POOL


def round_scores(i: int, labelled: set[int]) -> float:
    """A round's annotation network: the labelled images score β exactly (they must be
    skipped), then the highest ids are closest (23, 22, …)."""
    return 0.5 if i in labelled else 0.5 - 0.001 * (POOL - 1 - i)


def _write_scores(folder, scores, labelled: set[int], seed: int) -> None:
    rows = [{"image_id": i, "seed": seed, "score_pred": scores(i), "iou_true": 1 - scores(i),
             "n_objects": 1, "mean_object_area": 0.1, "in_init": i in labelled,
             "entropy": scores(i), "least_confidence": 0.0, "mask_entropy": 0.0}
            for i in range(POOL)]
    pq.write_table(to_table("image_scores", rows), folder.image_scores)
    with open(folder.features, "wb") as fh:   # the core-set's: one point per image on a line
        np.savez(fh, image_id=np.arange(POOL),
                 features=np.array([[scores(i), 0.0] for i in range(POOL)], np.float32))


class Jobs:
    """A job factory whose jobs write what each stage kind writes, instantly; it notes
    every spec it is asked to compute, in order."""

    def __init__(self) -> None:
        self.specs: list = []

    def __call__(self, spec, folder):
        self.specs.append(spec)

        def run():
            result: dict = {}
            if isinstance(spec, InitSpec):
                result = {"init_ids": INIT, "ap50": 0.01, "mae": 0.3}
            elif isinstance(spec, ScoreSpec):
                _write_scores(folder, init_scores, set(INIT), spec.init.recipe.seed)
            elif isinstance(spec, RoundScoreSpec):
                labelled = set(spec.annotate.train_ids)
                _write_scores(folder, lambda i: round_scores(i, labelled), labelled,
                              spec.annotate.recipe.seed)
            elif isinstance(spec, AnnotateSpec):
                n = len(spec.train_ids)
                folder.metrics.write_text(json.dumps({"stage": "annotate", "epoch": 0,
                                                      "loss": 1.0 / n}) + "\n")
                result = {"ap50": n / 100, "mae": 0.2, "n_train": n}
            folder.result.write_text(json.dumps(result))
            folder.done.write_text("")
        return run


def run(tmp_path, monkeypatch, cfg: SweepConfig, trial: TrialConfig):
    """Run the trial's stages on fake jobs → (the specs asked for, its outcome)."""
    monkeypatch.setattr(trial_mod, "make_executor",
                        lambda profile, folder, name, stage: FakeExecutor(folder))
    ctx = SweepContext(str(tmp_path), {}, ClusterProfile.load("local"), "sqlite:///x", "0",
                       "p")
    jobs = Jobs()
    runner = TrialRunner(ctx, cfg, trial, [records.ParquetObserver(tmp_path)], job=jobs)
    outcome = TrialOutcome(trial, Status.FAILED, {**trial_mod.trial_row(trial, cfg),
                                                  "code": "c0"})
    trial_mod._stages(runner, cfg, cfg, trial, outcome)
    outcome.status = Status.COMPLETED
    outcome.row["status"] = outcome.status.value
    runner.finish(outcome)
    return jobs.specs, outcome


@pytest.mark.parametrize("study, message", [
    ({"rounds": 0}, "study.rounds=0 must be an int ≥ 1"),
    ({"rounds": True}, "study.rounds=True must be an int"),
    ({"rounds": "2"}, "study.rounds='2' must be an int"),
    ({"N": [12, 6], "rounds": 3}, "study.rounds=3 is more than the 2 images to select at "
     "study.N=6 (n_init 4): every round must select at least one image"),
])
def test_bad_rounds_are_one_config_error(study, message):
    with pytest.raises(ConfigError) as err:
        config(**study)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_rounds_are_refused_before_anything_is_submitted(tmp_path, capsys):
    import yaml

    from jobs.cli import main

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**config().to_dict(), "study": {
        **config().to_dict()["study"], "rounds": 9}}))
    assert main(["sweep", str(path), "--sweep-dir", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "study.rounds=9 is more than the 8 images" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_one_round_is_the_default_and_keeps_the_fingerprint():
    assert config().study.rounds == 1
    assert config(rounds=1).fingerprint() == config().fingerprint()
    assert config(rounds=2).fingerprint() != config().fingerprint()


def test_the_round_plan_shares_the_selected_images_out():
    cfg = config(N=[12, 11], rounds=3)
    plans = {t.N: round_plan(cfg, t) for t in cfg.trials()}
    assert plans == {12: [3, 3, 2], 11: [3, 2, 2]}
    assert round_plan(config(), config().trials()[0]) == [8]   # one-shot: N − n_init


def test_two_rounds_select_from_the_first_rounds_annotation_network(tmp_path, monkeypatch):
    cfg = config(rounds=2)
    (trial,) = cfg.trials()
    specs, outcome = run(tmp_path, monkeypatch, cfg, trial)
    assert [s.kind for s in specs] == ["init", "score", "annotate", "score", "annotate"]
    init, score, first, rescore, last = specs
    assert isinstance(score, ScoreSpec) and isinstance(rescore, RoundScoreSpec)
    # round 1: the initial network's scores closest to β
    assert first.train_ids == tuple(sorted(INIT + [12, 11, 13, 10]))
    # round 2 scores the pool with round 1's annotation network …
    assert rescore.annotate == first
    # … and selects from its scores, none of the images labelled before (they score β
    # exactly there): the highest ids, not the initial network's next-closest 14, 9, …
    assert last.train_ids == tuple(sorted(first.train_ids + (23, 22, 21, 20)))
    sel = read(tmp_path, "selections").sort_values("rank")
    assert sel["image_id"].tolist() == [12, 11, 13, 10, 23, 22, 21, 20]
    assert sel["round"].tolist() == [1] * 4 + [2] * 4 and sel["rank"].tolist() == list(range(8))
    # one row per round; the last round's network is the trial's result
    rounds = read(tmp_path, "rounds").sort_values("round")
    assert rounds["round"].tolist() == [1, 2] and rounds["rounds"].tolist() == [2, 2]
    assert rounds["n_selected"].tolist() == [4, 4] and rounds["n_labelled"].tolist() == [8, 12]
    assert rounds["ap50"].tolist() == [0.08, 0.12] and set(rounds["status"]) == {"COMPLETED"}
    assert rounds["budget_s"].tolist() == [_budget(cfg, trial, n_strong=n) for n in (8, 12)]
    assert rounds["budget_s"].is_monotonic_increasing
    row = read(tmp_path, "trials").iloc[0]
    assert row["ap50"] == 0.12 and row["budget_s"] == rounds["budget_s"].iloc[-1]
    assert row["budget_s"] == _budget(cfg, trial)
    assert row["log_path"] == rounds["stage_dir"].iloc[-1] == str(last.folder(tmp_path).path)
    # the second annotation network's epochs are told apart from the first's
    stages = set(read(tmp_path, "epochs")["stage"])
    assert stages == {"annotate", "annotate-r2"}


@pytest.mark.parametrize("mode", ["random", "oracle", "lowest", "entropy", "coreset"])
def test_every_selection_rule_runs_in_rounds(tmp_path, monkeypatch, mode):
    cfg = config(rounds=3, N=[13], modes=[] if mode != "oracle" else ["oracle"],
                 random_baseline=mode == "random",
                 strategies=[mode] if mode not in ("random", "oracle") else [])
    (trial,) = cfg.trials()
    specs, outcome = run(tmp_path, monkeypatch, cfg, trial)
    annotates = [s for s in specs if isinstance(s, AnnotateSpec)]
    rescores = [s for s in specs if isinstance(s, RoundScoreSpec)]
    assert [len(a.train_ids) for a in annotates] == [7, 10, 13]
    for before, after in zip(annotates, annotates[1:]):
        assert set(before.train_ids) < set(after.train_ids)
    # random reads no scores, every other rule reads the previous round's network's
    assert [s.annotate for s in rescores] == ([] if mode == "random" else annotates[:2])
    sel = read(tmp_path, "selections")
    assert len(set(sel["image_id"])) == 9 and not set(sel["image_id"]) & set(INIT)
    assert sel.groupby("round").size().tolist() == [3, 3, 3]
    assert len(outcome.rounds) == 3


def test_the_rounds_share_one_generator_seeded_by_seed_and_N(tmp_path, monkeypatch):
    cfg = config(rounds=2, modes=[], random_baseline=True)
    (trial,) = cfg.trials()
    specs, _ = run(tmp_path, monkeypatch, cfg, trial)
    rng = trial_mod.selection_rng(trial)
    score = specs[1].folder(tmp_path)
    _, first = select_images(score, trial, 4, rng)
    _, second = select_images(score, trial, 4, rng, INIT + first)
    sel = read(tmp_path, "selections").sort_values("rank")["image_id"].tolist()
    assert sel == first + second


def test_one_round_keeps_todays_stage_addresses(tmp_path, monkeypatch):
    unset, one = config(), config(rounds=1)
    (trial,) = unset.trials()
    got = {}
    for name, cfg in (("unset", unset), ("one", one)):
        specs, _ = run(tmp_path / name, monkeypatch, cfg, trial)
        got[name] = [s.dirname for s in specs]
    assert got["unset"] == got["one"]
    # today's trial, spelled out: init, score, one selection of N − n_init, annotate
    i_spec = trial_mod.init_spec(unset, trial)
    s_spec = ScoreSpec(i_spec)
    init_ids, chosen = select_images(s_spec.folder(tmp_path / "one"), trial)
    today = [i_spec, s_spec, AnnotateSpec(trial_mod.recipe(unset, trial.seed),
                                          tuple(sorted(init_ids + chosen)))]
    assert got["one"] == [s.dirname for s in today]
    rounds = read(tmp_path / "one", "rounds")
    assert rounds["round"].tolist() == [1] and rounds["n_labelled"].tolist() == [12]
    assert read(tmp_path / "one", "selections")["round"].tolist() == [1] * 8


@pytest.mark.slow
def test_round_score_stage_scores_the_pool_with_the_annotation_network(tmp_path):
    """The real stage jobs, in process: init → annotate → the round's re-scoring."""
    from analysis.io import read_optional
    from jobs.stages import job_for

    cfg = SweepConfig.from_dict({
        "name": "r",
        "data": {"n_pool": 16, "n_test": 4, "synthetic": {"image_size": 64, "n_classes": 4}},
        "model": {"hidden": 16, "max_steps": 4}, "train": {"epochs": 1, "iou_epochs": 1},
        "study": {"n_init": 4, "N": [10], "beta": [0.5], "rounds": 2}})
    trial = cfg.trials()[-1]
    i_spec = trial_mod.init_spec(cfg, trial)
    s_spec = ScoreSpec(i_spec)
    for spec in (i_spec, s_spec):
        folder = spec.folder(tmp_path)
        folder.path.mkdir(parents=True)
        job_for(spec, folder)()
    init_ids, chosen = select_images(s_spec.folder(tmp_path), trial, 3)
    a_spec = trial_mod.after_selection(cfg, cfg, trial, init_ids + chosen).annotate
    r_spec = RoundScoreSpec(a_spec)
    assert r_spec.kind == "score" and r_spec.dirname != s_spec.dirname
    for spec in (a_spec, r_spec):
        folder = spec.folder(tmp_path)
        folder.path.mkdir(parents=True)
        job_for(spec, folder)()
    folder = r_spec.folder(tmp_path)
    scores = pq.read_table(folder.image_scores).to_pandas()
    assert len(scores) == 16 and set(scores.loc[scores["in_init"], "image_id"]) == set(
        a_spec.train_ids)
    assert scores["score_pred"].between(0, 1).all() and scores["entropy"].notna().all()
    with np.load(folder.features) as npz:
        assert npz["features"].shape[0] == 16
    labelled, more = select_images(folder, trial, 3, labelled=init_ids + chosen)
    assert labelled == sorted(a_spec.train_ids) and not set(more) & set(labelled)
    # the sweep's image scores (Fig. 5) stay the initial network's
    initial = read_optional(tmp_path, "image_scores")
    assert initial is not None and len(initial) == 16 and initial["in_init"].sum() == 4
