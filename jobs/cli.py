"""``basis`` command line: run a sweep, print its tables."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

EXAMPLES = """\
examples:
  basis sweep configs/demo.yaml                      # embedded default: local processes
  basis sweep configs/demo.yaml --profile local-slurm --sweep-dir runs/demo-slurm
  basis sweep configs/demo.yaml --profile my-cluster # slurm/profiles/my-cluster.yaml
  basis tables runs/demo                             # Table-4-shaped AP@0.5 table
  basis tables runs/demo --mode oracle               # Table 3 shape
  basis status runs/demo                             # per-trial state and Slurm ids
  basis profiles                                     # list the cluster profiles

A sweep folder is resumable: run the same command again and finished stages and
trials are skipped. Results: SWEEP/results/*.parquet; MLflow: SWEEP/mlflow.db.
"""


def _sweep(args: argparse.Namespace) -> int:
    from hpc.profiles import ClusterProfile
    from jobs import sweep
    from jobs.config import SweepConfig

    cfg = SweepConfig.load(args.config)
    profile = ClusterProfile.load(args.profile or cfg.profile)
    sweep_dir = Path(args.sweep_dir or Path("runs") / cfg.name)
    print(f"basis: sweep {cfg.name!r}: {cfg.n_trials()} trials on profile {profile.name!r} "
          f"({profile.executor}), folder {sweep_dir}", flush=True)
    meta = sweep.run(cfg, profile, sweep_dir, force=args.force, verbose=args.verbose)
    from analysis.tables import render

    for mode in cfg.study.modes or ("predicted",):
        print()
        print(render(sweep_dir, mode=mode))
    uri = meta["mlflow_uri"]
    print(f"results (Parquet): {sweep_dir.resolve() / 'results'}")
    print(f"MLflow store:      {uri}")
    print(f"stage outputs:     {sweep_dir.resolve() / 'stages'}   job logs: "
          f"{sweep_dir.resolve() / 'submitit'}")
    print(f"tables again:      basis tables {sweep_dir}")
    print(f"browse the runs:   mlflow ui --backend-store-uri {uri} --host 127.0.0.1")
    return 0


def _tables(args: argparse.Namespace) -> int:
    from analysis.tables import render

    print(render(args.sweep, mode=args.mode))
    return 0


def _status(args: argparse.Namespace) -> int:
    from jobs.status import render

    sweep = Path(args.sweep)
    if not (sweep / "config.yaml").exists():
        raise ValueError(f"{sweep} is not a sweep folder (no config.yaml)")
    print(render(sweep))
    return 0


def _profiles(args: argparse.Namespace) -> int:
    from hpc.profiles import PROFILES_DIR, ClusterProfile

    for path in sorted(PROFILES_DIR.glob("*.yaml")):
        p = ClusterProfile.load(path)
        print(f"{p.name:14s} {p.executor:6s} {p.world_size} task(s)/job  {p.description}")
    return 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="basis", description="Mask-guided sample selection studies as Ray Tune sweeps "
        "of submitit jobs, with MLflow and Parquet records.", epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-q", "--quiet", action="store_true", help="only warnings and results")
    sub = ap.add_subparsers(dest="command", required=True)

    sp = sub.add_parser("sweep", help="run or resume a sweep", epilog=EXAMPLES,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("config", help="sweep config YAML, e.g. configs/demo.yaml")
    sp.add_argument("--profile", help="cluster profile name or YAML path "
                    "(default: the config's `profile`)")
    sp.add_argument("--sweep-dir", help="sweep folder (default: runs/<config name>)")
    sp.add_argument("--force", action="store_true",
                    help="run into a sweep folder that holds another config")
    sp.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2),
                    help="Ray Tune's own status output (default 0: one progress bar)")
    sp.set_defaults(func=_sweep)

    tp = sub.add_parser("tables", help="print a paper-shaped table from a sweep's Parquet files")
    tp.add_argument("sweep", help="sweep folder")
    tp.add_argument("--mode", default="predicted", choices=("predicted", "oracle"),
                    help="predicted → Table 4 shape, oracle → Table 3 shape")
    tp.set_defaults(func=_tables)

    st = sub.add_parser("status", help="per-trial state of a sweep (done/failed/running/pending)")
    st.add_argument("sweep", help="sweep folder")
    st.set_defaults(func=_status)

    pp = sub.add_parser("profiles", help="list the cluster profiles in slurm/profiles/")
    pp.set_defaults(func=_profiles)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from analysis.io import ResultsError
    from hpc.profiles import ProfileError
    from jobs.config import ConfigError

    try:
        return int(args.func(args))
    except (ConfigError, ProfileError, ResultsError, ValueError) as err:
        print(f"basis: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
