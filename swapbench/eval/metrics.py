"""Metric estimators of a swap evaluation; each reports value, 95% CI, n and n_clusters.

Which metrics exist, their definitions and directions are in ``swapbench.catalog``; the
intervals treat prompts as clusters (``swapbench.eval.stats``): proportions the Wilson interval at
the cluster bootstrap's effective n, means a cluster-bootstrap SE, KID a delete-one-prompt
jackknife (or the spread over other half splits), FID a cluster bootstrap, each with a t quantile
where a spread over prompts sets the width. Without cluster labels each sample is its own cluster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import poly_kernel

from swapbench.eval import stats


def stable(x: float) -> float:
    """``x`` to 6 decimals and 6 significant digits: CPU kernels may differ in the last float bits
    between two runs of one process, which must not make identical evaluations differ."""
    return float(f"{round(float(x), 6):.6g}") + 0.0


def entry(value: float, ci: tuple[float, float], n: int, higher_is_better: bool | None, description: str,
          n_clusters: int | None = None, interval: str | None = None, design_effect: float | None = None) -> dict:
    out = {"value": stable(value), "ci95": [stable(ci[0]), stable(ci[1])], "n": int(n),
           "n_clusters": int(n if n_clusters is None else n_clusters),
           "higher_is_better": higher_is_better, "description": description}
    if interval:
        out["interval"] = interval
    if design_effect is not None:
        # 3 digits: a ratio of two variances amplifies the last-bit noise of CPU kernels
        out["design_effect"] = float(f"{design_effect:.3g}")
    return out


def estimate_entry(est: stats.Estimate, higher_is_better: bool | None, description: str, interval: str) -> dict:
    if stats.too_few_prompts(est.n, est.n_clusters):
        interval = stats.TOO_FEW_PROMPTS
    return entry(est.value, est.ci95, est.n, higher_is_better, description, est.n_clusters, interval,
                 est.design_effect)


@dataclass
class Proportion:
    """Share of trials that succeeded; the clustered Wilson 95% interval (``stats.clustered_proportion``).

    ``update(success, cluster)``: trials without a cluster label are clusters of their own."""

    description: str
    higher_is_better: bool = True
    outcomes: list[bool] = field(default_factory=list)
    clusters: list = field(default_factory=list)
    reps: int = 1000
    seed: int = 0

    def update(self, success: bool | list[bool], cluster=None) -> None:
        new = success if isinstance(success, list) else [success]
        start = len(self.outcomes)
        self.outcomes += new
        self.clusters += [(None, start + i) if cluster is None else cluster for i in range(len(new))]

    def compute(self) -> dict:
        clusters = self.clusters if len(self.clusters) == len(self.outcomes) else list(range(len(self.outcomes)))
        est = stats.clustered_proportion(self.outcomes, clusters, self.reps, self.seed)
        from swapbench.catalog import PROPORTION_INTERVAL

        return estimate_entry(est, self.higher_is_better, self.description, PROPORTION_INTERVAL)


class _Identity(torch.nn.Module):
    """Lets torchmetrics' FID/KID consume precomputed judge features (their documented ``feature`` hook)."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _fid(tuned: torch.Tensor, base: torch.Tensor) -> float:
    if tuned.shape[1] >= 512 and max(len(tuned), len(base)) < tuned.shape[1]:
        return _fid_few_samples(tuned, base)
    # The main process scores alone after a multi-process launch; torchmetrics would otherwise wait for
    # the other processes to join its sync at compute().
    metric = FrechetInceptionDistance(feature=_Identity(tuned.shape[1]), reset_real_features=True, normalize=False,
                                      sync_on_compute=False)
    metric.update(base.double(), real=True)
    metric.update(tuned.double(), real=False)
    return float(metric.compute())


def _fid_few_samples(tuned: torch.Tensor, base: torch.Tensor) -> float:
    """The Frechet distance computed in sample space, exact when there are fewer samples than feature
    dimensions (Inception's 2,048 vs a suite's 16-48 control pairs). With centred features A (n x d) and
    B (m x d), the nonzero eigenvalues of S_a S_b are the squared singular values of A B^T / sqrt((n-1)(m-1)),
    so tr((S_a S_b)^1/2) is their sum: an n x m SVD instead of torchmetrics' d x d eigendecomposition,
    which costs seconds per call at d = 2,048 and a bootstrap makes a hundred calls."""
    a, b = tuned.double(), base.double()
    a_c, b_c = a - a.mean(0), b - b.mean(0)
    n, m = len(a), len(b)
    trace_sqrt = torch.linalg.svdvals(a_c @ b_c.T).sum() / math.sqrt((n - 1) * (m - 1))
    traces = (a_c * a_c).sum() / (n - 1) + (b_c * b_c).sum() / (m - 1)
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + traces - 2 * trace_sqrt)


