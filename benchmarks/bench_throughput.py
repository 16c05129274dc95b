"""A study's aggregate training throughput on the local Slurm vs one process on all cores.

A study keeps ``max_concurrent_trials`` training jobs running side by side on the
cluster. The subject is K = that many concurrent submitit jobs on a cluster profile
(``hpc.profiles.make_executor``), each training IoU-W-RSIS with `basis.train.train` on
the same synthetic set for the same epochs, its threads set from
``SLURM_CPUS_PER_TASK`` and its process group (gloo DDP when the profile gives a job
several tasks) joined as `jobs.stages` does. The floor is the same total work in this
process: the K trainings one after the other, with one thread per core.

    aggregate img/s = K · images · (epochs − 1) / (last job's last epoch end
                                                   − first job's first epoch end)
    ratio = aggregate img/s / floor img/s        (1 = the study uses the machine as well
                                                  as one process on all its cores)

Training time is read inside the jobs, from the end of their first epoch (job start-up,
Slurm scheduling and a fresh process's first steps are left out, and the submit-to-done
time is printed on its own: a study's jobs run for hours). Every repeat runs the floor and
then each profile, so a busy machine slows both sides of a ratio alike. Needs a Slurm
cluster that answers ``sinfo`` (slurm/local/start.sh); without one it says so and exits 0.

    python benchmarks/bench_throughput.py                       # local-slurm, 64 px
    python benchmarks/bench_throughput.py --profile local-slurm local-slurm-1task
    python benchmarks/bench_throughput.py --tiny                # one small repeat (CI smoke)
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line, med, ratio_line  # noqa: E402
from bench_sweep_overhead import slurm_answers  # noqa: E402


@dataclass(frozen=True)
class Work:
    """One training job's work: `epochs` epochs over `images` synthetic images."""

    size: int = 64
    images: int = 20
    epochs: int = 12
    batch: int = 8
    hidden: int = 64
    n_classes: int = 20

    @property
    def timed_images(self) -> int:
        """Images of the timed epochs (all but the first)."""
        return self.images * (self.epochs - 1)


def train_once(work: Work) -> list[float]:
    """Train a fresh IoU-W-RSIS on ``work`` → the time at the end of each epoch.

    The joint schedule (every loss term from the first step, no IoU-only epochs), as in
    `bench_step`, so every epoch is the same work. The first epoch also pays for a fresh
    process's first steps (oneDNN kernel set-up, allocator): the throughput is measured
    from its end, over the other ``epochs - 1``.
    """
    import torch

    from basis.data.synthetic import SyntheticConfig, SyntheticShapes
    from basis.models.rsis import RSIS, ModelConfig
    from basis.train import Hook, TrainConfig, train

    class Clock(Hook):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def after_epoch(self, state, metrics) -> None:  # noqa: ANN001
            self.ends.append(time.time())

    data = SyntheticShapes(SyntheticConfig(image_size=work.size, n_classes=work.n_classes), 0,
                           range(work.images))
    model = RSIS(ModelConfig(hidden=work.hidden, n_classes=work.n_classes), seed=0)
    cfg = TrainConfig(epochs=work.epochs, batch_size=work.batch, iou_schedule="joint")
    torch.manual_seed(0)
    clock = Clock()
    train(model, data, cfg, hooks=[clock])
    return clock.ends


def job(work: Work) -> dict:
    """A Slurm job's body: join the process group, use the CPUs Slurm gave the task."""
    import torch

    from hpc import distributed

    env = distributed.init()
    # as jobs.stages.StageJob.__call__: the CPUs Slurm gave each task
    torch.set_num_threads(max(1, int(os.environ.get("SLURM_CPUS_PER_TASK", "1"))))
    try:
        ends = train_once(work)
        return {"start": ends[0], "end": ends[-1], "rank": env.rank, "world": env.world_size,
                "threads": torch.get_num_threads()}
    finally:
        distributed.shutdown()


