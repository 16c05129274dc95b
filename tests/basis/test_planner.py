"""Budget planner: which configurations fit, their cost, and the AP a sweep measured."""
from __future__ import annotations

import dataclasses
import math

import pytest

from basis.budget import AnnotationCosts
from basis.planner import Plan, expected_ap, plan, results_from_trials

C = AnnotationCosts()


def keys(options) -> list[tuple[int, str, float]]:
    return [(o.N, o.selection, o.pool_fraction) for o in options]


def test_paper_costs_1_2_days_admit_random_400_not_mask_guided_400():
    p = plan(1.2, N=[200, 400, 800], pool_fractions=[0.0])
    # random N=400: 400 · 239.7 s = 1.11 days; closest N=400: + 1064 · 22.22 s = 1.38 days
    assert keys(p.fits) == [(200, "random", 0.0), (200, "closest", 0.0), (400, "random", 0.0)]
    assert [round(o.days, 2) for o in p.fits] == [0.55, 0.88, 1.11]
    assert keys(p.over)[0] == (400, "closest", 0.0) and round(p.over[0].days, 2) == 1.38
    assert p.fits[1].budget.n_weak == 1464 - 200
    assert p.best is None          # no results joined


def test_sorted_by_cost_and_pool_fractions_use_the_additional_pool():
    p = plan(100.0)
    costs = [o.budget.seconds for o in p.fits]
    assert costs == sorted(costs) and len(p.fits) == 3 * 2 * 3 and not p.over
    seg = {(o.N, o.selection, o.pool_fraction): o for o in p.fits}
    # Table 8 (50 %: 4559 images) and Table 6 (9118) random rows
    assert seg[(400, "random", 0.5)].n_additional == 4559
    assert round(seg[(400, "random", 0.5)].days, 2) == 2.28
    assert round(seg[(400, "random", 1.0)].days, 2) == 3.45
    assert round(seg[(800, "closest", 1.0)].days, 3) == 4.735
    assert seg[(800, "closest", 1.0)].network == "segmentation"
    assert seg[(800, "closest", 0.0)].network == "annotation"


def test_the_limit_is_inclusive():
    exact = 400 * C.t_full / 86_400
    assert keys(plan(exact, N=[400], pool_fractions=[0]).fits) == [(400, "random", 0.0)]


def test_other_statistics_change_the_cost():
    coco_like = dataclasses.replace(C, n_classes=80, classes_per_image=2.9, objects_per_image=7.3)
    p = plan(10.0, costs=coco_like, pool_size=1000, additional=0, N=[100],
             pool_fractions=[0], selections=["random"])
    assert p.fits[0].budget.seconds == pytest.approx(100 * coco_like.t_full)


RESULTS = [
    {"N": 400, "mode": "random", "beta": None, "seed": 0, "ap50": 0.40, "network": "annotation"},
    {"N": 400, "mode": "random", "beta": None, "seed": 1, "ap50": 0.50, "network": "annotation"},
    {"N": 200, "mode": "random", "beta": None, "seed": 0, "ap50": 0.30, "network": "annotation"},
    # closest at N=400: β=0.3 averages 0.55, β=0.7 averages 0.48 → best β 0.3
    {"N": 400, "mode": "predicted", "beta": 0.3, "seed": 0, "ap50": 0.50},
    {"N": 400, "mode": "predicted", "beta": 0.3, "seed": 1, "ap50": 0.60},
    {"N": 400, "mode": "predicted", "beta": 0.7, "seed": 0, "ap50": 0.48},
    # oracle is not a plannable configuration: never joined by default
    {"N": 400, "mode": "oracle", "beta": 0.5, "seed": 0, "ap50": 0.99},
    {"N": 200, "mode": "predicted", "beta": 0.5, "seed": 0, "ap50": 0.35},
    {"N": 200, "mode": "random", "beta": None, "seed": 0, "ap50": 0.45,
     "network": "segmentation", "pool_fraction": 0.5},
    {"N": 200, "mode": "random", "beta": None, "seed": 1, "ap50": float("nan"),
     "network": "segmentation", "pool_fraction": 0.5},     # a failed trial: skipped
]


def test_expected_ap_mean_over_seeds_and_best_beta():
    e = expected_ap(RESULTS, 400, "random", 0.0)
    assert e.ap50 == pytest.approx(0.45) and e.n_seeds == 2 and e.beta is None
    e = expected_ap(RESULTS, 400, "closest", 0.0)
    assert e.ap50 == pytest.approx(0.55) and e.beta == 0.3 and e.mode == "predicted"
    assert expected_ap(RESULTS, 400, "closest", 0.0, modes={"closest": ("oracle",)}).ap50 == 0.99
    e = expected_ap(RESULTS, 200, "random", 0.5)
    assert e.ap50 == pytest.approx(0.45) and e.n_seeds == 1
    assert expected_ap(RESULTS, 200, "random", 1.0) is None
    assert expected_ap(RESULTS, 800, "random", 0.0) is None


