"""Summary metrics: one number that other papers report, made of several of the row sets at once.

``mace_h``: MACE's harmonic mean (Lu et al. 2024, "MACE: Mass Concept Erasure in Text-to-Image Diffusion
Models") of an erasure's efficacy, specificity and generality,

    H = 3 / (1 / (1 - Acc_E) + 1 / Acc_S + 1 / (1 - Acc_G)),

with MACE's three accuracies read off the judged rows:

- Acc_E (efficacy, lower is better): the share of images of the ``erase`` group (prompts naming an
  erased concept) that the judge labels as their erased concept;
- Acc_S (specificity, higher is better): the share of ``control`` and ``specificity`` images (concepts
  the edits must leave alone) that the judge labels as their prompted concept;
- Acc_G (generality, lower is better): the share of ``generality`` images of erased concepts (plurals,
  contexts, paraphrases; compositions are not scored for an erasure, the other animal of the scene
  decides their label) that the judge labels as the erased concept.

A term whose accuracy leaves it no room (Acc_E = 1, Acc_S = 0 or Acc_G = 1) makes H 0. All erased concepts
are pooled, as MACE pools its erased classes. Only for a run with an erasure, and only where all three row
sets have rows.

The 95% interval is a cluster bootstrap over prompts, stratified by the three row sets: each replicate
resamples the prompts of each set (their seeds inside) independently, and H is recomputed from the three
resampled shares. The interval is H +- t standard errors, within [0, 1]: a t interval rather than the
bootstrap's percentiles, which are as wide as the normal quantile makes them and covered too little at the
few prompts per metric a suite has (docs/ci.md, "Interval coverage"). The standard error is the larger of

- the replicates' spread, times sqrt(G / (G - 1)) as in ``stats.cluster_se``, with t at G - 1 degrees of
  freedom for the smallest of the three sets' G prompts, and
- an independent-rows floor: the delta method on the three shares with Agresti and Coull's two successes
  and two failures added to each (sqrt(p (1 - p) / (n + 4)) each), t at n - 1 for the smallest set's n rows.

The floor is there for H at a bound: where a share is 0 or 1 on every row (an erasure that erased nothing:
Acc_E = 1, H = 0) every replicate repeats it and the bootstrap alone would give a zero-width interval.
Under ``stats.MIN_PROMPTS`` prompts in any set the interval is the whole range [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from swapbench.catalog import BY_HEAD, Row
from swapbench.edits import Edits
from swapbench.eval import metrics as M
from swapbench.eval import stats


def mace_sets(rows: Sequence[Row]) -> tuple[list[Row], list[Row], list[Row]]:
    """The rows of Acc_E, Acc_S and Acc_G (see the module docstring)."""
    erased = [r for r in rows if r.get("group") == "erase" and r.get("erased")]
    kept = [r for r in rows if r.get("group") in ("control", "specificity")]
    general = [r for r in rows
               if r.get("group") == "generality" and r.get("erased") and r.get("kind") != "compositions"]
    return erased, kept, general


def harmonic(acc_e: float, acc_s: float, acc_g: float) -> float:
    """MACE's H of the three accuracies; 0 where a term has no room (a zero in a harmonic mean)."""
    terms = (1 - acc_e, acc_s, 1 - acc_g)
    if min(terms) <= 0:
        return 0.0
    return 3 / sum(1 / t for t in terms)


def _judged_as_concept(rows: Sequence[Row]) -> np.ndarray:
    return np.asarray([r["tuned_label"] == r["concept"] for r in rows], dtype=float)


def _bootstrap_shares(rows: Sequence[Row], reps: int, seed: int) -> tuple[np.ndarray, int]:
    """Each replicate's share of ``rows`` judged as their concept, prompts resampled whole, and G."""
    index, g = stats.cluster_index([r["prompt"] for r in rows])
    x = _judged_as_concept(rows)
    sums, sizes = np.bincount(index, x, g), np.bincount(index, None, g)
    draws = stats.bootstrap_draws(g, reps, seed)
    return sums[draws].sum(1) / sizes[draws].sum(1), g


def rows_se(shares: Sequence[float], sizes: Sequence[int]) -> float:
    """The independent-rows floor of H's standard error: the delta method at the Agresti-Coull shares
    (two successes and two failures added), where neither H nor its gradient sits at a bound."""
    adjusted = [((p * n + 2) / (n + 4), n) for p, n in zip(shares, sizes, strict=True)]
    terms = [1 - adjusted[0][0], adjusted[1][0], 1 - adjusted[2][0]]
    total = sum(1 / t for t in terms)
    gradient = [3 / (total * total * t * t) for t in terms]  # |dH / d share|: the sign drops out of the variance
    return math.sqrt(sum(g * g * p * (1 - p) / (n + 4) for g, (p, n) in zip(gradient, adjusted, strict=True)))


def mace_h(rows: Sequence[Row], reps: int, seed: int) -> dict | None:
    """The ``mace_h`` entry of the rows, or None when one of its three row sets is empty. The entry adds
    ``acc_e``, ``acc_s`` and ``acc_g``, the three accuracies it is made of."""
    sets = mace_sets(rows)
    if not all(sets):
        return None
    accs = [float(_judged_as_concept(s).mean()) for s in sets]
    value = harmonic(*accs)
    # one generator seed per set: the three resamplings are independent
    boots = [_bootstrap_shares(s, reps, seed + k) for k, s in enumerate(sets)]
    g, m = min(gk for _, gk in boots), min(len(s) for s in sets)
    n, n_clusters = sum(len(s) for s in sets), sum(gk for _, gk in boots)
    fam = BY_HEAD["mace_h"]
    if any(stats.too_few_prompts(len(s), gk) for s, (_, gk) in zip(sets, boots, strict=True)):
        out = M.entry(value, (0.0, 1.0), n, fam.higher_is_better, fam.definition, n_clusters, stats.TOO_FEW_PROMPTS)
    else:
        replicates = np.asarray([harmonic(e, s, gen) for e, s, gen in zip(*(b for b, _ in boots), strict=True)])
        se_cluster = float(replicates.std()) * math.sqrt(g / (g - 1))
        se_rows = rows_se(accs, [len(s) for s in sets])
        se, df = (se_cluster, g - 1) if se_cluster > se_rows else (se_rows, m - 1)
        half = stats.t95(df) * se
        out = M.entry(value, (max(0.0, value - half), min(1.0, value + half)), n, fam.higher_is_better,
                      fam.definition, n_clusters, fam.interval)
    return {**out, **{name: M.stable(acc) for name, acc in zip(("acc_e", "acc_s", "acc_g"), accs, strict=True)}}


def score(rows: Sequence[Row], edits: Edits, reps: int, seed: int) -> dict[str, dict]:
    """The summary metrics of an evaluation's rows: ``mace_h`` for a run with an erasure."""
    if not edits.of_kind("erase"):
        return {}
    entry = mace_h(rows, reps, seed)
    return {"mace_h": entry} if entry is not None else {}
