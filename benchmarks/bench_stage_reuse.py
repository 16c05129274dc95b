"""Compute saved by content-addressed stage reuse on the paper's full grid (no training).

Walks the stage DAG each trial of a sweep config needs, as `jobs.trial.run_trial`
builds it — ``init`` (per seed), ``annotate`` (per distinct selection), and with
``study.segment`` ``pseudo`` and ``segment`` — addresses every stage with
the typed stage specs' folders (`jobs.specs`, `jobs.trial.init_spec`), and counts the
work twice:

* with reuse: each distinct stage folder once (what the sweep runs);
* without: every trial computes its whole chain itself (its own init network, its own
  scoring of the pool, …).

Work is counted in training image·epochs (images a stage trains on × its segmentation
epochs; the freeze schedule's IoU-only epochs run on features cached by one forward
pass and are counted as inference). Inference images (pool scoring, the IoU cache,
evaluation on the test split, pseudo-labelling) are counted separately, and a second
ratio folds them in at one inference image = 6.6/21 of a training image (the 256 px
train/infer speeds measured on this machine, DESIGN.md).

Assumption on selections: without running the init stages the selected ids are
unknown, so every (mode, β, N, seed) is taken to select a distinct set, except the
random baseline, which is one set per (N, seed) whatever β (as in `select_images`).
Coinciding selections would only add reuse, so the savings printed are a lower bound.

Real-data configs get the paper's split sizes (VOC12 train 1464 / val 1449 / SBD 9118
additional) in place of reading them from disk.

    python benchmarks/bench_stage_reuse.py            # the three paper configs
    python benchmarks/bench_stage_reuse.py --tiny     # the same (it is pure counting)
    python benchmarks/bench_stage_reuse.py configs/demo.yaml
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine_line, ratio_line  # noqa: E402

import yaml  # noqa: E402

from jobs.config import SweepConfig, TrialConfig  # noqa: E402
from jobs.specs import AnnotateSpec, PseudoSpec, SegmentSpec  # noqa: E402
from jobs.trial import init_spec, recipe  # noqa: E402

PAPER_CONFIGS = ("configs/paper/table3_oracle.yaml", "configs/paper/table4_predicted.yaml",
                 "configs/paper/table5_segment.yaml")
PAPER_SIZES = {"n_pool": 1464, "n_test": 1449, "n_additional": 9118}
TRAIN_PER_INFER = 6.6 / 21.0     # DESIGN.md: 256 px, 6.6 train vs 21 infer img/s
SWEEP = Path("SWEEP")            # stage folders are compared, never created


@dataclasses.dataclass(frozen=True)
class Stage:
    """One node of the DAG: its content address and what it costs."""

    dir: str
    kind: str
    train_img_epochs: int
    infer_images: int


def load(path: Path, tmp: str) -> SweepConfig:
    """The config, real-data paths pointed at ``tmp`` and the paper's split sizes."""
    raw = yaml.safe_load(path.read_text())
    data = raw.setdefault("data", {})
    for key in ("voc_root", "sbd_root", "coco_train", "coco_test"):
        if data.get(key):
            data[key] = tmp          # site-specific; only their content address matters
    cfg = SweepConfig.from_dict(raw, default_name=path.stem)
    if cfg.data.kind != "synthetic":
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **PAPER_SIZES,
                                                                sizes_from_disk=True))
    return cfg


def trial_stages(cfg: SweepConfig, trial: TrialConfig) -> list[Stage]:
    """The stages of one trial, with the specs `jobs.trial.run_trial` gives them."""
    epochs = cfg.train.epochs
    iou_cached = cfg.model.iou_head and cfg.train.iou_schedule == "freeze"
    d = cfg.data
    i_spec = init_spec(cfg, trial)
    init = Stage(str(i_spec.folder(SWEEP).path), "init", trial.n_init * epochs,
                 (trial.n_init if iou_cached else 0) + d.n_pool + d.n_test)
    # The selected ids stand for themselves: random depends on (seed, N) only; an id
    # tuple that encodes the selection addresses the stage as the real ids would.
    selection = ((-1, trial.seed, trial.N) if trial.mode == "random"
                 else (-2 if trial.mode == "oracle" else -3, round(1000 * trial.beta),
                       trial.seed, trial.N))
    ann_spec = AnnotateSpec(recipe(cfg.with_schedule(trial.variant), trial.seed), selection)
    ann_dir = ann_spec.folder(SWEEP).path
    out = [init, Stage(str(ann_dir), "annotate", trial.N * epochs,
                       (trial.N if iou_cached else 0) + d.n_test)]
    if trial.pool_fraction is not None:
        p_spec = PseudoSpec(ann_spec)
        n_pseudo = round(trial.pool_fraction * d.n_additional)
        s_spec = SegmentSpec(p_spec, n_pseudo)
        out += [Stage(str(p_spec.folder(SWEEP).path), "pseudo", 0, d.n_additional),
                Stage(str(s_spec.folder(SWEEP).path), "segment",
                      (trial.N + n_pseudo) * epochs, d.n_test)]
    return out


