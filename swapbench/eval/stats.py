"""Statistics for clustered outcomes: intervals, paired comparisons, multiplicity and power.

Images come in clusters: one prompt drawn with several seeds. A prompt the model cannot draw fails
for every seed, so outcomes inside a prompt are correlated and an interval that counts images as
independent is too narrow exactly where runs differ. Everything here resamples prompts (clusters)
with their seeds inside, from a seeded generator, so the same inputs give the same numbers.

A variance read from the spread of G prompts is itself an estimate with G - 1 degrees of freedom:
where it sets an interval's width, the interval takes Student's t quantile with G - 1 degrees of
freedom, not the normal one (at the 3-8 prompts a suite has per metric the normal quantile covered
as little as 80%, docs/ci.md "Interval coverage"). Below ``MIN_PROMPTS`` prompts no interval over prompts is
honest: the interval is then the whole possible range and its ``interval`` says so.

- proportions: the Wilson score interval at the cluster bootstrap's effective sample size
  ``n / deff`` (Kish's design effect: bootstrap variance of the share over prompts / binomial
  variance, never below 1). Wilson keeps its good behaviour at 0 and 1; the design effect carries
  the clustering, and its z is t with G - 1 degrees of freedom when deff > 1 (the prompts' spread
  sets the width), Wilson's own normal z when the binomial variance does. With one row per
  cluster it is the plain Wilson interval.
- means: mean +- t standard errors, the larger of the cluster-bootstrap one (G - 1 degrees of
  freedom) and the independent-rows one (n - 1).
- paired differences (two runs or tuned vs base, row by row on (prompt, seed)): mean difference,
  standard error from a paired cluster bootstrap (never below the independent-rows one, for
  shares Agresti and Min's from the discordant counts), a t interval with the degrees of freedom
  of the standard error used, and its two-sided t p-value; for binary outcomes the p-value is also
  never below the exact McNemar one (``scipy.stats.binomtest`` on the discordant pairs). Holm
  across the metrics compared.
- agreement of two judges on the same images: Cohen's kappa +- t cluster-bootstrap standard errors
  (G - 1 degrees of freedom), within [-1, 1].
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

Z95 = 1.959964
"""The normal two-sided 95% quantile: t95 at infinite degrees of freedom."""
MIN_PROMPTS = 3
"""Prompts an interval over prompts needs: with two, a variance read from their spread has one
degree of freedom and the binomial floor hides it whenever the two happen to agree."""
TOO_FEW_PROMPTS = f"none: fewer than {MIN_PROMPTS} prompts, the interval is the whole possible range"


def t95(df: float) -> float:
    """Two-sided 95% quantile of Student's t with ``df`` degrees of freedom (``Z95`` at infinity)."""
    return Z95 if math.isinf(df) else float(sps.t.ppf(0.975, df))


def too_few_prompts(n_rows: int, n_clusters: int) -> bool:
    """Rows in fewer than ``MIN_PROMPTS`` clusters of several rows: no honest interval over prompts.
    Rows that are their own clusters (no prompt labels) need no prompts."""
    return n_clusters < min(MIN_PROMPTS, n_rows)


