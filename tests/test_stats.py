import math

import numpy as np
import pytest
from scipy import stats as sps

from swapbench.eval import paired, stats


def _clustered(per_prompt_successes, seeds):
    outcomes, clusters = [], []
    for prompt, k in enumerate(per_prompt_successes):
        outcomes += [True] * k + [False] * (seeds - k)
        clusters += [f"prompt {prompt}"] * seeds
    return outcomes, clusters


def test_cluster_bootstrap_equals_a_brute_force_resampling_of_prompts():
    # Three prompts of unequal size: replicate r takes the drawn prompts whole, seeds inside.
    rows = {"a": [1, 1, 0], "b": [0, 0], "c": [1, 1, 1, 1]}
    outcomes = [v for p in rows for v in rows[p]]
    clusters = [p for p in rows for _ in rows[p]]
    reps, seed = 300, 7
    fast = stats.cluster_bootstrap_means(outcomes, clusters, reps, seed)
    rng = np.random.default_rng(seed)
    names = list(rows)
    brute = []
    for _ in range(reps):
        drawn = [names[i] for i in rng.integers(0, 3, size=3)]
        resampled = [v for p in drawn for v in rows[p]]
        brute.append(sum(resampled) / len(resampled))
    assert fast == pytest.approx(brute, abs=1e-12)
    # The interval is Wilson at n / deff, deff from that bootstrap's variance (G/(G-1) corrected), and
    # the prompts' spread sets it (deff > 1), so its z is t with G - 1 = 2 degrees of freedom.
    est = stats.clustered_proportion([bool(v) for v in outcomes], clusters, reps, seed)
    p, n = 6 / 9, 9
    deff = max(1.0, np.var(brute) * 3 / 2 / (p * (1 - p) / n))
    assert est.design_effect == pytest.approx(deff) and deff > 1 and est.df == 2
    assert est.ci95 == pytest.approx(stats.wilson(p * n / deff, n / deff, 4.302653))
    assert (est.n, est.n_clusters, est.value) == (9, 3, pytest.approx(p))


def test_a_prompt_that_fails_for_every_seed_widens_its_groups_interval():
    spread = stats.clustered_proportion(*_clustered([8, 7, 8, 7], 10), 1000, 0)
    one_prompt_fails = stats.clustered_proportion(*_clustered([10, 10, 10, 0], 10), 1000, 0)
    assert spread.value == one_prompt_fails.value == 0.75
    width = lambda e: e.ci95[1] - e.ci95[0]  # noqa: E731
    plain = stats.wilson(30, 40)
    assert width(spread) == pytest.approx(plain[1] - plain[0])  # no between-prompt spread: Wilson itself
    assert width(one_prompt_fails) > 2 * width(spread)
    assert one_prompt_fails.design_effect > 4 and one_prompt_fails.ci95[0] < 0.45


def test_singleton_clusters_and_certain_outcomes_give_the_plain_wilson_interval():
    est = stats.clustered_proportion([True] * 7 + [False] * 3, list(range(10)), 1000, 0)
    assert est.ci95 == stats.wilson(7, 10) and est.n_clusters == 10
    all_pass = stats.clustered_proportion(*_clustered([5, 5, 5], 5), 1000, 0)
    assert all_pass.ci95 == pytest.approx(stats.wilson(15, 15))


def test_intervals_are_seeded():
    data = _clustered([9, 2, 6, 10, 4], 10)
    assert stats.clustered_proportion(*data, 500, 3) == stats.clustered_proportion(*data, 500, 3)


