"""Coverage of every 95% interval swapbench reports, measured by simulation at 2-40 prompts.

Each interval kind is computed by the shipped code (``swapbench.eval.stats``, ``swapbench.eval.metrics``)
on ``--reps`` synthetic evaluations per shape, and its coverage is the share of intervals that hold
the true value. A shape is G prompts x m seeds: G from ``--prompts``, m the seeds per prompt of the
shipped suites' groups (read from ``eval/suites/*.yaml`` through the suite loader). Every data
model has a prompt effect, so seeds inside a prompt are correlated:

- share: probit, success when ``SHARE_MU + u_prompt + e > 0``, u ~ N(0, SHARE_SD^2), e ~ N(0, 1);
- paired share: two runs on the same rows, a (prompt, seed) effect shared by both (correlation
  RHO: the same seed makes a similar image), run B ``DELTA`` lower on the probit scale plus a
  prompt-specific drop ~ N(0, TAU^2) (a regression concentrated in some prompts);
- mean, paired mean: a normal prompt effect (sd ``MEAN_SD``) plus unit row noise; run B
  ``MEAN_DELTA`` higher plus a prompt-specific shift (sd ``TAU``);
- KID, FID: unit-norm feature vectors ``normalize(centre_prompt + SEED_SD * noise)``, a prompt's
  images close to each other. "null" scores the base against itself (the tuned images are the
  base's; KID's truth is 0, FID's interval is [0, 0] and not measured); "drift" moves every
  prompt by its own random vector, each image a little and all of them by ``DRIFT_SHIFT``. Its
  truth is the estimator's expectation at the shape (``TRUTH_DRAWS`` fresh evaluations): both
  estimators at a suite's size sit far above the population distance when each prompt moves its
  own way (``--bias`` prints both), so their intervals are for the KID / FID of a suite that size.

"Before" is the interval as swapbench computed it before the t correction (the normal quantile on
the same standard error; Wilson with z = 1.96; KID's jackknife alone, over pairs below 3 prompts;
FID's bootstrap percentiles), "after" the shipped one, both on the same draws. Each cell reads
``before -> after +- Monte-Carlo SE of after (at least 1/reps), median width after/before``.
The defaults take ~5 minutes on a loaded 2-core machine; the table in docs/ci.md took

    python benchmarks/interval_coverage.py --reps 400 --kinds "share,paired share,mean,paired mean"
    python benchmarks/interval_coverage.py --feature-reps 60 --kinds "KID null,KID drift,FID drift" --bias

``--json`` adds one line with every cell.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats as sps

from swapbench import catalog
from swapbench.assets import asset_names
from swapbench.config import EvalConfig
from swapbench.eval import metrics as M
from swapbench.eval import stats
from swapbench.eval.paired import pairable
from swapbench.eval.scoring import score_rows
from swapbench.eval.suite import DEFAULT_EDITS, load_suite
from swapbench.schema import with_targets

PROMPTS = (2, 3, 4, 6, 8, 12, 16, 24, 40)
BOOT = EvalConfig.bootstrap
FID_BOOT = max(50, BOOT // 10)  # the bootstrap size swapbench eval gives FID
SHARE_MU, SHARE_SD = 1.0, 0.7  # share ~0.79, latent intra-prompt correlation 0.33
RHO, DELTA, TAU = 0.6, 0.5, 0.5
MEAN_SD, MEAN_DELTA = 1.0, 0.3
KID_DIM, FID_DIM = 64, 512  # the savanna judge's features; CLIP's (FID's sample-space path, n < 512)
SEED_SD, DRIFT_PROMPT_SD, DRIFT_IMAGE_SD, DRIFT_SHIFT = 0.5, 0.5, 0.15, 0.5
TRUTH_DRAWS = 300
MAX_FEATURE_ROWS = {"KID null": 240, "KID drift": 240, "FID drift": 96}
"""Pairs per simulated evaluation above which a cell is left out: each costs minutes (FID grows as n^3)."""


@dataclass
class Cell:
    kind: str
    sizes: tuple[int, ...]
    truth: float
    before: np.ndarray
    """(reps, 2) intervals as computed before the t correction."""
    after: np.ndarray
    """(reps, 2) intervals as shipped."""

    def coverage(self, which: str) -> float:
        ci = getattr(self, which)
        return float(np.mean((ci[:, 0] <= self.truth + 1e-12) & (self.truth - 1e-12 <= ci[:, 1])))

    def mc_error(self, which: str = "after") -> float:
        c = self.coverage(which)
        return math.sqrt(max(c * (1 - c), 1 / len(self.after)) / len(self.after))

    def width_ratio(self) -> float:
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.diff(self.after, axis=1)[:, 0] / np.diff(self.before, axis=1)[:, 0]
        return float(np.median(ratio[~np.isnan(ratio)])) if (~np.isnan(ratio)).any() else float("nan")

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "prompts": len(self.sizes),
            "seeds": _seeds_text(self.sizes),
            "reps": len(self.after),
            "truth": self.truth,
            "before": self.coverage("before"),
            "after": self.coverage("after"),
            "mc_error": self.mc_error(),
            "width_ratio": self.width_ratio(),
        }


def _seeds_text(sizes: Sequence[int]) -> str:
    return (
        str(sizes[0])
        if len(set(sizes)) == 1
        else "+".join(f"{k}x{m}" for m, k in sorted(Counter(sizes).items()))
    )


def _index(sizes: Sequence[int]) -> np.ndarray:
    return np.repeat(np.arange(len(sizes)), sizes)


def _old_se(d: np.ndarray, index: np.ndarray) -> float:
    return max(stats.cluster_se(d, index, BOOT, 0), stats.iid_se(d))


def share(sizes: Sequence[int], reps: int, seed: int) -> Cell:
    rng, index = np.random.default_rng(seed), _index(sizes)
    latent = rng.normal(SHARE_MU, SHARE_SD, (reps, len(sizes)))[:, index] + rng.standard_normal(
        (reps, len(index))
    )
    before, after = [], []
    for y in latent > 0:
        est = stats.clustered_proportion(y, index, BOOT, 0)
        n_eff = est.n / est.design_effect
        before.append(stats.wilson(est.value * n_eff, n_eff, stats.Z95))
        after.append(est.ci95)
    truth = float(sps.norm.cdf(SHARE_MU / math.hypot(1, SHARE_SD)))
    return Cell("share", tuple(sizes), truth, np.array(before), np.array(after))


def _two_runs(
    rng, sizes: Sequence[int], reps: int, prompt_sd: float, shift: float
) -> tuple[np.ndarray, np.ndarray]:
    """Latent outcomes of runs A and B on the same rows: a shared prompt effect and (prompt, seed)
    effect, B shifted by ``shift`` plus a prompt-specific part."""
    index = _index(sizes)
    prompt = rng.normal(0, prompt_sd, (reps, len(sizes)))[:, index]
    row = RHO * rng.standard_normal((reps, len(index)))
    noise = math.sqrt(1 - RHO * RHO)
    a = prompt + row + noise * rng.standard_normal((reps, len(index)))
    b = (
        prompt
        + row
        + shift
        + rng.normal(0, TAU, (reps, len(sizes)))[:, index]
        + noise * rng.standard_normal(a.shape)
    )
    return a, b


def _paired_cell(
    kind: str, sizes: Sequence[int], a: np.ndarray, b: np.ndarray, truth: float, binary: bool
) -> Cell:
    index = _index(sizes)
    before, after = [], []
    for x, y in zip(a, b, strict=True):
        d, half = y - x, stats.Z95 * _old_se(y - x, index)
        lo, hi = d.mean() - half, d.mean() + half
        before.append((max(lo, -1.0), min(hi, 1.0)) if binary else (lo, hi))
        after.append(stats.paired(x, y, index, BOOT, 0, binary=binary).ci95)
    return Cell(kind, tuple(sizes), truth, np.array(before), np.array(after))


def paired_share(sizes: Sequence[int], reps: int, seed: int) -> Cell:
    a, b = _two_runs(np.random.default_rng(seed), sizes, reps, SHARE_SD, -DELTA)
    truth = sps.norm.cdf((SHARE_MU - DELTA) / math.sqrt(1 + SHARE_SD**2 + TAU**2)) - sps.norm.cdf(
        SHARE_MU / math.hypot(1, SHARE_SD)
    )
    ok_a, ok_b = (a + SHARE_MU > 0).astype(float), (b + SHARE_MU > 0).astype(float)
    return _paired_cell("paired share", sizes, ok_a, ok_b, float(truth), binary=True)


def mean(sizes: Sequence[int], reps: int, seed: int) -> Cell:
    rng, index = np.random.default_rng(seed), _index(sizes)
    x = rng.normal(0, MEAN_SD, (reps, len(sizes)))[:, index] + rng.standard_normal((reps, len(index)))
    before, after = [], []
    for row in x:
        half = stats.Z95 * _old_se(row, index)
        before.append((row.mean() - half, row.mean() + half))
        after.append(stats.clustered_mean(row, index, BOOT, 0).ci95)
    return Cell("mean", tuple(sizes), 0.0, np.array(before), np.array(after))


def paired_mean(sizes: Sequence[int], reps: int, seed: int) -> Cell:
    a, b = _two_runs(np.random.default_rng(seed), sizes, reps, MEAN_SD, MEAN_DELTA)
    return _paired_cell("paired mean", sizes, a, b, MEAN_DELTA, binary=False)


def features(
    gen: torch.Generator, sizes: Sequence[int], dim: int, drift: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(tuned, base) unit-norm features of one evaluation's control pairs."""
    index = torch.from_numpy(_index(sizes))
    n, g = len(index), len(sizes)
    base = torch.randn(g, dim, generator=gen)[index] + SEED_SD * torch.randn(n, dim, generator=gen)
    if not drift:
        base = torch.nn.functional.normalize(base, dim=1)
        return base, base
    tuned = (
        base
        + DRIFT_PROMPT_SD * torch.randn(g, dim, generator=gen)[index]
        + DRIFT_IMAGE_SD * torch.randn(n, dim, generator=gen)
    )
    tuned[:, 0] += DRIFT_SHIFT
    return torch.nn.functional.normalize(tuned, dim=1), torch.nn.functional.normalize(base, dim=1)


