import math

import pandas as pd
import pytest
from scipy import stats

from analysis import paired
from analysis.tables import to_markdown


def _trials():
    """4 seeds, N 40 and 80: random AP per seed, and predicted β = 0.5 = random + a
    per-seed gain; seed 3's random arm at N=80 failed, so that seed has no pair there."""
    rnd = {40: [0.10, 0.20, 0.30, 0.40], 80: [0.30, 0.20, 0.50, 0.40]}
    gain = {40: [0.05, 0.02, -0.01, 0.06], 80: [0.10, 0.00, 0.04, 0.02]}
    rows = []
    for n in (40, 80):
        for seed in range(4):
            failed = n == 80 and seed == 3
            rows.append(dict(N=n, beta=None, seed=seed, mode="random",
                             status="FAILED" if failed else "COMPLETED",
                             ap50=math.nan if failed else rnd[n][seed],
                             seg_ap50=None if failed else rnd[n][seed] + 0.10,
                             ctl_ap50=None if failed else rnd[n][seed] + 0.05))
            ap = rnd[n][seed] + gain[n][seed]
            rows.append(dict(N=n, beta=0.5, seed=seed, mode="predicted", status="COMPLETED",
                             ap50=ap, seg_ap50=ap + 0.20 - 0.01 * seed, ctl_ap50=ap + 0.15))
    return pd.DataFrame(rows), gain


def test_differences_pair_each_arm_with_random_of_the_same_seed_and_n():
    trials, gain = _trials()
    d = paired.differences(trials)
    assert set(d["arm"]) == {"predicted, β = 0.5"}
    got = d.set_index(["N", "seed"])["diff"]
    want = {(40, s): gain[40][s] for s in range(4)} | {(80, s): gain[80][s] for s in range(3)}
    assert set(got.index) == set(want)          # seed 3 at N=80: its random arm failed
    for key, value in want.items():
        assert got.loc[key] == pytest.approx(value, abs=1e-12)


def test_summary_is_the_paired_t_interval_of_the_differences():
    trials, gain = _trials()
    s = paired.summary(paired.differences(trials)).set_index("N")
    for n, k in ((40, 4), (80, 3)):
        d = gain[n][:k]
        mean = sum(d) / k
        sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (k - 1))
        half = stats.t.ppf(0.975, k - 1) * sd / math.sqrt(k)
        row = s.loc[n]
        assert row["n"] == k
        assert row["mean"] == pytest.approx(mean)
        assert row["sd"] == pytest.approx(sd)
        assert row["ci_lo"] == pytest.approx(mean - half)
        assert row["ci_hi"] == pytest.approx(mean + half)
        assert row["n_positive"] == sum(x > 1e-12 for x in d)
        assert row["p"] == pytest.approx(stats.ttest_1samp(d, 0.0).pvalue)


def test_one_pair_has_a_mean_but_no_interval():
    out = paired.describe(pd.Series([0.3]))
    assert out["n"] == 1 and out["mean"] == pytest.approx(0.3)
    assert math.isnan(out["ci_lo"]) and math.isnan(out["sd"]) and math.isnan(out["p"])


def test_network_differences_within_trials_and_against_random():
    trials, gain = _trials()
    d = paired.network_differences(trials)
    arms = set(d["arm"])
    assert arms == {"seg − strong-only (random)", "seg − annotation (random)",
                    "seg − strong-only (mask-guided)", "seg − annotation (mask-guided)",
                    "mask-guided − random (seg)"}
    by = {a: part.set_index(["N", "seed"])["diff"] for a, part in d.groupby("arm")}
    assert by["seg − strong-only (random)"].to_numpy() == pytest.approx([0.05] * 7)
    assert by["seg − annotation (mask-guided)"].loc[(40, 2)] == pytest.approx(0.18)
    # mask-guided seg − random seg = gain + 0.20 − 0.01·seed − 0.10
    for (n, seed), v in by["mask-guided − random (seg)"].items():
        assert v == pytest.approx(gain[n][seed] + 0.10 - 0.01 * seed)
    assert len(by["mask-guided − random (seg)"]) == 7


def test_paired_table_cells_show_the_interval_and_the_positive_seeds():
    trials, gain = _trials()
    t = paired.table(paired.summary(paired.differences(trials)), "Paired", "Δ AP")
    md = to_markdown(t)
    row = [line for line in md.splitlines() if line.startswith("| predicted, β = 0.5 |")]
    mean40 = 100 * sum(gain[40]) / 4
    assert row and f"{mean40:+.1f} [" in row[0]
    assert "(3/4 > 0)" in row[0] and "(2/3 > 0)" in row[0]
    assert paired.table(paired.summary(paired.differences(trials.iloc[0:0])),
                        "Paired", "Δ").absent


def test_basis_tables_paired_on_a_sweep_folder(sweep):
    from analysis.paired import render

    text = render(str(sweep))
    # the fixture: predicted β = 0.3 at N=40 is random + 0.15 on both seeds
    line = [x for x in text.splitlines() if x.startswith("| predicted, β = 0.3 |")][0]
    assert "+15.0 [+15.0, +15.0] (2/2 > 0)" in line
    assert "Table 5, segmentation network" in text and "Table 7" in text