def wilson(successes: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (well behaved at 0 and 1, unlike the normal one);
    ``n`` may be an effective (non-integer) sample size."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(max(p * (1 - p), 0.0) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def cluster_index(clusters: Sequence[Hashable]) -> tuple[np.ndarray, int]:
    """Cluster ids 0..G-1 in order of first appearance, and G."""
    ids: dict[Hashable, int] = {}
    index = np.array([ids.setdefault(c, len(ids)) for c in clusters], dtype=np.int64)
    return index, len(ids)


def bootstrap_draws(n_clusters: int, reps: int, seed: int) -> np.ndarray:
    """(reps, G) cluster indices drawn with replacement: replicate r takes clusters draws[r] whole."""
    return np.random.default_rng(seed).integers(0, n_clusters, size=(reps, n_clusters))


def cluster_bootstrap_means(values: Sequence[float], clusters: Sequence[Hashable], reps: int, seed: int) -> np.ndarray:
    """The mean over rows of each cluster-bootstrap replicate (prompts resampled, their seeds inside).

    A replicate's mean is sum of the drawn clusters' sums / sum of their sizes (a ratio estimator,
    right also when clusters differ in size)."""
    x = np.asarray(values, dtype=float)
    index, g = cluster_index(clusters)
    sums, sizes = np.bincount(index, x, g), np.bincount(index, None, g)
    draws = bootstrap_draws(g, reps, seed)
    return sums[draws].sum(1) / sizes[draws].sum(1)


def cluster_se(values: Sequence[float], clusters: Sequence[Hashable], reps: int, seed: int) -> float:
    """Cluster-bootstrap standard error of the mean, times sqrt(G / (G - 1)): the bootstrap's plug-in
    variance over G clusters is (G - 1) / G of the unbiased one, which matters at the few prompts
    per metric a suite has. 0 for a single cluster (no between-prompt spread can be seen)."""
    index, g = cluster_index(clusters)
    if g < 2:
        return 0.0
    boots = cluster_bootstrap_means(values, clusters, reps, seed)
    return float(boots.std(ddof=0)) * math.sqrt(g / (g - 1))


def iid_se(values: Sequence[float]) -> float:
    x = np.asarray(values, dtype=float)
    return float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else 0.0


@dataclass(frozen=True)
class Estimate:
    value: float
    ci95: tuple[float, float]
    n: int
    n_clusters: int
    design_effect: float
    df: float = math.inf
    """Degrees of freedom of the interval's quantile (infinite: the normal one)."""


def clustered_proportion(outcomes: Sequence[bool], clusters: Sequence[Hashable], reps: int, seed: int) -> Estimate:
    """Share of successes with the Wilson interval at the effective sample size n / deff, its z from
    t with G - 1 degrees of freedom where the prompts' spread sets the variance (deff > 1)."""
    x = np.asarray(outcomes, dtype=float)
    n = len(x)
    _, g = cluster_index(clusters)
    if n == 0:
        return Estimate(float("nan"), (0.0, 1.0), 0, 0, 1.0)
    p = float(x.mean())
    deff = 1.0
    if g < n and 0 < p < 1:  # singleton clusters or a share of 0/1 have nothing to correct
        binomial_var = p * (1 - p) / n
        deff = max(1.0, cluster_se(x, clusters, reps, seed) ** 2 / binomial_var)
    df = g - 1 if deff > 1 else math.inf
    if too_few_prompts(n, g):
        return Estimate(p, (0.0, 1.0), n, g, deff, df)
    n_eff = n / deff
    return Estimate(p, wilson(p * n_eff, n_eff, t95(df)), n, g, deff, df)


def clustered_mean(values: Sequence[float], clusters: Sequence[Hashable], reps: int, seed: int) -> Estimate:
    """Mean +- t standard errors, the larger of the cluster-bootstrap and the independent-rows one."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    _, g = cluster_index(clusters)
    if n == 0:
        return Estimate(float("nan"), (float("nan"), float("nan")), 0, 0, 1.0)
    se_iid, se_cluster = iid_se(x), cluster_se(x, clusters, reps, seed)
    se, df = (se_cluster, g - 1) if se_cluster > se_iid else (se_iid, n - 1)
    mean = float(x.mean())
    deff = (se / se_iid) ** 2 if se_iid else 1.0
    if n < 2 or too_few_prompts(n, g):
        return Estimate(mean, (-math.inf, math.inf), n, g, deff, df)
    half = t95(df) * se
    return Estimate(mean, (mean - half, mean + half), n, g, deff, df)


def cohen_kappa(table: np.ndarray) -> float:
    """Cohen's kappa of a C x C table of counts (first judge's label x second's): (p_o - p_e) / (1 - p_e),
    p_o the share on the diagonal, p_e the agreement the two label distributions give by chance. 1 when
    the two agree on every item (also where one label throughout would make it 0 / 0)."""
    n = table.sum()
    if n == 0:
        return float("nan")
    observed = float(np.trace(table)) / n
    if observed == 1.0:
        return 1.0
    chance = float(table.sum(1) @ table.sum(0)) / (n * n)
    return (observed - chance) / (1 - chance)


def clustered_kappa(first: Sequence[Hashable], second: Sequence[Hashable], clusters: Sequence[Hashable], reps: int,
                    seed: int) -> Estimate:
    """Cohen's kappa of two labelings of the same items, +- t(G - 1) cluster-bootstrap standard errors
    (times sqrt(G / (G - 1)), as ``cluster_se``), clipped to [-1, 1]: prompts are resampled whole, each
    replicate's kappa from the summed tables of the drawn prompts."""
    n = len(first)
    index, g = cluster_index(clusters)
    if n == 0:
        return Estimate(float("nan"), (-1.0, 1.0), 0, 0, 1.0)
    codes = {c: i for i, c in enumerate(dict.fromkeys([*first, *second]))}
    tables = np.zeros((g, len(codes), len(codes)))
    np.add.at(tables, (index, [codes[a] for a in first], [codes[b] for b in second]), 1)
    value = cohen_kappa(tables.sum(0))
    if g < 2 or too_few_prompts(n, g):
        return Estimate(value, (-1.0, 1.0), n, g, 1.0, g - 1)
    draws = bootstrap_draws(g, reps, seed)
    weights = np.zeros((reps, g))
    np.add.at(weights, (np.arange(reps)[:, None], draws), 1)
    replicates = (weights @ tables.reshape(g, -1)).reshape(reps, len(codes), len(codes))
    se = float(np.std([cohen_kappa(t) for t in replicates])) * math.sqrt(g / (g - 1))
    half = t95(g - 1) * se
    return Estimate(value, (max(-1.0, value - half), min(1.0, value + half)), n, g, 1.0, g - 1)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control, any dependence)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def mcnemar(first: Sequence[bool], second: Sequence[bool]) -> tuple[float, int, int]:
    """Exact McNemar test: two-sided binomial test of the discordant pairs against 1/2.

    Returns (p, b, c) with b = pairs where only ``first`` succeeded and c = only ``second``."""
    a, b_ = np.asarray(first, dtype=bool), np.asarray(second, dtype=bool)
    b, c = int((a & ~b_).sum()), int((~a & b_).sum())
    p = 1.0 if b + c == 0 else float(sps.binomtest(c, b + c, 0.5).pvalue)
    return p, b, c


