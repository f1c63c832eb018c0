"""Paired comparisons on the per-prompt rows: run against run (compare, gate) and tuned against base.

Two evaluations on the same suite, seeds and sampler score the same (prompt, seed) rows, so a
difference is measured row by row: ``stats.paired`` gives the mean difference, its paired
cluster-bootstrap interval and an exact McNemar p for binary outcomes; Holm adjusts across the
metrics compared. Which rows a metric counts and how comes from the metric table (``catalog``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats as sps

from swapbench import catalog, schema
from swapbench.errors import UserError
from swapbench.eval import stats

REPS = 2000
SEED = 0
ALPHA = 0.05


def pairable(name: str) -> bool:
    """Row-based metrics of a model under test (the base-only families compare the same model twice)."""
    fam = catalog.family(name)
    return (fam is not None and fam.outcome is not None and fam.higher_is_better is not None
            and fam.head != "clip_score_base")


def matched(name: str, first: dict, second: dict) -> tuple[list[float], list[float], list[str]]:
    """Outcomes of ``name`` in both results on the rows they share, with the rows' prompts."""
    fam = catalog.family(name)
    if fam is None or fam.outcome is None:
        return [], [], []
    a = {catalog.row_key(r): r for r in catalog.rows_for(name, schema.rows(first))}
    b = {catalog.row_key(r): r for r in catalog.rows_for(name, schema.rows(second))}
    keys = [k for k in a if k in b]
    return [fam.outcome(a[k]) for k in keys], [fam.outcome(b[k]) for k in keys], [a[k]["prompt"] for k in keys]


def compare(first: dict, second: dict, names: Sequence[str], reps: int = REPS, seed: int = SEED) -> dict[str, dict]:
    """``second - first`` for every pairable metric of ``names`` both results can pair, with Holm over them."""
    results: dict[str, stats.Paired] = {}
    for name in names:
        if not pairable(name):
            continue
        x, y, clusters = matched(name, first, second)
        if x:
            results[name] = stats.paired(x, y, clusters, reps, seed, binary=catalog.family(name).binary)
    adjusted = stats.holm([r.p for r in results.values()])
    return {name: r.to_dict(p) for (name, r), p in zip(results.items(), adjusted, strict=True)}


def worse_p(first: Sequence[float], second: Sequence[float], binary: bool, higher_is_better: bool) -> float:
    """One-sided p-value of "``second`` is no worse than ``first``" on these rows, the suite's prompts
    and seeds taken as fixed: the exact one-sided McNemar test on the discordant rows for shares, a
    one-sided paired t-test on the rows for means.

    A gate asks whether this model is worse than the baseline on this suite, not on prompts at large.
    Given the two models and a prompt, every seed is its own noise, so the rows are independent pairs
    and no cluster correction applies; the clustered interval (prompts as a sample) is what `compare`
    reports for a claim about prompts beyond the suite."""
    d = _better_by(first, second, higher_is_better)
    if binary:
        worse, better = changed_rows(first, second, higher_is_better)
        return 1.0 if worse + better == 0 else float(sps.binomtest(worse, worse + better, 0.5,
                                                                   alternative="greater").pvalue)
    if len(d) < 2 or not d.any():
        return 1.0
    if d.std() == 0:
        return 0.0 if d[0] < 0 else 1.0
    return float(sps.ttest_1samp(d, 0.0, alternative="less").pvalue)


def changed_rows(first: Sequence[float], second: Sequence[float], higher_is_better: bool) -> tuple[int, int]:
    """(rows where ``second`` is worse than ``first``, rows where it is better)."""
    d = _better_by(first, second, higher_is_better)
    return int((d < 0).sum()), int((d > 0).sum())


def _better_by(first: Sequence[float], second: Sequence[float], higher_is_better: bool) -> np.ndarray:
    sign = 1.0 if higher_is_better else -1.0
    return sign * (np.asarray(second, dtype=float) - np.asarray(first, dtype=float))


def check_pairable(first: dict, second: dict) -> None:
    """Two evaluations pair row by row when they scored the same rows the same way: the suite, the
    sampler, the judge's labels and templates, the edited concepts and every row's (prompt, seed).
    Anything else about the runs (their training seed, the bootstrap seed of their own intervals, the
    method) is what a comparison is for, so it never blocks one; paired statistics use their own fixed
    bootstrap seed."""
    for what, get in PAIRING_SETTINGS.items():
        va, vb = get(first), get(second)
        if va is not None and vb is not None and va != vb:
            raise UserError(f"runs {first.get('run')!r} and {second.get('run')!r} were evaluated with different {what} "
                            f"({_short(va)} vs {_short(vb)}); evaluate both the same way (swapbench eval RUN --suite S "
                            "--set eval.seeds=...) to compare them")
    ka = {catalog.row_key(r) for r in first.get("per_prompt") or []}
    kb = {catalog.row_key(r) for r in second.get("per_prompt") or []}
    if ka and kb and ka != kb:
        raise UserError(f"runs {first.get('run')!r} and {second.get('run')!r} were scored on different prompts or "
                        f"seeds ({len(ka ^ kb)} (prompt, seed) rows in only one); evaluate both with the same suite, "
                        "seeds and --prompts file")


def _provenance(key: str):
    return lambda results: (results.get("provenance") or {}).get(key)


def _seeds_per_prompt(seeds):
    return seeds.get("per_prompt") if isinstance(seeds, dict) else seeds  # results before the bootstrap seed


PAIRING_SETTINGS = {
    "suite": lambda r: r.get("suite"),
    "sampler settings": lambda r: r.get("sampler"),
    "seeds per prompt": lambda r: _seeds_per_prompt(_provenance("seeds")(r)),
    "judge templates": _provenance("judge_templates"),
    "concept labels": lambda r: r.get("labels"),
    "edits": schema.edit_config,
}


def _short(value) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def base_comparison(results: dict, reps: int = REPS, seed: int = SEED) -> dict[str, dict]:
    """Tuned against base on the same rows, for every metric of the primary judge whose family says what
    the base scores there; Holm across them. (A further judge's metrics re-count the same images: testing
    them too would spend the Holm budget on the judges rather than the model.)"""
    rows = schema.rows(results)
    found: dict[str, stats.Paired] = {}
    for name in results.get("metrics", {}):
        fam = catalog.family(name)
        if fam is None or fam.base_outcome is None or not pairable(name) or catalog.judge_of(name)[0] is not None:
            continue
        selected = catalog.rows_for(name, rows)
        if not selected:
            continue
        found[name] = stats.paired([fam.base_outcome(r) for r in selected], [fam.outcome(r) for r in selected],
                                   [r["prompt"] for r in selected], reps, seed, binary=fam.binary)
    adjusted = stats.holm([r.p for r in found.values()])
    return {name: r.to_dict(p) for (name, r), p in zip(found.items(), adjusted, strict=True)}


def what_moved(results: dict, reps: int = REPS, seed: int = SEED) -> list[dict]:
    """Metrics whose paired difference from the base is significant after Holm, largest first, with
    whether the move is the intended one (``good``)."""
    out = []
    for name, d in base_comparison(results, reps, seed).items():
        if d["p_holm"] is not None and d["p_holm"] < ALPHA and d["diff"] != 0:
            up = catalog.higher_is_better(name)
            out.append({"metric": name, **d, "good": (d["diff"] > 0) == bool(up)})
    return sorted(out, key=lambda m: (catalog.rank(m["metric"])))