def test_clustered_mean_is_never_narrower_than_independent_rows_and_takes_t_over_prompts():
    x = [1.0, 1.2, 0.9, 5.0, 5.1, 4.9, 3.0, 3.1, 2.9]
    clusters = ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    est = stats.clustered_mean(x, clusters, 1000, 0)
    se_iid = np.std(x, ddof=1) / math.sqrt(9)
    se_cluster = stats.cluster_se(x, clusters, 1000, 0)
    assert se_cluster > 2 * se_iid and est.df == 2  # three prompts' spread: t with 2 degrees of freedom
    assert (est.ci95[1] - est.ci95[0]) / 2 == pytest.approx(4.302653 * se_cluster)
    assert est.value == pytest.approx(np.mean(x))
    rows = stats.clustered_mean([1.0, 2.0, 4.0, 3.0], list(range(4)), 1000, 0)  # one row per cluster
    half = 3.182446 * np.std([1, 2, 4, 3], ddof=1) / 2
    assert rows.df == 3 and (rows.ci95[1] - rows.ci95[0]) / 2 == pytest.approx(half)


def test_t_quantile_is_the_normal_one_at_infinite_degrees_of_freedom():
    assert stats.t95(math.inf) == stats.Z95 == pytest.approx(sps.norm.ppf(0.975), abs=1e-6)
    assert stats.t95(1) == pytest.approx(12.706205) and stats.t95(7) == pytest.approx(2.364624)


def test_fewer_than_three_prompts_give_the_whole_range_and_no_evidence():
    outcomes, clusters = _clustered([10, 2], 10)  # two prompts, ten seeds each
    share = stats.clustered_proportion(outcomes, clusters, 1000, 0)
    assert share.value == 0.6 and share.ci95 == (0.0, 1.0)
    assert stats.too_few_prompts(share.n, share.n_clusters)
    mean = stats.clustered_mean([float(v) for v in outcomes], clusters, 1000, 0)
    assert mean.value == 0.6 and mean.ci95 == (-math.inf, math.inf)
    before = [True] * 20
    diff = stats.paired(before, outcomes, clusters, 1000, 0, binary=True)
    # McNemar alone would read 8 flips in 20 rows as p = 0.008; two prompts cannot show a change
    assert (diff.diff, diff.ci95, diff.p, diff.discordant) == (pytest.approx(-0.4), (-1.0, 1.0), 1.0, (8, 0))
    one_prompt = stats.paired([1.0, 2.0], [1.5, 2.5], ["a", "a"], 100, 0, binary=False)
    assert one_prompt.ci95 == (-math.inf, math.inf)
    # rows without prompt labels are their own clusters: the plain Wilson interval
    assert not stats.too_few_prompts(2, 2) and stats.too_few_prompts(2, 1)
    assert stats.clustered_proportion([True, False], [0, 1], 100, 0).ci95 == stats.wilson(1, 2)


def test_mcnemar_matches_a_hand_count_and_scipy():
    first = [1, 1, 1, 1, 0, 0, 1, 0, 1, 1, 1, 1]
    second = [1, 0, 0, 0, 0, 1, 1, 0, 0, 1, 0, 1]
    p, b, c = stats.mcnemar(first, second)
    assert (b, c) == (5, 1)  # first-only successes at rows 1, 2, 3, 8, 10; second-only at row 5
    # Exact two-sided: 2 * P(X <= 1), X ~ Bin(6, 1/2) = 2 * 7/64
    assert p == pytest.approx(14 / 64)
    assert p == pytest.approx(sps.binomtest(1, 6, 0.5).pvalue)
    assert stats.mcnemar(first, first) == (1.0, 0, 0)


def test_holm_on_a_known_example():
    # Holm (1979) step-down: sorted p 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1, made monotone.
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == [1.0, 1.0]  # 2 x 0.5 caps at 1, and no later step may be smaller
    assert stats.holm([]) == []