def matched_pairs_se(b: int, c: int, n: int) -> float:
    """Standard error of a difference of two shares on the same ``n`` rows from its discordant counts,
    with half a row added to each cell of the 2 x 2 table (Agresti and Min 2005): never 0, so a few
    rows that happen to agree cannot give a zero-width interval (at one seed per prompt and 4-8
    prompts the plain one covered 69-84%)."""
    m = n + 2
    only_first, only_second = (b + 0.5) / m, (c + 0.5) / m
    return math.sqrt((only_first + only_second - (only_second - only_first) ** 2) / m)


@dataclass(frozen=True)
class Paired:
    """``second - first`` row by row: the mean difference, its 95% interval and a two-sided p-value.

    ``se`` is infinite where too few prompts leave no interval; ``df`` is the degrees of freedom of
    the t reference of the interval and the p-values."""

    diff: float
    ci95: tuple[float, float]
    se: float
    p: float
    n_pairs: int
    n_clusters: int
    discordant: tuple[int, int] | None
    df: float = math.inf

    def to_dict(self, p_holm: float | None = None) -> dict:
        out = {"diff": _r(self.diff), "ci95": [_r(self.ci95[0]), _r(self.ci95[1])], "p": _r(self.p),
               "p_holm": None if p_holm is None else _r(p_holm), "n_pairs": self.n_pairs,
               "n_clusters": self.n_clusters, "discordant": list(self.discordant) if self.discordant else None}
        return out


def _r(x: float) -> float:
    return float(f"{round(float(x), 6):.6g}") + 0.0


