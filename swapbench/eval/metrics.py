"""Metric estimators of a swap evaluation; each reports value, 95% CI, n and n_clusters.

Which metrics exist, their definitions and directions are in ``swapbench.catalog``; the
intervals treat prompts as clusters (``swapbench.eval.stats``): proportions the Wilson interval at
the cluster bootstrap's effective n, means a cluster-bootstrap SE, KID a delete-one-prompt
jackknife, FID a cluster bootstrap. Without cluster labels each sample is its own cluster.
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
    m, n = len(x), len(y)
    k_xx, k_yy, k_xy = poly_kernel(x, x), poly_kernel(y, y), poly_kernel(x, y)
    within_x = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    within_y = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return float(within_x + within_y - 2 * k_xy.sum() / (m * n))


def _kid(tuned: torch.Tensor, base: torch.Tensor, halves: torch.Tensor) -> float:
    # Tuned and base samples share seeds, so pair i is nearly identical when little drifted; the
    # unbiased estimator is only unbiased for independent sets, hence tuned of one half against base
    # of the other half, both ways.
    a, b = halves, ~halves
    return 0.5 * (mmd2(tuned[a], base[b]) + mmd2(tuned[b], base[a]))


def bootstrap(stat, tuned: torch.Tensor, base: torch.Tensor, reps: int, seed: int,
              clusters: list | None = None) -> tuple[float, float]:
    """Percentile bootstrap of ``stat(tuned, base)``: whole prompts (clusters of same-seed pairs)
    resampled with replacement ``reps`` times; without clusters, single pairs."""
    index, g = stats.cluster_index(clusters if clusters is not None else range(len(tuned)))
    members = [np.flatnonzero(index == k) for k in range(g)]
    values = []
    for draw in stats.bootstrap_draws(g, reps, seed):
        idx = torch.from_numpy(np.concatenate([members[k] for k in draw]))
        values.append(stat(tuned[idx], base[idx]))
    return (float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5)))


def kid_vs_base(tuned: torch.Tensor, base: torch.Tensor, seed: int, features: str = "judge features",
                clusters: list | None = None) -> dict:
    """KID vs base: unbiased MMD^2 (KID's cubic polynomial kernel) between tuned and base control-sample
    features, taken across a seeded random half split of the same-seed pairs (tuned of one half vs
    base of the other, averaged both ways) so the two sets are independent; its expectation is 0 when
    nothing drifted. 95% CI: value +- 1.96 jackknife standard errors, deleting one prompt (all its
    seeds) at a time, or one pair at a time without ``clusters``."""
    n = min(len(tuned), len(base))
    if n < 8:
        return entry(float("nan"), (float("nan"), float("nan")), n, False, "KID needs at least 8 control pairs")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    halves = torch.zeros(n, dtype=torch.bool)
    halves[order[: n // 2]] = True
    tuned, base = tuned[:n], base[:n]
    value = _kid(tuned, base, halves)
    index, g = stats.cluster_index(clusters[:n] if clusters is not None else range(n))
    if g < 3:  # too few prompts to delete one at a time: pairs
        index, g = np.arange(n), n
    leave_one_out = []
    for k in range(g):
        keep = torch.from_numpy(index != k)
        leave_one_out.append(_kid(tuned[keep], base[keep], halves[keep]))
    jack = np.asarray(leave_one_out)
    se = math.sqrt((g - 1) / g * float(((jack - jack.mean()) ** 2).sum()))
    return entry(value, (value - 1.96 * se, value + 1.96 * se), n, False,
                 f"KID between tuned and base control samples ({features}, independent halves)", g)


def fid_vs_base(tuned: torch.Tensor, base: torch.Tensor, seed: int, reps: int, features: str = "judge features",
                clusters: list | None = None) -> dict:
    """FID vs base: Frechet distance between Gaussians fitted to tuned and base control-sample features."""
    value = _fid(tuned, base)
    ci = bootstrap(_fid, tuned, base, reps, seed, clusters)
    g = stats.cluster_index(clusters)[1] if clusters is not None else len(tuned)
    return entry(value, ci, len(tuned), False,
                 f"FID between tuned and base control samples ({features}; biased at small n)", g)


def mean_with_ci(values: list[float], reps: int, seed: int, higher_is_better: bool, description: str,
                 clusters: list | None = None) -> dict:
    """Mean +- 1.96 cluster-bootstrap standard errors (``stats.clustered_mean``)."""
    from swapbench.catalog import MEAN_INTERVAL

    est = stats.clustered_mean(values, clusters if clusters is not None else list(range(len(values))), reps, seed)
    return estimate_entry(est, higher_is_better, description, MEAN_INTERVAL)


def confusion(rows: list[tuple[str, str]], labels: list[str]) -> dict[str, dict[str, int]]:
    """Counts of (prompt concept -> judged label)."""
    table: dict[str, dict[str, int]] = {}
    for concept, judged in rows:
        table.setdefault(concept, dict.fromkeys(labels, 0))[judged] += 1
    return table
