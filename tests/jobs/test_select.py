"""``basis select`` on a user's own data in the real formats (PNG images, COCO JSON):
bad input refused before anything is written or submitted; a campaign's rounds on the
local profile, on the local Slurm, and (plain RSIS, in process) on submitit's debug
executor; the annotators' labels merged and checked."""
from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jobs.cli import main
from tests.jobs.selectfix import CATEGORIES, annotate, make


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("select") / "data"
    make(root, mixed=True, shared=True)
    return root


@pytest.fixture
def data(pristine, tmp_path) -> dict[str, Path]:
    """A fresh copy of the user's files for one test to spoil."""
    root = tmp_path / "data"
    shutil.copytree(pristine, root)
    return {"labelled": root / "labelled.json", "pool": root / "pool.json",
            "images": root / "images", "config": root / "train.yaml",
            "truth": root / "pool_truth.json"}


def run_main(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["-q", *args])
    return rc, out.getvalue(), err.getvalue()


def round1(d: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["select", "--labelled", str(d["labelled"]), "--pool", str(d["pool"]),
            "--config", str(d["config"]), "--out", str(out), *extra]


def refused(d: dict[str, Path], out: Path, pattern: str, *extra: str,
            args: list[str] | None = None) -> str:
    """Run a round that must be refused: exit 2, one ``basis: error:`` line matching
    ``pattern``, and no campaign folder (nothing written, nothing submitted)."""
    rc, stdout, stderr = run_main(*(args or round1(d, out, *extra)))
    lines = stderr.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("basis: error: "), stderr
    assert re.search(pattern, lines[0]), lines[0]
    assert not out.exists() and stdout == ""
    return lines[0]


def _edit(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


# -- bad input: refused in one line, before anything is written or submitted ---------------

def test_missing_and_unreadable_images_are_named(data, tmp_path):
    out = tmp_path / "out"
    (data["images"] / "img0503.png").unlink()
    refused(data, out, r"pool.json: image 503: .*img0503.png: image file not found; images "
            r"are looked for in .*data/images \(--images", "--n", "3", "--beta", "0.5")
    (data["images"] / "img0002.png").write_bytes(b"not a png")
    refused(data, out, r"labelled.json: image 2: .*img0002.png: cannot read image",
            "--n", "3", "--beta", "0.5")
    refused(data, out, r"--images .*nowhere: no such folder", "--n", "3", "--beta", "0.5",
            "--images", str(tmp_path / "nowhere"))


def test_wide_images_are_refused_and_mixed_grey_ones_accepted(data, tmp_path):
    from basis.data.labelling import read_labelled, read_pool

    labelled, _ = read_labelled(data["labelled"])       # the fixture mixes sizes and modes
    pool = read_pool(data["pool"], labelled)
    assert {(im.height, im.width) for im in pool.images} == {(64, 64), (48, 80)}
    modes = {Image.open(im.path).mode for im in pool.images}
    assert modes == {"RGB", "L"}
    Image.fromarray(np.full((64, 64), 3000, np.uint16)).save(data["images"] / "img0504.png")
    refused(data, tmp_path / "out", r"pool.json: image 504: .*img0504.png: 16-bit image "
            r"\(mode I;16\); refused, save it as 8-bit", "--n", "3", "--beta", "0.5")


def test_pool_categories_absent_from_the_labelled_set_are_refused(data, tmp_path):
    _edit(data["pool"], lambda d: d["categories"].append({"id": 13, "name": "star"}))
    refused(data, tmp_path / "out", r"pool.json: category 13 \('star'\) is absent from the "
            r"labelled set labelled.json \(its categories: 3 'disc', 7 'box', 11 'wedge'\)",
            "--n", "3", "--beta", "0.5")
    _edit(data["pool"], lambda d: d.update(categories=CATEGORIES))
    _edit(data["pool"], lambda d: d["images"][0].update(counts={"13": 1}))
    refused(data, tmp_path / "out", r"pool.json: image 500: counts name category 13",
            "--n", "3", "--beta", "0.5")
    _edit(data["pool"], lambda d: d["images"][0].pop("counts"))
    refused(data, tmp_path / "out", r"20 of 21 images carry 'counts' \(IL\+C\) but image 500 "
            r"does not", "--n", "3", "--beta", "0.5")


def test_an_empty_labelled_set_is_refused(data, tmp_path):
    _edit(data["labelled"], lambda d: d.update(annotations=[]))
    refused(data, tmp_path / "out", r"labelled.json: the labelled set is empty: 12 images but "
            r"no object annotation", "--n", "3", "--beta", "0.5")
    _edit(data["labelled"], lambda d: d.update(images=[]))
    refused(data, tmp_path / "out", r"labelled.json: the labelled set is empty \(no images\)",
            "--n", "3", "--beta", "0.5")


def test_n_larger_than_the_pool_and_days_that_buy_nothing_are_refused(data, tmp_path):
    out = tmp_path / "out"
    # 21 pool entries, one of which is a labelled image's file: 20 left to select from
    refused(data, out, r"--n 21 is larger than the 20 pool images not labelled yet "
            r"\(pool.json: 21 images, 1 labelled\)", "--n", "21", "--beta", "0.5")
    refused(data, out, r"--days 10 \(\d+ images at [\d.]+ s each\) is larger than the 20",
            "--days", "10", "--beta", "0.5")
    refused(data, out, r"--days 0.0001 buys no image: one costs [\d.]+ s of mask drawing",
            "--days", "0.0001", "--beta", "0.5")
    refused(data, out, r"give --n N \(images to select\) or --days D", "--beta", "0.5")


def test_options_are_checked_before_anything_runs(data, tmp_path):
    out = tmp_path / "out"
    refused(data, out, r"--strategy closest needs a target score: give --beta B or "
            r"--from-sweep", "--n", "3")
    refused(data, out, r"--beta 1.5: must be in \[0, 1\]", "--n", "3", "--beta", "1.5")
    refused(data, out, r"--strategy best: one of band, closest", "--n", "3", "--strategy",
            "best")
    refused(data, out, r"profile 'nope' not found", "--n", "3", "--beta", "0.5",
            "--profile", "nope")
    refused(data, out, r"--from-sweep .*nosweep: no trials results", "--n", "3",
            "--from-sweep", str(tmp_path / "nosweep"))
    data["config"].write_text("model: {n_classes: 4}\n")
    refused(data, out, r"model.n_classes is set from the data", "--n", "3", "--beta", "0.5")
    refused(data, out, r"no campaign there yet; start one with --labelled",
            args=["select", "--out", str(out), "--n", "3"])


def test_beta_from_a_finished_sweep_is_the_best_at_the_nearest_n(tmp_path):
    from analysis.schema import to_table
    from jobs.campaign import best_beta

    rows = [{"trial": f"t{k}", "N": n, "beta": b, "seed": s, "mode": "predicted",
             "status": "COMPLETED", "ap50": ap}
            for k, (n, b, s, ap) in enumerate([(20, 0.3, 0, 0.1), (20, 0.6, 0, 0.3),
                                               (20, 0.6, 1, 0.1), (40, 0.3, 0, 0.5),
                                               (40, 0.6, 0, 0.2)])]
    folder = tmp_path / "sweep" / "results" / "trials" / "mode=predicted"
    folder.mkdir(parents=True)
    import pyarrow.parquet as pq

    table = to_table("trials", rows).drop_columns(["mode"])
    pq.write_table(table, folder / "all.parquet")
    beta, note = best_beta(tmp_path / "sweep", 17)
    assert beta == 0.6 and "at N = 20" in note       # 0.2 mean over 2 seeds beats 0.1
    assert best_beta(tmp_path / "sweep", 35)[0] == 0.3


# -- a campaign: rounds, pre-annotations, budget, MLflow ------------------------------------

def _check_round(out: Path, n: int, round_no: int, pool_file: Path) -> dict:
    """The outputs of a finished round: N' rows, COCO pre-annotations pycocotools reads,
    masks at each image's size, a budget, a FINISHED MLflow run."""
    import csv

    import pandas as pd
    from mlflow.tracking import MlflowClient
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    sel = list(csv.DictReader((out / "selection.csv").open()))
    assert len(sel) == n and [int(r["rank"]) for r in sel] == list(range(1, n + 1))
    assert list(sel[0]) == ["rank", "image_id", "file_name", "score_pred", "n_objects",
                            "expected_s"]
    pool = {im["id"]: im for im in json.loads(pool_file.read_text())["images"]}
    for r in sel:
        assert pool[int(r["image_id"])]["file_name"] == r["file_name"]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(out / "preannotations.json"))
        pre = json.loads((out / "preannotations.json").read_text())
        if pre["annotations"]:
            gt.loadRes(pre["annotations"])
    assert sorted(gt.getImgIds()) == sorted(int(r["image_id"]) for r in sel)
    assert {c["id"] for c in pre["categories"]} == {c["id"] for c in CATEGORIES}
    for a in pre["annotations"]:
        im = gt.imgs[a["image_id"]]
        with Image.open(Path(pool_file).parent / "images" / im["file_name"]) as f:
            assert (im["width"], im["height"]) == f.size
        m = mask_utils.decode({**a["segmentation"],
                               "counts": a["segmentation"]["counts"].encode()})
        assert m.shape == (im["height"], im["width"]) and a["iscrowd"] == 0
    scores = pd.read_parquet(out / "image_scores.parquet")
    assert len(scores) == len(pool) and scores["selected"].sum() == n
    assert set(scores["round"]) == {round_no}
    budget = json.loads((out / "budget.json").read_text())
    assert budget["n_selected"] == n and budget["total_days"] > 0
    state = json.loads((out / "campaign.json").read_text())
    run_id = state["rounds"][round_no - 1]["mlflow_run_id"]
    client = MlflowClient(tracking_uri=state["tracking_uri"])
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["round"] == str(round_no)
    assert run.data.metrics["n_selected"] == n
    assert {a.path for a in client.list_artifacts(run_id)} == {
        "selection.csv", "preannotations.json", "image_scores.parquet", "budget.json"}
    return {"selected": [int(r["image_id"]) for r in sel], "scores": scores,
            "budget": budget, "state": state}


def campaign(d: dict[str, Path], out: Path, profile: str) -> dict:
    """Two rounds of a campaign through the `basis` command (a subprocess, as a user)."""
    from tests.jobs.test_sweep_e2e import basis

    first = basis(*round1(d, out, "--n", "5", "--beta", "0.5", "--profile", profile))
    assert "budget:  " in first.stdout and "days (Table 1 with" in first.stdout
    assert "IoU-W-RSIS (the pool carries IL+C counts)" in first.stdout
    assert "12 labelled images, 20 of 21 pool images unlabelled" in first.stdout
    r1 = _check_round(out, 5, 1, d["pool"])
    assert 900 not in r1["selected"]              # the labelled image listed in the pool
    assert r1["scores"].set_index("image_id").loc[900, "labelled"]
    returned = annotate(out / "preannotations.json", d["truth"], out.parent / "ret.json",
                        renumber=True)           # as CVAT exports: its own ids
    added = basis("select", "--out", str(out), "--add-labels", str(returned))
    assert "5 images" in added.stdout and "renumbered" in added.stdout
    second = basis("select", "--out", str(out), "--n", "6", "--profile", profile)
    assert "17 labelled images, 15 of 21 pool images unlabelled" in second.stdout
    r2 = _check_round(out, 6, 2, d["pool"])
    assert not set(r2["selected"]) & (set(r1["selected"]) | {900})
    labelled = set(r2["scores"].loc[r2["scores"]["labelled"], "image_id"])
    assert labelled == set(r1["selected"]) | {900}
    train = json.loads((out / "rounds" / "r2" / "train.json").read_text())
    assert len(train["images"]) == 12 + 5          # labelled ∪ returned
    stages = sorted(p.name.split("-")[0] for p in (out / "stages").iterdir() if p.is_dir())
    assert stages == ["init", "init", "score", "score"]
    return {"r1": r1, "r2": r2}


@pytest.mark.slow
def test_a_campaign_on_the_local_profile(data, tmp_path):
    got = campaign(data, tmp_path / "campaign", "local")
    budget = got["r1"]["budget"]
    assert budget["n_ilc"] == 20 - 5 and budget["network"].startswith("IoU-W-RSIS")


@pytest.mark.slow
@pytest.mark.slurm
def test_a_campaign_on_the_local_slurm(slurm_cluster, data, tmp_path):
    from jobs import dag
    from jobs.specs import StageFolder

    out = tmp_path / "campaign"
    campaign(data, out, "local-slurm")
    ids = []
    for folder in (p for p in (out / "stages").iterdir() if p.is_dir()):
        subs = dag.submissions(StageFolder(folder))
        assert [s.executor for s in subs] == ["slurm"]
        ids.append(subs[0].job_id)
    for _ in range(30):     # the accounting record may trail the job's end a little
        acct = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,JobName,State",
                               "-j", ",".join(ids)], capture_output=True, text=True,
                              check=True).stdout.split()
        if not any(line.split("|")[2] in ("RUNNING", "COMPLETING") for line in acct):
            break
        time.sleep(1)
    assert len(acct) == 4 and all(line.split("|")[2] == "COMPLETED" for line in acct), acct
    names = {line.split("|")[1] for line in acct}
    assert names == {"basis-select-campaign-init", "basis-select-campaign-score"}