def paired(first: Sequence[float], second: Sequence[float], clusters: Sequence[Hashable], reps: int, seed: int,
           binary: bool) -> Paired:
    """Paired comparison of two outcome vectors on the same rows, clusters = prompts: a t interval
    with G - 1 degrees of freedom where the prompts' spread sets the standard error, n - 1 where
    the rows' does."""
    a, b = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    d = b - a
    n = len(d)
    _, g = cluster_index(clusters)
    if n == 0:
        return Paired(float("nan"), (float("nan"), float("nan")), float("nan"), 1.0, 0, 0, (0, 0) if binary else None)
    diff = float(d.mean())
    # a share's p is never below the exact McNemar p of its rows; a mean's has no such floor
    floor, nb, nc = mcnemar(a.astype(bool), b.astype(bool)) if binary else (0.0, 0, 0)
    discordant = (nb, nc) if binary else None
    se_rows = matched_pairs_se(nb, nc, n) if binary else iid_se(d)
    se_cluster = cluster_se(d, clusters, reps, seed)
    se, df = (se_cluster, g - 1) if se_cluster > se_rows else (se_rows, n - 1)
    if n < 2 or too_few_prompts(n, g):  # nothing can be shown: the whole range, p = 1
        whole = (-1.0, 1.0) if binary else (-math.inf, math.inf)
        return Paired(diff, whole, math.inf, 1.0, n, g, discordant, df)
    half = t95(df) * se
    ci = (diff - half, diff + half)
    if binary:  # a difference of two shares lies in [-1, 1]
        ci = (max(ci[0], -1.0), min(ci[1], 1.0))
    p = 1.0 if se == 0 and diff == 0 else (0.0 if se == 0 else float(2 * sps.t.sf(abs(diff) / se, df)))
    return Paired(diff, ci, se, max(p, floor), n, g, discordant, df)


def detectable_difference(p: float, n_clusters: int, per_cluster: int, icc: float, power: float = 0.8) -> float:
    """Smallest paired difference in a share that a two-sided 5% test detects with ``power``.

    Two runs whose rows are independent given the prompt have Var(d) <= 2 p (1 - p) per row; the
    design effect 1 + (m - 1) icc carries the prompts' clustering, and with it the test's quantile
    is t with G - 1 degrees of freedom, as the paired interval's is."""
    n = n_clusters * per_cluster
    var = 2 * p * (1 - p) * (1 + (per_cluster - 1) * icc) / n
    return _power_quantile(n_clusters, icc, power) * math.sqrt(max(var, 0.0))


def _power_quantile(n_clusters: int, icc: float, power: float) -> float:
    """The two-sided 5% quantile plus the power's: t(G - 1) where the prompts' spread counts."""
    critical = t95(n_clusters - 1) if icc > 0 and n_clusters > 1 else Z95
    return critical + float(sps.norm.ppf(power))


def seeds_needed(diff: float, p: float, n_clusters: int, icc: float, power: float = 0.8) -> int | None:
    """Seeds per prompt for ``detectable_difference`` to reach ``diff``; None when no number of seeds
    can (the prompts' own spread, icc / G, is the floor: then the suite needs more prompts).

    Solves z^2 2 p (1 - p) ((1 - icc) / m + icc) / G <= diff^2 for the smallest whole m."""
    z = _power_quantile(n_clusters, icc, power)
    var_unit = 2 * p * (1 - p)
    if var_unit <= 0:
        return 1
    room = diff * diff * n_clusters / (z * z * var_unit) - icc
    if room <= 0:
        return None
    m = max(1, math.ceil((1 - icc) / room - 1e-9))
    while m > 1 and detectable_difference(p, n_clusters, m - 1, icc, power) <= diff:
        m -= 1  # guard against rounding in the closed form
    return m


def icc_from_design_effect(deff: float, per_cluster: float) -> float:
    """Intra-prompt correlation from Kish's deff = 1 + (m - 1) icc."""
    return 0.0 if per_cluster <= 1 else min(1.0, max(0.0, (deff - 1) / (per_cluster - 1)))