def run_floor(work: Work, k: int) -> float:
    """Seconds of the K trainings one after the other in this process (all cores),
    each timed from the end of its first epoch as in the jobs."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    total = 0.0
    for _ in range(k):
        ends = train_once(work)
        total += ends[-1] - ends[0]
    return total


def run_study(profile_name: str, work: Work, k: int, folder: Path) -> dict:
    """K concurrent jobs on the profile → timed span (first job's first epoch end to the
    last job's last), submit-to-done wall, and what the jobs ran with."""
    from hpc.profiles import ClusterProfile, make_executor

    profile = ClusterProfile.load(profile_name)
    ex = make_executor(profile, folder, name="basis-bench-throughput")
    t0 = time.time()
    jobs = [ex.submit(job, work) for _ in range(k)]
    results = [j.results() for j in jobs]          # one dict per task of each job
    wall = time.time() - t0
    tasks = [r for per_job in results for r in per_job]
    span = max(r["end"] for r in tasks) - min(r["start"] for r in tasks)
    return {"span": span, "wall": wall, "world": tasks[0]["world"],
            "threads": tasks[0]["threads"], "tasks": len(tasks),
            "first": [round(min(r["start"] for r in per) - t0, 1) for per in results]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="one small repeat (CI smoke)")
    ap.add_argument("--profile", nargs="+", default=["local-slurm"],
                    help="cluster profile names or YAML paths, each measured in turn")
    ap.add_argument("--jobs", type=int, default=None,
                    help="concurrent jobs K (default: the profile's max_concurrent_trials)")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the submitit folders")
    args = ap.parse_args(argv)
    work = (Work(size=32, images=8, epochs=2, batch=4, hidden=16, n_classes=3) if args.tiny
            else Work())
    if args.epochs:
        work = Work(**{**asdict(work), "epochs": args.epochs})
    if work.epochs < 2:
        ap.error("--epochs must be at least 2 (the first epoch is not timed)")
    repeats = args.repeats or (1 if args.tiny else 2)
    print(machine_line("cpu"))
    ok, why = slurm_answers()
    if not ok:
        print(f"throughput: skipped, no Slurm cluster answers ({why}); "
              "start one with: bash slurm/local/start.sh")
        return 0
    from hpc.profiles import ClusterProfile

    profiles = {name: ClusterProfile.load(name) for name in args.profile}
    ks = {name: args.jobs or p.max_concurrent_trials for name, p in profiles.items()}
    print(f"setup: IoU-W-RSIS resnet18 H={work.hidden}, {work.size} px, {work.images}-image "
          f"epochs x {work.epochs}, batch {work.batch}, joint schedule; per profile K "
          f"concurrent jobs vs the same K trainings in one {os.cpu_count()}-thread process; "
          f"{repeats} repeat(s)")
    work_dir = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    ratios: dict[str, list[float]] = {name: [] for name in profiles}
    try:
        for r in range(repeats):
            floors: dict[int, float] = {}
            for name, profile in profiles.items():
                k = ks[name]
                if k not in floors:
                    floors[k] = run_floor(work, k)
                floor_ips = k * work.timed_images / floors[k]
                res = run_study(name, work, k, work_dir / f"r{r}-{Path(name).stem}")
                ips = k * work.timed_images / res["span"]
                ratios[name].append(ips / floor_ips)
                print(f"  repeat {r + 1} {Path(name).stem}: {k} jobs x {res['world']} task(s) x "
                      f"{res['threads']} thread(s): {ips:6.1f} img/s together "
                      f"({ips / k:5.1f} per job; timed span {res['span']:5.1f} s, submit to "
                      f"done {res['wall']:5.1f} s, first epochs done at +{res['first']} s)   "
                      f"one process: {floor_ips:6.1f} img/s ({floors[k]:5.1f} s)")
        for name, values in ratios.items():
            p = profiles[name]
            print(ratio_line(f"study_throughput_{Path(name).stem}", med(values),
                             f"aggregate img/s of {ks[name]} concurrent jobs "
                             f"({p.tasks_per_node} task(s) x {p.cpus_per_task} cpu(s)) / img/s "
                             f"of one process on all cores"))
    finally:
        if args.keep:
            print(f"kept: {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
