"""Scoring: per-prompt rows -> metric entries, through the metric table (``catalog.FAMILIES``).

``score_rows`` is a plain function of the rows results.json stores (``PromptRow.to_json`` of
``swapbench/eval/rows.py``, where the fields are defined), so anything that writes rows of the same
shape (a rescoring, an in-loop evaluation, a new probe) gets the same metrics and the same clustered
intervals.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from swapbench import catalog, schema
from swapbench.catalog import Family, Row
from swapbench.edits import Edits, parse_edits
from swapbench.eval import metrics as M
from swapbench.eval import stats


def score_rows(rows: Sequence[Row], edits: Edits | Sequence[Sequence[str]], reps: int, seed: int) -> dict[str, dict]:
    """Every row-based metric of the table that the rows support: pooled first, then one per suffix."""
    if not isinstance(edits, Edits):
        edits = parse_edits([], edits)  # swap pairs
    rows = schema.with_targets(rows, edits)
    out: dict[str, dict] = {}
    for fam in catalog.FAMILIES:
        if fam.outcome is None or fam.several and len(edits) < 2:
            continue
        selected = [r for r in rows if fam.select(r, None)]
        if not selected:
            continue
        if fam.pooled:
            out[fam.head] = metric_entry(fam, selected, reps, seed)
        if fam.by == "group" and fam.pooled:
            continue  # one number over its groups (edit_success)
        for suffix in dict.fromkeys(fam.suffix_of(r) for r in selected):
            out[f"{fam.head}/{suffix}"] = metric_entry(fam, [r for r in selected if fam.select(r, suffix)], reps, seed)
    return out


def metric_entry(fam: Family, rows: Sequence[Row], reps: int, seed: int) -> dict[str, Any]:
    """One metric over ``rows``: the family's estimator, clustered by prompt."""
    values = [fam.outcome(r) for r in rows]
    clusters = [r["prompt"] for r in rows]
    if fam.binary:
        est = stats.clustered_proportion([v > 0.5 for v in values], clusters, reps, seed)
    else:
        est = stats.clustered_mean(values, clusters, reps, seed)
    return M.estimate_entry(est, fam.higher_is_better, fam.definition, fam.interval)


def share_entry(outcomes: Sequence[bool], prompts: Sequence[str], reps: int, seed: int, higher_is_better: bool | None,
                description: str) -> dict[str, Any]:
    """A share outside the table (a probe's own metric) with the same clustered interval as the table's."""
    est = stats.clustered_proportion(outcomes, prompts, reps, seed)
    return M.estimate_entry(est, higher_is_better, description, catalog.PROPORTION_INTERVAL)
