"""Sweep overhead: ``basis sweep`` on the local Slurm vs the same stage jobs through bare
submitit on the same profile.

The subject is the user's command, ``basis sweep CONFIG --profile local-slurm
--sweep-dir DIR``, timed from launch to exit: CLI start, MLflow store and parent run,
Ray start, Tune trials, content-addressed stage folders and locks, submitit jobs on
Slurm, metric streaming, Parquet records, the final table. The floor runs the same
stages as plain submitit jobs from this process: the same `jobs.stages` job objects on
an executor from `hpc.profiles.make_executor(profile)`, the init and score jobs first, then the
annotate jobs of the same selections (`jobs.trial.select_images`) with the same
concurrency (``max_concurrent_trials``), waiting on ``job.results()``. The stage work
is identical, so the difference is what the sweep machinery costs.

    overhead ratio = sweep wall time / bare submitit wall time
    per-job overhead = (sweep − bare) / number of Slurm jobs

Needs a Slurm cluster that answers ``sinfo`` (slurm/local/start.sh); without one it
says so and exits 0.

    python benchmarks/bench_sweep_overhead.py          # 2 trials: 1 init + 2 annotate jobs
    python benchmarks/bench_sweep_overhead.py --tiny   # 1 trial, 2 jobs, 1 repeat (~1 min)
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine_line, med, median_ratio, ratio_line  # noqa: E402

import yaml  # noqa: E402


def tiny_config(name: str, n_trials: int) -> dict:
    """A sweep whose stages are as small as training gets (32 px, 1+1 epochs)."""
    return {
        "name": name, "profile": "local-slurm",
        "data": {"n_pool": max(32, 12 + 2 * n_trials), "n_test": 8,
                 "synthetic": {"image_size": 32, "n_classes": 3}},
        "model": {"backbone": "resnet18", "hidden": 16, "max_steps": 4},
        "train": {"epochs": 1, "iou_epochs": 1, "batch_size": 8},
        # one β and distinct N: every trial selects a different set, so each trial
        # adds one annotate job (equal selections would share a stage and hide its cost)
        "study": {"n_init": 8, "N": list(range(12, 12 + 2 * n_trials, 2)),
                  "beta": [0.5], "seed": [0],
                  "modes": ["predicted"], "random_baseline": False},
    }


def slurm_answers() -> tuple[bool, str]:
    if shutil.which("sinfo") is None:
        return False, "sinfo is not installed"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                             timeout=20)
    except subprocess.TimeoutExpired:
        return False, "sinfo timed out"
    states = out.stdout.split()
    if out.returncode != 0 or not any(s.startswith(("idle", "mixed", "alloc")) for s in states):
        return False, f"sinfo: {out.stderr.strip() or states or 'no nodes'}"
    return True, ""


def run_sweep(config: Path, sweep_dir: Path) -> tuple[float, int]:
    """Wall seconds of ``basis sweep`` and the number of Slurm jobs it ran."""
    cmd = [sys.executable, "-m", "jobs.cli", "sweep", str(config), "--profile", "local-slurm",
           "--sweep-dir", str(sweep_dir)]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=1800,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"basis sweep failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    from jobs.dag import job_ids
    from jobs.specs import StageFolder

    jobs = set()
    for d in (sweep_dir / "stages").glob("*-*"):
        if d.is_dir():
            jobs.update(job_ids(StageFolder(d)))
    return wall, len(jobs)


def run_bare(raw: dict, work: Path) -> tuple[float, int]:
    """The same stages as plain submitit jobs on the same profile → (wall s, jobs)."""
    from hpc.profiles import ClusterProfile, make_executor
    from jobs.config import SweepConfig
    from jobs.specs import AnnotateSpec, ScoreSpec, StageFolder, StageSpec
    from jobs.stages import job_for
    from jobs.trial import init_spec, recipe, select_images

    t0 = time.perf_counter()
    cfg = SweepConfig.from_dict(raw)
    profile = ClusterProfile.load("local-slurm")
    trials = cfg.trials()
    n_jobs = 0

    def submit(spec: StageSpec) -> StageFolder:
        folder = spec.folder(work)
        folder.path.mkdir(parents=True, exist_ok=True)
        job = make_executor(profile, work / "submitit" / folder.name).submit(
            job_for(spec, folder))
        job.results()
        return folder

    i_spec = init_spec(cfg, trials[0])       # one seed: one init stage
    submit(i_spec)
    score = submit(ScoreSpec(i_spec))
    n_jobs += 2
    specs = {}
    for t in trials:
        init_ids, selected = select_images(score, t)
        spec = AnnotateSpec(recipe(cfg, t.seed), tuple(sorted(init_ids + selected)))
        specs[spec.dirname] = spec            # equal selections: one job
    with ThreadPoolExecutor(max_workers=profile.max_concurrent_trials) as pool:
        list(pool.map(submit, specs.values()))
    n_jobs += len(specs)
    return time.perf_counter() - t0, n_jobs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="one trial, one repeat")
    ap.add_argument("--trials", type=int, default=2, help="trials (one annotate job each)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the sweep folders")
    args = ap.parse_args(argv)
    n_trials = 1 if args.tiny else args.trials
    repeats = args.repeats or (1 if args.tiny else 2)
    print(machine_line("cpu"))
    ok, why = slurm_answers()
    if not ok:
        print(f"sweep-overhead: skipped, no Slurm cluster answers ({why}); "
              "start one with: bash slurm/local/start.sh")
        return 0
    raw = tiny_config("bench-overhead", n_trials)
    print(f"setup: profile local-slurm, {n_trials} trial(s) of a 32 px / 1+1 epoch sweep, "
          f"{repeats} repeat(s), bare submitit then basis sweep in each, medians")
    work = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    try:
        config = work / "sweep.yaml"
        config.write_text(yaml.safe_dump(raw, sort_keys=False))
        bare_t, sweep_t, jobs = [], [], 0
        for r in range(repeats):
            # fresh folders every repeat: nothing may be reused across them
            b, nb = run_bare(raw, work / f"bare-{r}")
            s, ns = run_sweep(config, work / f"sweep-{r}")
            if nb != ns:
                raise AssertionError(f"bare ran {nb} jobs, the sweep {ns}")
            bare_t.append(b)
            sweep_t.append(s)
            jobs = ns
            print(f"  repeat {r + 1}: bare submitit {b:6.1f} s   basis sweep {s:6.1f} s   "
                  f"({ns} Slurm jobs each)")
        per_job = (med(sweep_t) - med(bare_t)) / jobs
        print(f"  median: bare submitit {med(bare_t):.1f} s, basis sweep {med(sweep_t):.1f} s; "
              f"overhead {med(sweep_t) - med(bare_t):.1f} s = {per_job:.1f} s per job "
              f"({jobs} jobs)")
        print(ratio_line("sweep_vs_bare_submitit", median_ratio(sweep_t, bare_t),
                         "basis sweep wall time / bare submitit wall time, same stage jobs"))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
