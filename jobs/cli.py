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
  basis tables runs/demo --table 2 --format latex    # any of Tables 2-8; md|latex|csv
  basis tables runs/demo --paired                    # each arm minus random, same seed
  basis report runs/demo                             # runs/demo/report/report.{md,html}
  basis sweep configs/demo.yaml --detach             # return at once, driver runs on
  basis sweep --resume runs/demo                     # continue a sweep, skip what is done
  basis sweep configs/demo.yaml --dry-run            # the plan and compute; submits nothing
  basis sweep --resume runs/demo --reuse-stale       # keep stages older code computed
  basis cancel runs/demo                             # stop it; --resume continues later
  basis clean runs/demo --dry-run                    # what removing checkpoints frees
  basis status runs/demo                             # per-trial state and Slurm ids
  basis ui runs/demo                                 # MLflow UI for the sweep on 127.0.0.1
  basis regime configs/demo.yaml --seeds 0 1         # the initial network's regime only
  basis profiles                                     # list the cluster profiles

A sweep folder is resumable: run the same command again and finished stages and
trials are skipped. Results: SWEEP/results/*.parquet; MLflow: SWEEP/mlflow.db.
"""


def _sweep(args: argparse.Namespace) -> int:
    from analysis.schema import SweepLayout
    from hpc.profiles import ClusterProfile
    from jobs import sweep
    from jobs.config import ConfigError, SweepConfig

    if args.resume:
        sweep_dir = Path(args.resume)
        layout = SweepLayout(sweep_dir)
        if not layout.config.exists():
            raise ConfigError(f"--resume {sweep_dir}: not a sweep folder (no config.yaml)")
        sweep.check_layout(sweep_dir)
        cfg = SweepConfig.load(layout.config)
        profile_name = args.profile or sweep.read_meta(sweep_dir).get("profile") or cfg.profile
    elif args.config:
        cfg = SweepConfig.load(args.config)
        sweep_dir = Path(args.sweep_dir or Path("runs") / cfg.name)
        profile_name = args.profile or cfg.profile
    else:
        raise ConfigError("give a sweep config, or --resume SWEEP")
    profile = ClusterProfile.load(profile_name)
    if args.retries is not None:
        if args.retries < 0:
            raise ConfigError(f"--retries {args.retries}: must be ≥ 0")
        import dataclasses

        profile = dataclasses.replace(profile, retries=args.retries)
    if args.dry_run:
        from jobs import plan
        from jobs.data import resolved

        print(plan.build(resolved(cfg), profile, sweep_dir,
                         reuse_stale=args.reuse_stale).render(), end="")
        return 0
    print(f"basis: sweep {cfg.name!r}: {cfg.n_trials()} trials on profile {profile.name!r} "
          f"({profile.executor}), folder {sweep_dir}", flush=True)
    for line in cfg.warnings():
        print(f"basis: warning: {line}", file=sys.stderr, flush=True)
    if args.detach:
        where = sweep.detach(cfg, profile, sweep_dir, force=args.force,
                             tracking_uri=args.tracking_uri, reuse_stale=args.reuse_stale)
        print(f"basis: the driver runs detached ({where}); follow it with: "
              f"basis status {sweep_dir}")
        return 0
    meta = sweep.run(cfg, profile, sweep_dir, force=args.force, verbose=args.verbose,
                     tracking_uri=args.tracking_uri, reuse_stale=args.reuse_stale)
    from analysis.tables import render

    for mode in cfg.study.modes or ("predicted",):
        print()
        print(render(sweep_dir, mode=mode))
    uri = meta["mlflow_uri"]
    layout = SweepLayout(sweep_dir.resolve())
    print(f"results (Parquet): {layout.results}")
    print(f"MLflow store:      {uri}")
    print(f"stage outputs:     {layout.stages}   job logs: {layout.submitit}")
    print(f"tables again:      basis tables {sweep_dir}")
    print(f"browse the runs:   basis ui {sweep_dir}   (or by hand: mlflow ui "
          f"--backend-store-uri {uri} --host 127.0.0.1)")
    for line in meta.get("stale_reused", []):
        print(f"kept stale stage:  {line} (--reuse-stale)")
    return _summary(sweep_dir, cfg.n_trials())


def _summary(sweep_dir: Path, n_trials: int) -> int:
    """List failed and missing trials; exit 1 if there are any (0 if all completed)."""
    from analysis.io import read
    from analysis.schema import Status

    trials = read(sweep_dir, "trials")
    failed = trials[trials["status"] != Status.COMPLETED.value]
    missing = n_trials - len(trials)
    for _, row in failed.iterrows():
        print(f"FAILED {row['trial']}: {row['error']}\n       log: {row['log_path']}")
    if len(failed) or missing > 0:
        print(f"basis: {len(failed)} failed and {max(missing, 0)} missing of {n_trials} "
              f"trials; rerun with `basis sweep --resume {sweep_dir}` after a fix")
        return 1
    return 0


def _regime(args: argparse.Namespace) -> int:
    import json

    from hpc.profiles import ClusterProfile
    from jobs import regime
    from jobs.config import SweepConfig

    cfg = SweepConfig.load(args.config)
    profile = ClusterProfile.load(args.profile or cfg.profile)
    sweep_dir = Path(args.sweep_dir or Path("runs") / cfg.name)
    seeds = args.seeds or list(cfg.study.seed)
    print(f"basis: regime of {cfg.name!r}: pretrain/init/score stages of seeds {seeds} on "
          f"profile {profile.name!r}, folder {sweep_dir} (a sweep there reuses them)",
          file=sys.stderr, flush=True)
    records = regime.run(cfg, profile, sweep_dir, seeds, force=args.force,
                         emit=lambda rec: print(json.dumps(rec), flush=True),
                         reuse_stale=args.reuse_stale)
    if args.markdown:
        print(regime.markdown(records), end="")
    print(f"basis: every run is appended to {sweep_dir / 'regime.jsonl'}", file=sys.stderr)
    return 0


def _tables(args: argparse.Namespace) -> int:
    from analysis.tables import render

    if args.paired:
        from analysis import paired

        print(paired.render(args.sweep, form=args.format), end="")
        return 0
    print(render(args.sweep, mode=args.mode, table=args.table, form=args.format), end="")
    return 0


def _report(args: argparse.Namespace) -> int:
    from analysis.report import build

    rep = build(args.sweep, args.out)
    print(f"basis: report {rep.md}  (HTML: {rep.html}, {len(rep.figures)} figure file(s))")
    return 0


def _sync(args: argparse.Namespace) -> int:
    from jobs import sweep

    counts = sweep.sync(Path(args.sweep))
    print(f"basis: synced {counts['events']} event(s) of {counts['synced']} run(s); "
          f"{counts['pending']} run(s) still pending")
    return 0 if counts["pending"] == 0 else 1


def _status(args: argparse.Namespace) -> int:
    from jobs.status import render

    sweep = Path(args.sweep)
    from analysis.schema import SweepLayout

    if not SweepLayout(sweep).config.exists():
        raise ValueError(f"{sweep} is not a sweep folder (no config.yaml)")
    print(render(sweep))
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from jobs.ops import cancel

    sweep = Path(args.sweep)
    print("\n".join(cancel(sweep).lines(sweep)))
    return 0


def _clean(args: argparse.Namespace) -> int:
    from jobs.ops import clean

    print("\n".join(clean(Path(args.sweep), dry_run=args.dry_run).lines()))
    return 0


def _ui(args: argparse.Namespace) -> int:
    from jobs.ui import serve

    return serve(Path(args.sweep), port=args.port, wait=not args.no_wait)


def _budget(args: argparse.Namespace) -> int:
    from basis.budget import AnnotationCosts, annotation_budget, segmentation_budget

    costs = AnnotationCosts(n_classes=args.classes, classes_per_image=args.classes_per_image,
                            objects_per_image=args.objects_per_image)
    print("Table 1 — annotation cost per image (s): " + ", ".join(
        f"{k} {v:.2f}" for k, v in costs.table1().items()))
    for n in args.N:
        ann = annotation_budget(n, args.selection, args.pool, costs)
        line = (f"N={n:<5d} {args.selection}: annotation network {ann.days:.2f} days "
                f"({ann.n_strong} masks + {ann.n_weak} IL+C)")
        if args.additional:
            seg = segmentation_budget(n, args.additional, args.selection, args.pool, costs)
            line += f"; segmentation network {seg.days:.2f} days (+{args.additional} IL+C)"
        print(line)
    return 0


def _plan(args: argparse.Namespace) -> int:
    from basis.budget import AnnotationCosts
    from basis.planner import plan, results_from_trials

    costs = AnnotationCosts(n_classes=args.classes, classes_per_image=args.classes_per_image,
                            objects_per_image=args.objects_per_image)
    results = None
    if args.sweep:
        from analysis.io import read

        from analysis.schema import Status

        trials = read(args.sweep, "trials")
        trials = trials[trials["status"] == Status.COMPLETED.value].astype(object)
        results = results_from_trials(trials.where(trials.notna(), None).to_dict("records"))
    fractions = args.fractions if args.fractions is not None else (
        (0.0, 0.5, 1.0) if args.additional else (0.0,))
    p = plan(args.days, costs=costs, pool_size=args.pool, additional=args.additional, N=args.N,
             pool_fractions=fractions, selections=args.selection, results=results)
    print(p.to_markdown(), end="")
    if args.sweep and not results:
        print(f"(no completed trials with an AP in {args.sweep})")
    return 0


def _profiles(args: argparse.Namespace) -> int:
    from hpc.profiles import PROFILES_DIR, ClusterProfile

    for path in sorted(PROFILES_DIR.glob("*.yaml")):
        p = ClusterProfile.load(path)
        print(f"{p.name:14s} {p.executor:6s} {p.world_size} task(s)/job  {p.description}")
    return 0


def _data(args: argparse.Namespace) -> int:
    from basis.data import check

    if args.data_command == "check":
        report = check.check(args.path, args.format, images=args.images)
        print(check.render_check(report))
        return 1 if report["n_errors"] else 0
    info = check.synth(args.out, args.n, size=args.size, seed=args.seed, n_val=args.n_val)
    print(f"basis: wrote {info['splits']} synthetic images ({args.size} px, seed {args.seed}) "
          f"in VOC layout to {info['root']}; check it with: basis data check {info['root']}")
    return 0


SELECT_EXAMPLES = """\
examples:
  # round 1: train on your labelled COCO export, score the pool, pick 50 images
  basis select --labelled labelled.json --pool pool.json --n 50 --beta 0.6 --out runs/cats
  # or spend 2 annotator-days, with the best beta of a finished sweep, on Slurm
  basis select --labelled labelled.json --pool pool.json --days 2 \\
      --from-sweep runs/table4 --profile mycluster --out runs/cats
  # the annotators return the selected images (a COCO 1.0 export of CVAT, Label Studio …)
  basis select --out runs/cats --add-labels cvat-export/annotations/instances_default.json
  # round 2: retrain on labelled + returned, select again (never an image labelled so far)
  basis select --out runs/cats --n 50

Writes OUT/selection.csv (rank, image id, file name, predicted score, predicted
objects, expected seconds), OUT/preannotations.json (COCO, RLE masks under the pool's
ids: import it in CVAT as "COCO 1.0" or in Label Studio's COCO import),
OUT/image_scores.parquet (the whole pool), OUT/budget.json (Table 1 cost model) and
an MLflow run (OUT/mlflow.db). The pool's images may carry IL+C labels as
"counts": {"<category id>": <instances>}: then IoU-W-RSIS takes them as input; without
them plain RSIS is used and no IL+C cost is charged. Greyscale, palette and RGBA
images are converted to RGB and mixed sizes resized to --image-size (pre-annotations
go back to each image's size); 16-bit images are refused. Every input is checked
before anything is written or submitted.
"""


def _select(args: argparse.Namespace) -> int:
    from jobs import campaign

    out = Path(args.out)
    if args.add_labels:
        extra = [k for k in ("labelled", "pool", "n", "days", "beta", "from_sweep")
                 if getattr(args, k) is not None]
        if extra:
            raise ValueError(f"--add-labels only merges labels; --{extra[0].replace('_', '-')} "
                             "belongs to the next `basis select --out DIR`")
        done, data, notes = campaign.add_labels(out, Path(args.add_labels),
                                                crowd_as_objects=args.crowd_as_objects)
        for note in notes:
            print(f"basis: note: {note}")
        print(f"basis: round {done.round}: {len(data['images'])} images and "
              f"{len(data['annotations'])} annotations merged ({out / done.returned}); "
              f"next round: basis select --out {out}")
        return 0
    for flag in ("images", "pool_images"):
        folder = getattr(args, flag)
        if folder is not None and not Path(folder).is_dir():
            raise ValueError(f"--{flag.replace('_', '-')} {folder}: no such folder")
    flags = {k: getattr(args, k) for k in campaign.FLAGS}
    req = campaign.Request(
        out=out, labelled=_opt_path(args.labelled), pool=_opt_path(args.pool),
        images=_opt_path(args.images), pool_images=_opt_path(args.pool_images), n=args.n,
        days=args.days, beta=args.beta, from_sweep=_opt_path(args.from_sweep),
        strategy=args.strategy, profile=args.profile, config=_opt_path(args.config),
        flags=flags, tracking_uri=args.tracking_uri, crowd_as_objects=args.crowd_as_objects)
    plan = campaign.prepare(req)
    print(f"basis: select round {plan.round} into {out}: {plan.network}; "
          f"{len(plan.train_data['images'])} labelled images, {plan.free} of "
          f"{len(plan.pool.images)} pool images unlabelled; N' = {plan.n}, "
          f"{plan.strategy}" + (f", {plan.beta_note}" if plan.beta_note else "")
          + f"; profile {plan.profile.name!r}", flush=True)
    from jobs.dag import StageFailed

    try:
        summary = campaign.run(plan)
    except StageFailed as err:
        print(f"basis: error: {err} (log: {err.log_path}); run the same command again "
              "after a fix: finished stages are reused", file=sys.stderr)
        return 1
    b = summary["budget"]
    top = plan.layout.root
    print(f"selection:        {top / 'selection.csv'} ({len(summary['selected'])} images)")
    print(f"pre-annotations:  {top / 'preannotations.json'} ({summary['n_preannotations']} "
          "masks; CVAT \"COCO 1.0\" / Label Studio COCO import)")
    print(f"image scores:     {top / 'image_scores.parquet'} (the whole pool)")
    print(f"budget:           {campaign.budget_line(b)} ({top / 'budget.json'})")
    print(f"MLflow:           {plan.campaign.tracking_uri} run {summary['mlflow_run_id']}")
    print(f"next:             label them, then: basis select --out {out} --add-labels FILE")
    return 0


def _opt_path(value: str | None) -> Path | None:
    return None if value is None else Path(value)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="basis", description="Mask-guided sample selection studies as Ray Tune sweeps "
        "of submitit jobs, with MLflow and Parquet records.", epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-q", "--quiet", action="store_true", help="only warnings and results")
    sub = ap.add_subparsers(dest="command", required=True)

    sp = sub.add_parser("sweep", help="run or resume a sweep", epilog=EXAMPLES,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("config", nargs="?", help="sweep config YAML, e.g. configs/demo.yaml")
    sp.add_argument("--resume", metavar="SWEEP",
                    help="continue the sweep in this folder with its own config.yaml")
    sp.add_argument("--detach", action="store_true",
                    help="return at once; the driver runs on (a background process "
                    "locally, its own Slurm job on a Slurm profile)")
    sp.add_argument("--profile", help="cluster profile name or YAML path "
                    "(default: the config's `profile`)")
    sp.add_argument("--sweep-dir", help="sweep folder (default: runs/<config name>)")
    sp.add_argument("--tracking-uri", help="MLflow tracking URI, e.g. http://127.0.0.1:5000 "
                    "(default: an sqlite file in the sweep folder; kept for --resume)")
    sp.add_argument("--retries", type=int, metavar="N",
                    help="submit a failed stage job again up to N times; it resumes from "
                    "its checkpoint (default: the profile's `retries`, 0 as shipped)")
    sp.add_argument("--force", action="store_true",
                    help="run into a sweep folder that holds another config")
    sp.add_argument("--dry-run", action="store_true",
                    help="print the submission plan (trials; stages new, done, stale and "
                    "shared; jobs and their resources; the compute estimate; annotation "
                    "days per arm) and submit nothing")
    sp.add_argument("--reuse-stale", action="store_true",
                    help="keep stages that other code computed (stale) instead of "
                    "recomputing them; the summary lists them")
    sp.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2),
                    help="Ray Tune's own status output (default 0: one progress bar)")
    sp.set_defaults(func=_sweep)

    gp = sub.add_parser(
        "regime", help="the initial network's regime (AP, pool IoU spread, IoU predictor's "
        "r and MAE) before any selection arm: runs only the pretrain/init/score stages",
        epilog="examples:\n  basis regime configs/synthetic/study.yaml --seeds 0 1 2\n"
        "  basis regime configs/demo.yaml --profile local-slurm --sweep-dir runs/demo-slurm\n"
        "Prints one JSON line per seed, then a summary line with the targets of "
        "jobs/regime.py.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    gp.add_argument("config", help="sweep config YAML")
    gp.add_argument("--seeds", type=int, nargs="+", help="seeds (default: the config's)")
    gp.add_argument("--profile", help="cluster profile (default: the config's `profile`)")
    gp.add_argument("--sweep-dir", help="sweep folder (default: runs/<config name>, where "
                    "`basis sweep` of the config would put it)")
    gp.add_argument("--force", action="store_true",
                    help="run into a sweep folder that holds another config")
    gp.add_argument("--reuse-stale", action="store_true",
                    help="keep stages that other code computed with the same spec (e.g. "
                    "the pretrain stage after an edit of the decoder)")
    gp.add_argument("--markdown", action="store_true",
                    help="also print the seeds and the targets as a Markdown table")
    gp.set_defaults(func=_regime)

    tp = sub.add_parser("tables", help="print a paper-shaped table from a sweep's Parquet files")
    tp.add_argument("sweep", help="sweep folder")
    tp.add_argument("--mode", default="predicted", choices=("predicted", "oracle"),
                    help="predicted → Table 4 shape, oracle → Table 3 shape")
    tp.add_argument("--table", type=lambda v: int(v) if v.isdigit() else v,
                    choices=(2, 3, 4, 5, 6, 7, 8, "rounds"),
                    help="paper table: 2 MAE by IoU schedule, 3 oracle, 4 predicted, "
                    "5/7 annotation vs segmentation AP, 6/8 budgets in days; rounds: AP "
                    "vs annotation days per selection round (overrides --mode)")
    tp.add_argument("--format", default="md", choices=("md", "latex", "csv"),
                    help="Markdown (default), LaTeX tabular or long-format CSV")
    tp.add_argument("--paired", action="store_true",
                    help="paired differences instead: each arm minus the random arm of "
                    "the same seed and N (mean, 95%% t interval, seeds > 0), and Table "
                    "5/7's segmentation-network pairs")
    tp.set_defaults(func=_tables)

    rp = sub.add_parser("report", help="write SWEEP/report/report.md and report.html: "
                        "every table and figure, config, versions, what is missing")
    rp.add_argument("sweep", help="sweep folder")
    rp.add_argument("--out", help="report folder (default: SWEEP/report)")
    rp.set_defaults(func=_report)

    sy = sub.add_parser("sync", help="send MLflow events buffered during a tracking outage")
    sy.add_argument("sweep", help="sweep folder")
    sy.set_defaults(func=_sync)

    st = sub.add_parser("status", help="per-trial state of a sweep (done/failed/running/pending)")
    st.add_argument("sweep", help="sweep folder")
    st.set_defaults(func=_status)

    cp = sub.add_parser(
        "cancel", help="stop a sweep, resumably: end its driver, scancel its pending and "
        "running jobs (by their recorded ids), record its unfinished trials CANCELLED",
        epilog="example:\n  basis cancel runs/demo && basis sweep --resume runs/demo",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    cp.add_argument("sweep", help="sweep folder")
    cp.set_defaults(func=_cancel)

    kp = sub.add_parser(
        "clean", help="remove the training checkpoints of finished stages (final weights, "
        "results, metrics and records stay); prints what and the bytes freed",
        epilog="example:\n  basis clean runs/demo --dry-run\n  basis clean runs/demo",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    kp.add_argument("sweep", help="sweep folder")
    kp.add_argument("--dry-run", action="store_true", help="list, remove nothing")
    kp.set_defaults(func=_clean)

    up = sub.add_parser("ui", help="open the sweep's MLflow UI: start `mlflow ui` on "
                        "127.0.0.1 for an sqlite store (or print a tracking server's URL)")
    up.add_argument("sweep", help="sweep folder")
    up.add_argument("--port", type=int, default=5000,
                    help="port on 127.0.0.1 (default 5000)")
    up.add_argument("--no-wait", action="store_true",
                    help="return once the UI answers and leave it running in the "
                    "background (pid in SWEEP/mlflow-ui.pid)")
    up.set_defaults(func=_ui)

    bp = sub.add_parser(
        "budget", help="annotation cost: Table 1 and the budget of configurations",
        epilog="example: basis budget --N 200 400 800 --selection closest --additional 9118",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    bp.add_argument("--N", type=int, nargs="+", default=[200, 400, 800],
                    help="strongly annotated images (default: 200 400 800)")
    bp.add_argument("--selection", default="closest",
                    help="random, or a strategy that scores the pool (closest, band, …); "
                    "those need IL+C labels for the rest of the pool")
    bp.add_argument("--pool", type=int, default=1464, help="pool size (VOC12 train: 1464)")
    bp.add_argument("--additional", type=int, default=0,
                    help="additional weakly labelled images for the segmentation network "
                    "(SBD: 9118)")
    bp.add_argument("--classes", type=int, default=20, help="classes in the label set")
    bp.add_argument("--classes-per-image", type=float, default=1.5)
    bp.add_argument("--objects-per-image", type=float, default=2.8)
    bp.set_defaults(func=_budget)

    lp = sub.add_parser(
        "plan", help="budget planner: the configurations that fit D annotator-days, with "
        "the AP a finished sweep measured for each",
        epilog="example: basis plan --days 3 --N 200 400 800 --sweep runs/table6",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    lp.add_argument("--days", type=float, required=True,
                    help="annotator-days available (86 400 s of annotation each, as the paper)")
    lp.add_argument("--pool", type=int, default=1464, help="pool size (VOC12 train: 1464)")
    lp.add_argument("--additional", type=int, default=9118,
                    help="additional pool for the segmentation network (SBD: 9118; 0: none)")
    lp.add_argument("--N", type=int, nargs="+", default=[200, 400, 800],
                    help="candidate numbers of strong images (default: 200 400 800)")
    lp.add_argument("--fractions", type=float, nargs="+",
                    help="shares of the additional pool labelled IL+C (default: 0 0.5 1, "
                    "or 0 without an additional pool)")
    lp.add_argument("--selection", nargs="+", default=["random", "closest"],
                    help="selections to consider (default: random closest)")
    lp.add_argument("--sweep", help="a finished sweep folder: show its measured AP@0.5")
    lp.add_argument("--classes", type=int, default=20, help="classes in the label set")
    lp.add_argument("--classes-per-image", type=float, default=1.5)
    lp.add_argument("--objects-per-image", type=float, default=2.8)
    lp.set_defaults(func=_plan)

    pp = sub.add_parser("profiles", help="list the cluster profiles in slurm/profiles/")
    pp.set_defaults(func=_profiles)

    dp = sub.add_parser("data", help="validate a dataset or write a synthetic one")
    dsub = dp.add_subparsers(dest="data_command", required=True)
    dc = dsub.add_parser("check", help="validate a VOC/SBD/COCO/synthetic dataset and print "
                         "counts, objects/image, classes/image and object sizes")
    dc.add_argument("path", help="VOC root, SBD root, COCO .json or a `data synth` folder")
    dc.add_argument("--format", choices=("voc", "sbd", "coco", "synthetic"),
                    help="dataset format (default: detected from the layout)")
    dc.add_argument("--images", help="COCO only: folder of the images (default: the JSON's)")
    ds = dsub.add_parser("synth", help="write a synthetic dataset in VOC layout")
    ds.add_argument("out", help="output folder")
    ds.add_argument("--n", type=int, required=True, help="training images (split train)")
    ds.add_argument("--n-val", type=int, default=0, help="validation images (split val)")
    ds.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    ds.add_argument("--seed", type=int, default=0, help="data seed (default 0)")
    dp.set_defaults(func=_data)

    xp = sub.add_parser(
        "select", help="the next images to label from your own COCO data: train on the "
        "labelled set, score the pool (Eq. 2), select; rounds of a labelling campaign",
        epilog=SELECT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    xp.add_argument("--out", required=True, metavar="DIR",
                    help="the campaign folder: its state, rounds and outputs")
    xp.add_argument("--labelled", metavar="L.json",
                    help="round 1: COCO instances JSON of the labelled images (masks as "
                    "polygons or RLE)")
    xp.add_argument("--pool", metavar="P.json",
                    help="round 1: COCO JSON of the unlabelled pool; its images may carry "
                    '"counts": {"<category id>": <instances>} (IL+C → W-RSIS)')
    xp.add_argument("--images", metavar="DIR",
                    help="image folder (default: an images/ folder beside each JSON, then "
                    "the JSON's own folder)")
    xp.add_argument("--pool-images", metavar="DIR",
                    help="the pool's image folder, if not --images")
    how_many = xp.add_mutually_exclusive_group()
    how_many.add_argument("--n", type=int, metavar="N'", help="images to select")
    how_many.add_argument("--days", type=float, metavar="D",
                          help="annotator-days of mask drawing to spend (86 400 s each; "
                          "N' from the Table 1 cost model of the labelled set)")
    target = xp.add_mutually_exclusive_group()
    target.add_argument("--beta", type=float, metavar="B",
                        help="target image score in [0, 1] (closest, band)")
    target.add_argument("--from-sweep", metavar="SWEEP",
                        help="take the best beta of a finished sweep at the nearest N")
    xp.add_argument("--strategy", help="closest (default; the paper's), random, band, "
                    "lowest, highest, stratified")
    xp.add_argument("--profile", help="where it trains: local (default), local-slurm, "
                    "or a profile of slurm/profiles/")
    xp.add_argument("--config", metavar="YAML", help="training: sections model, train, "
                    "loss and keys image_size, seed (flags below override it)")
    xp.add_argument("--epochs", type=int, help="segmentation epochs (default 8)")
    xp.add_argument("--steps", type=int, help="a step budget instead of epochs")
    xp.add_argument("--image-size", type=int, help="network input side (default 128 px; "
                    "the paper 256)")
    xp.add_argument("--backbone", help="resnet18 (default), resnet34, resnet50, resnet101")
    xp.add_argument("--hidden", type=int, help="decoder width H (default 64)")
    xp.add_argument("--encoder-weights", metavar="FILE",
                    help="local torchvision ResNet state dict (ImageNet weights)")
    xp.add_argument("--seed", type=int, help="training and tie-breaking seed (default 0)")
    xp.add_argument("--add-labels", metavar="FILE",
                    help="merge the annotators' COCO JSON for the pending round's selection")
    xp.add_argument("--crowd-as-objects", action="store_true",
                    help="read iscrowd 1 annotations of --labelled / --add-labels as "
                    "objects (CVAT exports its mask shapes so), not as ignored regions")
    xp.add_argument("--tracking-uri", help="MLflow tracking URI (default: OUT/mlflow.db)")
    xp.set_defaults(func=_select)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from analysis.io import ResultsError
    from hpc.profiles import ProfileError

    try:
        return int(args.func(args))
    # ValueError covers jobs.config.ConfigError, which is not imported here: it brings
    # torch (~3 s), which `basis tables` and `basis report` do not need
    except (ProfileError, ResultsError, ValueError) as err:
        print(f"basis: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