def test_best_within_budget():
    p = plan(1.2, N=[200, 400], pool_fractions=[0.0], results=RESULTS)
    assert keys(p.fits) == [(200, "random", 0.0), (200, "closest", 0.0), (400, "random", 0.0)]
    assert p.best is p.fits[2] and p.best.expected.ap50 == pytest.approx(0.45)
    # with 1.4 days the mask-guided N=400 (1.38 days, 55 %) fits and wins
    p = plan(1.4, N=[200, 400], pool_fractions=[0.0], results=RESULTS)
    assert (p.best.N, p.best.selection) == (400, "closest")
    md = p.to_markdown()
    assert "| 1.38 | 400 | closest | 0 (0%) | annotation | 400 | 1064 | 55.0 | 0.3 | 2 |" in md
    assert "Best expected AP@0.5 within budget: 55.0 %" in md


def test_markdown_when_nothing_fits():
    md = plan(0.1).to_markdown()
    assert "Nothing fits within 0.10 days." in md
    assert "the cheapest needs 0.55 days: N=200 random, annotation network only." in md


def test_results_from_trials():
    trials = [
        {"trial": "predicted-0.3-400-0", "N": 400, "beta": 0.3, "seed": 0, "mode": "predicted",
         "status": "COMPLETED", "ap50": 0.5, "seg_ap50": 0.6, "pool_fraction": None},
        {"trial": "random-x-400-0", "N": 400, "beta": float("nan"), "seed": 0, "mode": "random",
         "status": "COMPLETED", "ap50": 0.4, "seg_ap50": float("nan"), "pool_fraction": 0.5},
        {"trial": "random-x-400-1", "N": 400, "beta": None, "seed": 1, "mode": "random",
         "status": "FAILED", "ap50": None},
    ]
    rows = results_from_trials(trials)
    assert rows == [
        {"N": 400, "mode": "predicted", "beta": 0.3, "seed": 0, "ap50": 0.5,
         "network": "annotation", "pool_fraction": None},
        {"N": 400, "mode": "predicted", "beta": 0.3, "seed": 0, "ap50": 0.6,
         "network": "segmentation", "pool_fraction": 1.0},
        {"N": 400, "mode": "random", "beta": None, "seed": 0, "ap50": 0.4,
         "network": "annotation", "pool_fraction": None},
    ]
    assert expected_ap(rows, 400, "closest", 1.0).ap50 == 0.6


@pytest.mark.parametrize("kwargs, match", [
    ({"days": -1.0}, "days must be a finite number > 0"),
    ({"days": 0}, "days must be a finite number > 0"),
    ({"days": math.inf}, "days must be a finite number > 0"),
    ({"days": "2"}, "days must be"),
    ({"days": 1, "N": []}, "N must list"),
    ({"days": 1, "N": [0]}, r"N=0 must be an int in \[1, pool_size=1464\]"),
    ({"days": 1, "N": [2000]}, "N=2000"),
    ({"days": 1, "pool_size": 0}, "pool_size must be an int >= 1"),
    ({"days": 1, "additional": -5}, "additional must be an int >= 0"),
    ({"days": 1, "pool_fractions": [1.5]}, r"must be a number in \[0, 1\]"),
    ({"days": 1, "pool_fractions": []}, "pool_fractions must list"),
    ({"days": 1, "additional": 0, "pool_fractions": [0, 0.5]}, "needs an additional pool"),
    ({"days": 1, "selections": ["nearest"]}, "selection must be one of"),
    ({"days": 1, "results": [{"N": 200, "mode": "random"}]}, r"lacks \['ap50'\]"),
    ({"days": 1, "results": [{"N": 200, "mode": "random", "ap50": 54.2}]},
     r"ap50 must be in \[0, 1\]"),
    ({"days": 1, "results": [{"N": 200, "mode": "x", "ap50": 0.5, "network": "seg"}]},
     "network must be one of"),
])
def test_bad_input(kwargs, match):
    days = kwargs.pop("days")
    with pytest.raises(ValueError, match=match):
        plan(days, **kwargs)


def test_plan_is_a_frozen_value():
    p = plan(2.0)
    assert isinstance(p, Plan)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.days = 3.0