def count(stages_per_trial: list[list[Stage]]) -> dict[str, float]:
    every = [s for chain in stages_per_trial for s in chain]
    distinct = {s.dir: s for s in every}.values()

    def tot(xs, attr):
        return sum(getattr(s, attr) for s in xs)

    return {
        "trials": len(stages_per_trial),
        "stages_no_reuse": len(every), "stages_reuse": len(distinct),
        "by_kind_no_reuse": Counter(s.kind for s in every),
        "by_kind_reuse": Counter(s.kind for s in distinct),
        "train_no_reuse": tot(every, "train_img_epochs"),
        "train_reuse": tot(distinct, "train_img_epochs"),
        "infer_no_reuse": tot(every, "infer_images"),
        "infer_reuse": tot(distinct, "infer_images"),
    }


def report(name: str, c: dict[str, float]) -> None:
    kinds = ", ".join(f"{k} {c['by_kind_reuse'][k]}/{c['by_kind_no_reuse'][k]}"
                      for k in ("init", "annotate", "pseudo", "segment")
                      if c["by_kind_no_reuse"][k])
    print(f"{name}: {c['trials']} trials; stages run with/without reuse: "
          f"{c['stages_reuse']}/{c['stages_no_reuse']} ({kinds})")
    print(f"  training image·epochs: {c['train_reuse']:,} with reuse vs "
          f"{c['train_no_reuse']:,} without (saved {c['train_no_reuse'] - c['train_reuse']:,}, "
          f"{100 * (1 - c['train_reuse'] / c['train_no_reuse']):.1f} %)")
    print(f"  inference images:      {c['infer_reuse']:,} with reuse vs "
          f"{c['infer_no_reuse']:,} without")
    eq_r = c["train_reuse"] + TRAIN_PER_INFER * c["infer_reuse"]
    eq_n = c["train_no_reuse"] + TRAIN_PER_INFER * c["infer_no_reuse"]
    tag = name.replace(" ", "_").replace("+", "_")
    print(ratio_line(f"stage_reuse_train_{tag}", c["train_no_reuse"] / c["train_reuse"],
                     "training image·epochs without reuse / with reuse"))
    print(ratio_line(f"stage_reuse_all_{tag}", eq_n / eq_r,
                     "training + inference (as training-image equivalents) without / with"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("configs", nargs="*",
                    help=f"sweep configs (default: {', '.join(PAPER_CONFIGS)})")
    ap.add_argument("--tiny", action="store_true", help="accepted for CI; the count is instant")
    args = ap.parse_args(argv)
    paths = [Path(p) for p in args.configs] or [ROOT / p for p in PAPER_CONFIGS]
    print(machine_line("none (counting only)"))
    chains_all: list[list[Stage]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in paths:
            cfg = load(path, tmp)
            chains = [trial_stages(cfg, t) for t in cfg.trials()]
            chains_all += chains
            d = cfg.data
            print(f"{path.name}: N={list(cfg.study.N)} β={len(cfg.study.beta)} values "
                  f"seeds={len(cfg.study.seed)} modes={list(cfg.study.modes)} "
                  f"random={cfg.study.random_baseline} segment={cfg.study.segment} "
                  f"pools={list(cfg.study.pool_fractions) if cfg.study.segment else '-'}; "
                  f"n_init={cfg.study.n_init} epochs={cfg.train.epochs} "
                  f"pool/test/additional={d.n_pool}/{d.n_test}/{d.n_additional}")
            report(cfg.name, count(chains))
        if len(paths) > 1:
            # The sweeps share stages only when run into one folder (`--force`): their
            # init stages, random baselines and equal (mode, β) annotate stages coincide.
            report("all configs in one folder", count(chains_all))
    return 0


if __name__ == "__main__":
    sys.exit(main())