def _kid_value(tuned: torch.Tensor, base: torch.Tensor, seed: int) -> float:
    return M.KidKernels(tuned, base).kid(M.half_split(len(tuned), torch.Generator().manual_seed(seed)))


@functools.cache
def expected(stat: str, sizes: tuple[int, ...], drift: bool, seed: int = 99) -> float:
    """The estimator's expectation at the shape: its mean over ``TRUTH_DRAWS`` fresh evaluations
    (KID's is exactly 0 without drift)."""
    if stat == "KID" and not drift:
        return 0.0
    gen = torch.Generator().manual_seed(seed)
    if stat == "KID":
        return float(
            np.mean([_kid_value(*features(gen, sizes, KID_DIM, True), r) for r in range(TRUTH_DRAWS)])
        )
    return float(np.mean([M._fid(*features(gen, sizes, FID_DIM, True)) for _ in range(TRUTH_DRAWS)]))


def kid(sizes: Sequence[int], reps: int, seed: int, drift: bool) -> Cell:
    gen, index = torch.Generator().manual_seed(seed), _index(sizes)
    g, n = len(sizes), len(index)
    before, after = [], []
    for r in range(reps):
        tuned, base = features(gen, sizes, KID_DIM, drift)
        if stats.too_few_prompts(n, g):  # before, KID fell back to deleting one pair at a time
            value = M.kid_vs_base(tuned, base, r, clusters=list(index))["value"]
            halves = M.half_split(n, torch.Generator().manual_seed(r))
            old_se = M.kid_jackknife_se(M.KidKernels(tuned, base), halves, np.arange(n), n)
            after.append((-math.inf, math.inf))
        else:  # kid_vs_base's own interval, unrounded
            spread = M.kid_spread(tuned, base, r, index, g)
            value, old_se = spread.value, spread.jackknife_se
            after.append(spread.ci95)
        before.append((value - stats.Z95 * old_se, value + stats.Z95 * old_se))
    return Cell(
        f"KID {'drift' if drift else 'null'}",
        tuple(sizes),
        expected("KID", tuple(sizes), drift),
        np.array(before),
        np.array(after),
    )