def test_plain_rsis_without_counts_and_the_labels_check(pristine, tmp_path):
    """No IL+C counts: plain RSIS, no IL+C cost; the pool's masks give the oracle. Run in
    this process on submitit's debug executor. Then the annotators' file: every
    mismatch is refused in one line and changes nothing; the right one is merged once."""
    d = make(tmp_path / "data", n_labelled=8, n_pool=10, counts=False, pool_masks=True)
    (tmp_path / "debug.yaml").write_text("executor: debug\n")
    out = tmp_path / "campaign"
    rc, stdout, stderr = run_main(*round1(d, out, "--n", "3", "--strategy", "highest",
                                          "--profile", str(tmp_path / "debug.yaml")))
    assert rc == 0, stderr
    assert "RSIS with the IoU branch (the pool has no IL+C counts)" in stdout
    r1 = _check_round(out, 3, 1, d["pool"])
    assert r1["budget"]["n_ilc"] == 0 and r1["budget"]["ilc_s"] == 0.0
    assert r1["scores"]["n_weak"].isna().all() and r1["scores"]["iou_true"].notna().all()
    spec = json.loads(next((out / "stages").glob("init-*/config.json")).read_text())
    assert spec["recipe"]["model"]["weak"] is False and spec["recipe"]["model"]["iou_head"]
    assert spec["recipe"]["model"]["n_classes"] == 3

    state = (out / "campaign.json").read_bytes()
    stages = sorted(p.name for p in (out / "stages").iterdir())
    # the next round waits for the labels
    rc, _, stderr = run_main("select", "--out", str(out), "--n", "2")
    assert rc == 2 and "round 1's 3 selected images have no labels yet" in stderr
    rc, _, stderr = run_main(*round1(d, out, "--n", "2"))
    assert rc == 2 and "holds a campaign already (round 1)" in stderr
    good = json.loads(annotate(out / "preannotations.json", d["truth"],
                               tmp_path / "ret.json").read_text())
    extra = json.loads(Path(d["truth"]).read_text())["images"]
    other = next(im for im in extra if im["id"] not in r1["selected"])
    cases = [({**good, "images": good["images"] + [other]},
              rf"image {other['id']} \('{other['file_name']}'\) is not in round 1's selection"),
             ({**good, "images": good["images"][1:],
               "annotations": [a for a in good["annotations"]
                               if a["image_id"] != good["images"][0]["id"]]},
              r"1 of round 1's 3 selected images are missing"),
             ({**good, "categories": good["categories"][:2] + [{"id": 11, "name": "star"}]},
              r"category 11 \('star'\) is not a category of the labelled set")]
    for bad, pattern in cases:
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        rc, _, stderr = run_main("select", "--out", str(out), "--add-labels",
                                 str(tmp_path / "bad.json"))
        lines = stderr.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and re.search(pattern, lines[0]), \
            stderr
        assert (out / "campaign.json").read_bytes() == state
        assert not (out / "rounds" / "r1" / "returned.json").exists()
    assert sorted(p.name for p in (out / "stages").iterdir()) == stages   # nothing submitted
    rc, stdout, stderr = run_main("select", "--out", str(out), "--add-labels",
                                  str(tmp_path / "ret.json"))
    assert rc == 0 and "round 1: 3 images" in stdout, stderr
    returned = json.loads((out / "rounds" / "r1" / "returned.json").read_text())
    assert sorted(im["id"] for im in returned["images"]) == sorted(r1["selected"])
    rc, _, stderr = run_main("select", "--out", str(out), "--add-labels",
                             str(tmp_path / "ret.json"))
    assert rc == 2 and "round 1's labels were added already" in stderr


def test_select_help_has_examples():
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(["select", "--help"])
    text = out.getvalue()
    assert "examples:" in text and "--add-labels" in text and "16-bit images are refused" in text
    assert "basis select --out runs/cats --n 50" in text
