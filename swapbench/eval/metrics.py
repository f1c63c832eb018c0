"""Metrics of a swap evaluation. Each states its definition; each reports value, 95% CI and n.

Proportions use the Wilson score interval; distances (KID, FID) and means use a seeded
percentile bootstrap over samples. ``higher_is_better`` tells the gate which way is worse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import poly_kernel


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (well behaved at 0 and 1, unlike the normal one)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def stable(x: float) -> float:
    """``x`` to 6 decimals and 6 significant digits: CPU kernels may differ in the last float bits
    between two runs of one process, which must not make identical evaluations differ."""
    return float(f"{round(float(x), 6):.6g}") + 0.0


def entry(value: float, ci: tuple[float, float], n: int, higher_is_better: bool | None, description: str) -> dict:
    return {"value": stable(value), "ci95": [stable(ci[0]), stable(ci[1])], "n": int(n),
            "higher_is_better": higher_is_better, "description": description}


@dataclass
class Proportion:
    """Share of trials that succeeded; the Wilson 95% interval."""

    description: str
    higher_is_better: bool = True
    outcomes: list[bool] = field(default_factory=list)

    def update(self, success: bool | list[bool]) -> None:
        self.outcomes += success if isinstance(success, list) else [success]

    def compute(self) -> dict:
        k, n = sum(self.outcomes), len(self.outcomes)
        return entry(k / n if n else float("nan"), wilson(k, n), n, self.higher_is_better, self.description)


def swap_success(description: str = "") -> Proportion:
    """swap success (A->B): share of images from prompts naming A that the judge labels B."""
    return Proportion(description or "share of images from prompts naming A judged as B")


def preservation(description: str = "") -> Proportion:
    """preservation (C): share of same-seed pairs whose tuned judge label equals the base label."""
    return Proportion(description or "same-seed tuned label == base label")


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


def bootstrap(stat, tuned: torch.Tensor, base: torch.Tensor, reps: int, seed: int) -> tuple[float, float]:
    """Percentile bootstrap: resample the (tuned, base) pairs with replacement ``reps`` times."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(reps):
        idx = torch.from_numpy(rng.integers(0, len(tuned), len(tuned)))
        values.append(stat(tuned[idx], base[idx]))
    return (float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5)))


def kid_vs_base(tuned: torch.Tensor, base: torch.Tensor, seed: int, features: str = "judge features") -> dict:
    """KID vs base: unbiased MMD^2 (KID's cubic polynomial kernel) between tuned and base control-sample
    features, taken across a seeded random half split of the same-seed pairs (tuned of one half vs
    base of the other, averaged both ways) so the two sets are independent; its expectation is 0 when
    nothing drifted. 95% CI: value +- 1.96 delete-one-pair jackknife standard errors."""
    n = min(len(tuned), len(base))
    if n < 8:
        return entry(float("nan"), (float("nan"), float("nan")), n, False, "KID needs at least 8 control pairs")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    halves = torch.zeros(n, dtype=torch.bool)
    halves[order[: n // 2]] = True
    tuned, base = tuned[:n], base[:n]
    value = _kid(tuned, base, halves)
    keep = torch.ones(n, dtype=torch.bool)
    leave_one_out = []
    for i in range(n):
        keep[i] = False
        leave_one_out.append(_kid(tuned[keep], base[keep], halves[keep]))
        keep[i] = True
    jack = np.asarray(leave_one_out)
    se = math.sqrt((n - 1) / n * float(((jack - jack.mean()) ** 2).sum()))
    return entry(value, (value - 1.96 * se, value + 1.96 * se), n, False,
                 f"KID between tuned and base control samples ({features}, independent halves)")


def fid_vs_base(tuned: torch.Tensor, base: torch.Tensor, seed: int, reps: int, features: str = "judge features") -> dict:
    """FID vs base: Frechet distance between Gaussians fitted to tuned and base control-sample features."""
    value = _fid(tuned, base)
    ci = bootstrap(_fid, tuned, base, reps, seed)
    return entry(value, ci, len(tuned), False, f"FID between tuned and base control samples ({features}; biased at small n)")


def mean_with_ci(values: list[float], reps: int, seed: int, higher_is_better: bool, description: str) -> dict:
    """Mean with a percentile-bootstrap 95% interval."""
    arr = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    boots = [arr[rng.integers(0, len(arr), len(arr))].mean() for _ in range(reps)] if len(arr) else [float("nan")]
    return entry(arr.mean() if len(arr) else float("nan"), (np.percentile(boots, 2.5), np.percentile(boots, 97.5)),
                 len(arr), higher_is_better, description)


def confusion(rows: list[tuple[str, str]], labels: list[str]) -> dict[str, dict[str, int]]:
    """Counts of (prompt concept -> judged label)."""
    table: dict[str, dict[str, int]] = {}
    for concept, judged in rows:
        table.setdefault(concept, dict.fromkeys(labels, 0))[judged] += 1
    return table