def fid(sizes: Sequence[int], reps: int, seed: int) -> Cell:
    gen, index = torch.Generator().manual_seed(seed), list(_index(sizes))
    before, after = [], []
    for r in range(reps):
        tuned, base = features(gen, sizes, FID_DIM, True)
        value = M._fid(tuned, base)
        replicates = M.bootstrap(M._fid, tuned, base, FID_BOOT, r, index)
        before.append(np.percentile(replicates, [2.5, 97.5]))
        # fid_vs_base's interval, unrounded
        too_few = stats.too_few_prompts(len(index), len(sizes))
        after.append((0.0, math.inf) if too_few else M.fid_interval(value, replicates, len(sizes)))
    return Cell(
        "FID drift", tuple(sizes), expected("FID", tuple(sizes), True), np.array(before), np.array(after)
    )


def population_bias(sizes: tuple[int, ...] = (6,) * 8, seed: int = 5) -> dict:
    """KID's and FID's expectation at a suite's shape against their population values: KID's from
    independent 3,000-image samples, FID's at infinitely many samples (FID_N is linear in 1 / N,
    Chong and Forsyth 2020)."""
    gen = torch.Generator().manual_seed(seed)
    kid = np.mean(
        [
            M.mmd2(features(gen, (1,) * 3000, KID_DIM, True)[0], features(gen, (1,) * 3000, KID_DIM, True)[1])
            for _ in range(4)
        ]
    )
    big = (4000, 8000, 16000)
    fids = [
        M._fid(features(gen, (1,) * n, FID_DIM, True)[0], features(gen, (1,) * n, FID_DIM, True)[1])
        for n in big
    ]
    return {
        "shape": _seeds_text(sizes) + f" x {len(sizes)} prompts",
        "kid_expected": expected("KID", sizes, True),
        "kid_population": float(kid),
        "fid_expected": expected("FID", sizes, True),
        "fid_population": float(np.polyfit(1 / np.array(big), fids, 1)[1]),
    }


