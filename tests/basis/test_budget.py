"""Annotation costs against the paper's Table 1 and budgets against Tables 6 and 8."""
from __future__ import annotations

import dataclasses

import pytest

from basis.budget import (
    AnnotationCosts,
    annotation_budget,
    budget_seconds,
    seconds_to_days,
    segmentation_budget,
)

C = AnnotationCosts()


def test_table1_to_two_decimals():
    assert C.absent_classes_per_image == pytest.approx(18.5)
    assert round(C.t_il, 2) == 20.00
    assert round(C.t_ilc, 2) == 22.22
    assert round(C.t_full, 2) == 239.70
    assert round(C.t_bb, 2) == 38.10
    assert C.table1() == pytest.approx({"IL": 20, "IL+C": 22.22, "Full": 239.7, "BB": 38.1})


def test_costs_follow_the_statistics():
    coco_like = dataclasses.replace(C, n_classes=80, classes_per_image=2.9, objects_per_image=7.3)
    assert coco_like.t_il == pytest.approx(80.0)
    assert coco_like.t_full == pytest.approx(77.1 + 7.3 * 79.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        C.s_mask = 1.0  # type: ignore[misc]


def test_budget_seconds_and_days():
    assert budget_seconds(400, 1064) == pytest.approx(400 * 239.7 + 1064 * 22.22)
    assert seconds_to_days(86_400) == 1.0
    with pytest.raises(ValueError, match="n_weak"):
        budget_seconds(1, -1)


# Paper Table 6 (9118 additional weak images) and Table 8 (4559), days.
TABLE6 = {
    ("random", 200): (0.55, 2.90), ("random", 400): (1.11, 3.45), ("random", 800): (2.22, 4.56),
    ("closest", 200): (0.90, 3.25), ("closest", 400): (1.38, 3.73), ("closest", 800): (2.39, 4.73),
}
TABLE8 = {
    ("random", 200): (0.55, 1.73), ("random", 400): (1.11, 2.28), ("random", 800): (2.22, 3.39),
    ("closest", 200): (0.90, 2.08), ("closest", 400): (1.38, 2.55), ("closest", 800): (2.39, 3.56),
}
# Cells our formula does not reproduce, with the value it gives (see basis/budget.py).
MISMATCH = {
    ("annotation", "closest", 200): 0.8799,    # paper 0.90 (Tables 6 and 8)
    ("table6", "closest", 200): 3.2249,        # paper 3.25
    ("table6", "closest", 800): 4.7351,        # paper 4.73 (2.39 + 2.34 summed rounded?)
    ("table8", "closest", 200): 2.0524,        # paper 2.08
    ("table8", "closest", 400): 2.5558,        # paper 2.55 (1.38 + 1.17 summed rounded?)
}


@pytest.mark.parametrize("sel, n", sorted(TABLE6))
def test_annotation_network_budget(sel, n):
    days = annotation_budget(n, sel).days
    if ("annotation", sel, n) in MISMATCH:
        assert days == pytest.approx(MISMATCH["annotation", sel, n], abs=1e-4)
        assert round(days, 2) != TABLE6[sel, n][0]
    else:
        assert round(days, 2) == TABLE6[sel, n][0]


@pytest.mark.parametrize("table, extra, paper",
                         [("table6", 9118, TABLE6), ("table8", 4559, TABLE8)])
@pytest.mark.parametrize("sel, n", sorted(TABLE6))
def test_segmentation_network_budget(table, extra, paper, sel, n):
    days = segmentation_budget(n, extra, sel).days
    if (table, sel, n) in MISMATCH:
        assert days == pytest.approx(MISMATCH[table, sel, n], abs=1e-4)
        assert round(days, 2) != paper[sel, n][1]
    else:
        assert round(days, 2) == paper[sel, n][1]


def test_worked_examples_from_the_brief():
    # random N=400 → 1.11, N=800 → 2.22; mask-guided needs IL+C on the 1464−N rest.
    assert round(annotation_budget(400, "random").days, 2) == 1.11
    assert round(annotation_budget(800, "random").days, 2) == 2.22
    b = annotation_budget(400, "closest")
    assert (b.n_strong, b.n_weak) == (400, 1064)
    assert b.seconds == pytest.approx(400 * 239.7 + 1064 * 22.22)
    assert round(b.days, 2) == 1.38
    assert round(annotation_budget(800, "closest").days, 2) == 2.39
    # N=200 gives 0.88 days; this contradicts the paper's 0.90. The paper's 0.90 is
    # 0.35 above random, i.e. 1364 (= 1464 − 100) IL+C images, not 1264.
    assert round(annotation_budget(200, "closest").days, 2) == 0.88
    assert seconds_to_days(200 * 239.7 + 1364 * 22.22) == pytest.approx(0.9056, abs=1e-4)


def test_every_score_based_strategy_pays_for_the_pool():
    for sel in ("closest", "band", "lowest", "highest", "stratified"):
        assert annotation_budget(300, sel, pool_size=1000).n_weak == 700
    assert annotation_budget(300, "random", pool_size=1000).n_weak == 0
    s = segmentation_budget(300, 50, "closest", pool_size=1000)
    assert (s.n_strong, s.n_weak) == (300, 750)


def test_budget_errors():
    with pytest.raises(ValueError, match="selection must be one of"):
        annotation_budget(10, "mask-guided")
    with pytest.raises(ValueError, match="n_strong=2000 is larger than pool_size=1464"):
        annotation_budget(2000, "random")
    with pytest.raises(ValueError, match="n_additional_weak"):
        segmentation_budget(10, -5, "random")