def test_a_run_compared_with_itself_differs_by_zero_with_p_one():
    outcomes, clusters = _clustered([3, 5, 1, 4], 5)
    same = stats.paired(outcomes, outcomes, clusters, 500, 0, binary=True)
    assert (same.diff, same.p, same.discordant) == (0.0, 1.0, (0, 0))
    # no row differs, yet 20 rows cannot show that none ever would: half a row added to each cell of
    # the 2 x 2 table gives se = sqrt((1 / 22) / 22) = 1 / 22, with t at 19 degrees of freedom
    assert same.ci95 == pytest.approx((-2.093024 / 22, 2.093024 / 22))
    means = stats.paired([0.3, 0.7, 0.1], [0.3, 0.7, 0.1], ["a", "b", "c"], 500, 0, binary=False)
    assert (means.diff, means.p) == (0.0, 1.0)


def test_paired_p_follows_the_t_interval_where_the_prompts_spread_sets_it():
    # One prompt of six loses all ten seeds: McNemar reads 10 discordant rows (p = 0.002), but
    # which prompts a suite drew decides such a move, and the t interval over prompts holds 0.
    before, clusters = _clustered([10] * 6, 10)
    after, _ = _clustered([0] + [10] * 5, 10)
    result = stats.paired(before, after, clusters, 2000, 0, binary=True)
    se = stats.cluster_se(np.subtract(after, before, dtype=float), clusters, 2000, 0)
    assert result.df == 5 and result.se == pytest.approx(se) and stats.mcnemar(before, after)[0] < 0.01
    assert result.ci95 == pytest.approx((-1 / 6 - 2.570582 * se, -1 / 6 + 2.570582 * se))
    assert result.ci95[1] > 0
    assert result.p == pytest.approx(2 * sps.t.sf(1 / 6 / se, 5)) and result.p > 0.05
    means = stats.paired([0.0] * 60, [float(v) - 1 for v in after], clusters, 2000, 0, binary=False)
    assert means.p == pytest.approx(result.p) and means.ci95 == pytest.approx(result.ci95)


def test_paired_difference_of_a_clear_regression():
    before, clusters = _clustered([10, 10, 10, 10], 10)
    after, _ = _clustered([4, 5, 3, 4], 10)
    result = stats.paired(before, after, clusters, 1000, 0, binary=True)
    assert result.diff == pytest.approx(-0.6) and result.ci95[1] < -0.4
    assert result.discordant == (24, 0) and result.p == pytest.approx(2 * 0.5 ** 24)
    # the gate's test on the suite's rows: 24 rows worse, none better
    assert paired.worse_p(before, after, binary=True, higher_is_better=True) == pytest.approx(0.5 ** 24)
    assert paired.worse_p(before, after, binary=True, higher_is_better=False) == 1.0  # lower is better: improved


def test_the_gates_row_test_needs_more_than_a_few_changed_rows():
    before, _ = _clustered([5, 5], 5)
    after, _ = _clustered([3, 5], 5)
    # Two rows flipped: exact one-sided McNemar p = 0.25, no evidence of a regression.
    assert paired.worse_p(before, after, binary=True, higher_is_better=True) == pytest.approx(0.25)
    # Means: a paired t-test on the rows, one-sided.
    x, y = [1.0, 2.0, 3.0, 4.0], [0.5, 1.4, 2.6, 3.5]
    expected = sps.ttest_rel(y, x, alternative="less").pvalue
    assert paired.worse_p(x, y, binary=False, higher_is_better=True) == pytest.approx(expected)


def test_power_shrinks_with_seeds_until_the_prompts_floor():
    few = stats.detectable_difference(0.9, 8, 2, icc=0.2)
    many = stats.detectable_difference(0.9, 8, 64, icc=0.2)
    assert many < few
    assert stats.detectable_difference(0.9, 8, 10, icc=0.0) == pytest.approx(
        (1.959964 + 0.841621) * math.sqrt(2 * 0.09 / 80), rel=1e-5)
    m = stats.seeds_needed(0.15, 0.9, 8, icc=0.05)
    assert stats.detectable_difference(0.9, 8, m, 0.05) <= 0.15 < stats.detectable_difference(0.9, 8, m - 1, 0.05)
    assert stats.seeds_needed(0.01, 0.9, 8, icc=0.2) is None  # too few prompts: no number of seeds is enough