KINDS: dict[str, tuple[str, Callable[..., Cell]]] = {
    # kind: (the suite groups whose seeds per prompt it is measured at, its coverage function)
    "share": ("all", share),
    "paired share": ("all", paired_share),
    "mean": ("control", mean),
    "paired mean": ("control", paired_mean),
    "KID null": ("control", lambda sizes, reps, seed: kid(sizes, reps, seed, drift=False)),
    "KID drift": ("control", lambda sizes, reps, seed: kid(sizes, reps, seed, drift=True)),
    "FID drift": ("control", fid),
}
FEATURE_KINDS = ("KID null", "KID drift", "FID drift")
SCORED_GROUPS = {g for f in catalog.FAMILIES for g in f.groups}
"""Prompt groups the metric table scores (a suite's probes have their own metrics)."""


def suite_rows(name: str) -> list[dict]:
    """Per-prompt rows of the suite's shape, for the default edits (the outcomes do not matter here)."""
    suite = load_suite(name)
    rows = [
        {
            "group": it.group,
            "kind": it.kind,
            "concept": it.concept,
            "prompt": it.prompt,
            "seed": s,
            "base_label": it.concept,
            "tuned_label": it.concept,
            "success": True,
            "clip": 0.0,
            "clip_base": 0.0,
        }
        for it in suite.items
        for s in it.seeds
        if it.group in SCORED_GROUPS
    ]
    return with_targets(rows, DEFAULT_EDITS)


def shipped_shapes(suites: Sequence[str]) -> dict[str, set[tuple[int, ...]]]:
    """For each interval kind, the cluster sizes (seeds of each prompt) of every metric the suites score."""
    shapes: dict[str, set[tuple[int, ...]]] = {kind: set() for kind in KINDS}
    for name in suites:
        rows = suite_rows(name)
        for metric in score_rows(rows, DEFAULT_EDITS, 2, 0):
            fam = catalog.family(metric)
            sizes = tuple(sorted(Counter(r["prompt"] for r in catalog.rows_for(metric, rows)).values()))
            base = "share" if fam.binary else "mean"
            shapes[base].add(sizes)
            if pairable(metric):
                shapes[f"paired {base}"].add(sizes)
        control = tuple(Counter(r["prompt"] for r in rows if r["group"] == "control").values())
        for kind in FEATURE_KINDS:
            shapes[kind].add(control)
    return shapes


