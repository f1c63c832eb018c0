"""Further judges (``eval.judges``): their metrics and their agreement with the primary judge.

Every per-prompt row carries each further judge's base and tuned label and success (``labels``),
so everything here is a function of results.json's rows, as ``scoring.score_rows`` is:

- ``judge/<name>/<metric>``: every row-based metric of the table and every probe's, counted on the
  rows as that judge labelled them (``catalog.judge_rows``). The image-text scores (``clip_score``)
  and the feature distances (KID, FID) are the primary judge's alone.
- ``agreement/<name>/share`` and ``agreement/<name>/kappa``: over every image both judges labelled,
  each row's tuned image and its base image (a trajectory row's base is a swap row's start image,
  counted there; with the base evaluated against itself the two are one image), the share labelled
  alike and Cohen's kappa, prompts as clusters.
"""

from __future__ import annotations

from collections.abc import Sequence

from swapbench import catalog
from swapbench.eval import metrics as M
from swapbench.eval import probes, scoring, stats


def score(records: Sequence[dict], suite, names: Sequence[str], reps: int, seed: int, same: bool) -> dict[str, dict]:
    """Each further judge's metrics, then its agreement with the primary judge, in the order of ``names``.
    ``same``: the tuned images are the base images."""
    out: dict[str, dict] = {}
    for name in names:
        rows = catalog.judge_rows(list(records), name)
        found = {**scoring.score_rows(rows, suite.edits, reps, seed), **probes.score(rows, suite, reps, seed)}
        for metric in catalog.ordered(found):
            entry, full = found[metric], catalog.judge_metric(name, metric)
            # outside the table a metric keeps its own description, which then names the judge as well
            out[full] = {**entry, "description": catalog.definition(full) if catalog.family(full) is not None
                         else f"judge {name}: {entry['description']}"}
        out.update(agreement(records, name, reps, seed, same))
    return out


def image_labels(records: Sequence[dict], name: str, same: bool) -> tuple[list[str], list[str], list[str]]:
    """(primary's label, judge ``name``'s label, prompt) of every image both judged, each image once."""
    primary, other, prompts = [], [], []
    for row in records:
        mine = (row.get("labels") or {}).get(name)
        if mine is None:
            continue
        for side in ("tuned",) if same or row["group"] == "trajectory" else ("tuned", "base"):
            primary.append(row[f"{side}_label"])
            other.append(mine[side])
            prompts.append(row["prompt"])
    return primary, other, prompts


def agreement(records: Sequence[dict], name: str, reps: int, seed: int, same: bool) -> dict[str, dict]:
    """``agreement/<name>/share`` and ``agreement/<name>/kappa``, with clustered intervals."""
    primary, other, prompts = image_labels(records, name, same)
    definition = catalog.BY_HEAD["agreement"].definition
    share = stats.clustered_proportion([a == b for a, b in zip(primary, other, strict=True)], prompts, reps, seed)
    kappa = stats.clustered_kappa(primary, other, prompts, reps, seed)
    kappa_interval = stats.TOO_FEW_PROMPTS if stats.too_few_prompts(kappa.n, kappa.n_clusters) else \
        catalog.KAPPA_INTERVAL
    return {f"agreement/{name}/share": M.estimate_entry(share, None, definition, catalog.PROPORTION_INTERVAL),
            f"agreement/{name}/kappa": M.entry(kappa.value, kappa.ci95, kappa.n, None, definition, kappa.n_clusters,
                                               kappa_interval)}