def mmd2(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD^2 between sets of sizes m and n with KID's cubic polynomial kernel (torchmetrics'
    ``poly_kernel``): within-x pairs / (m(m-1)) + within-y pairs / (n(n-1)) - 2 cross pairs / (mn),
    diagonals excluded (Gretton et al. 2012, eq. 3). torchmetrics' ``poly_mmd`` divides all three
    sums by the first set's size, which is only unbiased when m == n; the KID halves below and
    every jackknife replicate have m != n whenever the number of pairs is odd."""
    x, y = x.double(), y.double()
    return _mmd2(*(poly_kernel(u, v).numpy() for u, v in ((x, x), (y, y), (x, y))))


def _mmd2(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    m, n = len(k_xx), len(k_yy)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2 * k_xy.sum() / (m * n))


class KidKernels:
    """The kernel matrices of a set of (tuned, base) pairs, computed once: KID on any subset and any
    half split is then a sum over their blocks (the jackknife and the resplits take ~50 of them)."""

    def __init__(self, tuned: torch.Tensor, base: torch.Tensor):
        t, b = tuned.double(), base.double()
        self.tt, self.bb, self.tb = (poly_kernel(u, v).numpy() for u, v in ((t, t), (b, b), (t, b)))

    def kid(self, halves: np.ndarray, keep: np.ndarray | None = None) -> float:
        # Tuned and base samples share seeds, so pair i is nearly identical when little drifted; the
        # unbiased estimator is only unbiased for independent sets, hence tuned of one half against
        # base of the other half, both ways.
        a, b = (halves, ~halves) if keep is None else (halves & keep, ~halves & keep)
        a, b = np.flatnonzero(a), np.flatnonzero(b)
        return 0.5 * (self._across(a, b) + self._across(b, a))

    def _across(self, x: np.ndarray, y: np.ndarray) -> float:
        """MMD^2 of the tuned rows ``x`` against the base rows ``y``."""
        return _mmd2(self.tt[np.ix_(x, x)], self.bb[np.ix_(y, y)], self.tb[np.ix_(x, y)])


KID_MIN_PAIRS = 8
"""Fewer control pairs than this: KID has no value (each half needs pairs for its within-set sums)."""
RESPLITS = 32
"""Other half splits KID is recomputed on, to see the part of its variance the split itself adds."""


def half_split(n: int, generator: torch.Generator) -> np.ndarray:
    """A uniformly random half of ``n`` pairs (``n // 2`` of them) as a mask."""
    halves = np.zeros(n, dtype=bool)
    halves[torch.randperm(n, generator=generator)[: n // 2].numpy()] = True
    return halves


@dataclass(frozen=True)
class KidSpread:
    """KID of one split and the two standard errors its interval takes the larger of."""

    value: float
    jackknife_se: float
    """Delete-one-cluster jackknife with the split kept (G - 1 degrees of freedom)."""
    resplit_se: float
    """Standard deviation of KID over ``RESPLITS`` other half splits (``RESPLITS - 1``)."""
    n_clusters: int

    @property
    def ci95(self) -> tuple[float, float]:
        se, df = ((self.jackknife_se, self.n_clusters - 1) if self.jackknife_se >= self.resplit_se
                  else (self.resplit_se, RESPLITS - 1))
        half = stats.t95(df) * se
        return (self.value - half, self.value + half)


def kid_jackknife_se(kernels: KidKernels, halves: np.ndarray, index: np.ndarray, g: int) -> float:
    """Delete-one-cluster jackknife standard error of KID with the split ``halves`` kept."""
    jack = np.asarray([kernels.kid(halves, index != k) for k in range(g)])
    return math.sqrt((g - 1) / g * float(((jack - jack.mean()) ** 2).sum()))


def kid_spread(tuned: torch.Tensor, base: torch.Tensor, seed: int, index: np.ndarray, g: int) -> KidSpread:
    """KID across the seeded half split, its jackknife over the clusters ``index`` and its spread over
    other splits drawn from the same generator."""
    n = len(index)
    generator = torch.Generator().manual_seed(seed)
    halves = half_split(n, generator)
    kernels = KidKernels(tuned, base)
    resplit = [kernels.kid(half_split(n, generator)) for _ in range(RESPLITS)]
    jackknife = kid_jackknife_se(kernels, halves, index, g)
    return KidSpread(kernels.kid(halves), jackknife, float(np.std(resplit, ddof=1)), g)


def kid_vs_base(tuned: torch.Tensor, base: torch.Tensor, seed: int, features: str = "judge features",
                clusters: list | None = None) -> dict:
    """KID vs base: unbiased MMD^2 (KID's cubic polynomial kernel) between tuned and base control-sample
    features, taken across a seeded random half split of the same-seed pairs (tuned of one half vs
    base of the other, averaged both ways) so the two sets are independent; its expectation is 0 when
    nothing drifted. 95% CI (``KidSpread``): value +- t standard errors, the larger of the
    delete-one-prompt jackknife's (one pair at a time without ``clusters``) and KID's spread over
    ``RESPLITS`` other half splits. The second is there because the jackknife keeps the split: with
    tuned == base, KID's expectation over splits is exactly 0, so all of a null KID's spread is the
    split's, which the jackknife alone missed. Fewer than ``stats.MIN_PROMPTS`` prompts: no interval."""
    n = min(len(tuned), len(base))
    if n < KID_MIN_PAIRS:
        return entry(float("nan"), (float("nan"), float("nan")), n, False,
                     f"KID needs at least {KID_MIN_PAIRS} control pairs")
    index, g = stats.cluster_index(clusters[:n] if clusters is not None else range(n))
    description = f"KID between tuned and base control samples ({features}, independent halves)"
    if stats.too_few_prompts(n, g):
        value = KidKernels(tuned[:n], base[:n]).kid(half_split(n, torch.Generator().manual_seed(seed)))
        return entry(value, (-math.inf, math.inf), n, False, description, g, stats.TOO_FEW_PROMPTS)
    spread = kid_spread(tuned[:n], base[:n], seed, index, g)
    return entry(spread.value, spread.ci95, n, False, description, g)


def bootstrap(stat, tuned: torch.Tensor, base: torch.Tensor, reps: int, seed: int,
              clusters: list | None = None) -> np.ndarray:
    """``stat(tuned, base)`` on ``reps`` bootstrap resamples: whole prompts (clusters of same-seed
    pairs) drawn with replacement; without clusters, single pairs."""
    index, g = stats.cluster_index(clusters if clusters is not None else range(len(tuned)))
    members = [np.flatnonzero(index == k) for k in range(g)]
    values = []
    for draw in stats.bootstrap_draws(g, reps, seed):
        idx = torch.from_numpy(np.concatenate([members[k] for k in draw]))
        values.append(stat(tuned[idx], base[idx]))
    return np.asarray(values)


def fid_interval(value: float, replicates: np.ndarray, g: int) -> tuple[float, float]:
    """value +- t(G - 1) bootstrap standard errors (times sqrt(G / (G - 1)), as ``stats.cluster_se``),
    never below 0. Centred on the value: resampled prompts repeat, and FID grows as the distinct
    samples fall, so the bootstrap's percentiles sit above the FID of the suite's own size."""
    se = float(replicates.std()) * math.sqrt(g / (g - 1))
    half = stats.t95(g - 1) * se
    return (max(0.0, value - half), value + half)


def fid_vs_base(tuned: torch.Tensor, base: torch.Tensor, seed: int, reps: int, features: str = "judge features",
                clusters: list | None = None) -> dict:
    """FID vs base: Frechet distance between Gaussians fitted to tuned and base control-sample features.

    FID is biased upward at small n, by far more than a drift it measures (in
    benchmarks/interval_coverage.py 48 pairs of 512-d features read ~0.19 where the population
    distance is ~0.0005), so no interval from a suite covers the population FID: ``fid_interval``
    is one for the expected FID at the suite's size, comparable between runs of one suite only.
    Fewer than ``stats.MIN_PROMPTS`` prompts: no interval."""
    value = _fid(tuned, base)
    g = stats.cluster_index(clusters)[1] if clusters is not None else len(tuned)
    description = f"FID between tuned and base control samples ({features}; biased at small n)"
    if stats.too_few_prompts(len(tuned), g):
        return entry(value, (0.0, math.inf), len(tuned), False, description, g, stats.TOO_FEW_PROMPTS)
    ci = fid_interval(value, bootstrap(_fid, tuned, base, reps, seed, clusters), g)
    return entry(value, ci, len(tuned), False, description, g)


def mean_with_ci(values: list[float], reps: int, seed: int, higher_is_better: bool, description: str,
                 clusters: list | None = None) -> dict:
    """Mean +- t cluster-bootstrap standard errors (``stats.clustered_mean``)."""
    from swapbench.catalog import MEAN_INTERVAL

    est = stats.clustered_mean(values, clusters if clusters is not None else list(range(len(values))), reps, seed)
    return estimate_entry(est, higher_is_better, description, MEAN_INTERVAL)


def confusion(rows: list[tuple[str, str]], labels: list[str]) -> dict[str, dict[str, int]]:
    """Counts of (prompt concept -> judged label)."""
    table: dict[str, dict[str, int]] = {}
    for concept, judged in rows:
        table.setdefault(concept, dict.fromkeys(labels, 0))[judged] += 1
    return table
