"""Power of a paired comparison on a suite: the smallest difference it detects, the seeds it needs.

For each headline share of an evaluated run (``p`` its value, ``G`` its prompts, ``m`` its seeds per
prompt, the design effect its interval measured): two runs compared row by row differ in a row's
outcome with variance at most ``2 p (1 - p)``; prompts correlate their seeds with
``icc = (deff - 1) / (m - 1)``. The smallest difference a two-sided 5% paired test detects with 80%
power is ``(t_0.975 + z_0.8) sqrt(2 p (1 - p) (1 + (m - 1) icc) / (G m))``, t with G - 1 degrees of
freedom when icc > 0 (the paired interval's quantile). More seeds shrink it only down to the
prompts' floor ``(t_0.975 + z_0.8) sqrt(2 p (1 - p) icc / G)``; below that a suite needs more prompts,
not more seeds.
"""

from __future__ import annotations

from swapbench import catalog
from swapbench.eval import stats


def power_table(results: dict, diff: float | None = None, seeds: int | None = None, power: float = 0.8) -> list[dict]:
    """One row per headline share: p, prompts, seeds, icc, detectable difference, seeds needed for ``diff``."""
    rows = []
    for name in catalog.headline(results["metrics"]):
        fam = catalog.family(name)
        m = results["metrics"][name]
        if fam is None or not fam.binary or not m.get("n_clusters") or m["n"] == 0:
            continue
        g = int(m["n_clusters"])
        per = m["n"] / g
        icc = stats.icc_from_design_effect(float(m.get("design_effect", 1.0)), per)
        # A share of exactly 0 or 1 has no variance to measure; size for the nearest share one failure would give.
        p = min(max(m["value"], 1 / (m["n"] + 1)), 1 - 1 / (m["n"] + 1))
        use = seeds or max(1, round(per))
        row = {"metric": name, "value": m["value"], "prompts": g, "seeds_per_prompt": use, "icc": round(icc, 3),
               "detectable_diff": round(stats.detectable_difference(p, g, use, icc, power), 4)}
        if diff is not None:
            row["seeds_for_diff"] = stats.seeds_needed(diff, p, g, icc, power)
        rows.append(row)
    return rows