def seeds_per_prompt(suites: Sequence[str]) -> dict[str, dict[int, list[str]]]:
    """For each kind, the seeds per prompt of the groups it is measured on -> the suites that use them."""
    out: dict[str, dict[int, list[str]]] = {}
    for kind, (groups, _) in KINDS.items():
        found: dict[int, list[str]] = {}
        for name in suites:
            for item in load_suite(name).items:
                if item.group in SCORED_GROUPS and groups in ("all", item.group):
                    found.setdefault(len(item.seeds), [])
                    if name not in found[len(item.seeds)]:
                        found[len(item.seeds)].append(name)
        out[kind] = dict(sorted(found.items()))
    return out


def measure(
    kinds: Sequence[str],
    prompts: Sequence[int],
    suites: Sequence[str],
    reps: int,
    feature_reps: int,
    seed: int,
) -> list[Cell]:
    cells = []
    for kind in kinds:
        started = time.perf_counter()
        for m in seeds_per_prompt(suites)[kind]:
            for g in prompts:
                if kind in FEATURE_KINDS and not M.KID_MIN_PAIRS <= g * m <= MAX_FEATURE_ROWS[kind]:
                    continue
                cells.append(KINDS[kind][1]((m,) * g, feature_reps if kind in FEATURE_KINDS else reps, seed))
        print(f"{kind}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return cells


def table(cells: list[Cell], kind: str, prompts: Sequence[int], suites: Sequence[str]) -> str:
    users = seeds_per_prompt(suites)[kind]
    lines = [
        f"| {kind}: seeds/prompt (suites) | " + " | ".join(f"G={g}" for g in prompts) + " |",
        "| --- | " + " | ".join("---" for _ in prompts) + " |",
    ]
    for m, names in users.items():
        row = {len(c.sizes): c for c in cells if c.kind == kind and c.sizes[0] == m}
        text = [_cell_text(row[g]) if g in row else "—" for g in prompts]
        lines.append(f"| {m} ({', '.join(names)}) | " + " | ".join(text) + " |")
    return "\n".join(lines)


def _cell_text(c: Cell) -> str:
    ratio = c.width_ratio()
    width = "whole range" if math.isinf(ratio) else f"{ratio:.2f}x"
    return f"{c.coverage('before'):.3f} → {c.coverage('after'):.3f} ±{c.mc_error():.3f}, {width}"


def main(argv: list[str] | None = None) -> list[Cell]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--reps", type=int, default=300, help="simulated evaluations per cell, row-based kinds"
    )
    parser.add_argument(
        "--feature-reps", type=int, default=40, help="simulated evaluations per cell, KID and FID"
    )
    parser.add_argument("--kinds", default=",".join(KINDS), help="which: " + ", ".join(KINDS))
    parser.add_argument("--prompts", default=",".join(map(str, PROMPTS)), help="numbers of prompts G")
    parser.add_argument(
        "--suites",
        default=",".join(asset_names("eval/suites")),
        help="suites whose seeds per prompt are measured",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--bias",
        action="store_true",
        help="also print KID's and FID's expectation at the default suite's control shape against the "
        "population distance (a minute)",
    )
    parser.add_argument("--json", action="store_true", help="also print every cell as one JSON line")
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        parser.error(f"unknown kind(s) {', '.join(unknown)}; choose from {', '.join(KINDS)}")
    prompts = [int(g) for g in args.prompts.split(",")]
    suites = [s for s in args.suites.split(",") if s]
    torch.set_num_threads(1)  # small kernels: a second thread only contends on a shared machine
    started = time.perf_counter()
    cells = measure(kinds, prompts, suites, args.reps, args.feature_reps, args.seed)
    print(
        f"interval coverage: {args.reps} reps per row-based cell, {args.feature_reps} per KID/FID cell; "
        f"cell = before -> after +- MC SE, median width after/before; {time.perf_counter() - started:.0f} s\n"
    )
    for kind in kinds:
        print(table(cells, kind, prompts, suites) + "\n")
    if args.bias:
        print(json.dumps(population_bias()))
    if args.json:
        print(json.dumps([c.to_dict() for c in cells]))
    return cells


if __name__ == "__main__":
    main()
