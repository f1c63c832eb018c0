"""Evaluation suites as data (``eval/suites/<name>.yaml``), expanded into prompt items.

A suite is a template over the swap pairs of the run it evaluates (``data.swap_pairs`` of the run's
config.json), so one suite measures a giraffe<->zebra run and a horse<->cow run alike. It names the
judge's label set and templates and four prompt groups:
``swap`` (prompts naming a swapped concept), ``control`` (other concepts that must not move),
``generality`` (plurals, contexts, paraphrases, compositions of a swapped concept) and
``specificity`` (near neighbours that must not move). A suite may add robustness probes under
``probes:`` (forms, trajectory, unnamed; see ``swapbench/eval/probes.py``). A group's ``concepts`` is either
``swapped`` (every concept of every pair) or a list; the run's swapped concepts are left out of a
list, so a control is never a concept the run swaps. Template fields: ``{a}`` the concept,
``{plural}`` its plural. A prompt that would also name another swapped concept ("a horse next to a
cow" when both are swapped) is left out: it has no single right answer.

How an item succeeds:
- a prompt naming a swapped concept succeeds when the judge labels the image as its partner;
- a composition ("a giraffe next to an elephant") is judged on the two swapped labels only: it
  succeeds when the judge prefers the partner over the named concept, so the other animal in the
  scene does not decide the label;
- any other prompt succeeds when the tuned model's label equals the base model's for the same seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from swapbench.concepts import suite_path
from swapbench.data.swap import ConceptSwapper, plural
from swapbench.errors import UserError
from swapbench.eval.probes import TrajectorySpec, expand
from swapbench.eval.rows import PromptItem
from swapbench.schema import partners

SWAPPED = "swapped"
"""A group's ``concepts: swapped``: every concept of the run's swap pairs."""
DEFAULT_PAIRS = (("giraffe", "zebra"),)


@dataclass
class Suite:
    name: str
    labels: list[str]
    judge_templates: list[str]
    swap_pairs: list[tuple[str, str]]
    items: list[PromptItem]
    keep_samples: int
    trajectory: TrajectorySpec | None = None
    """The trajectory probe's settings (``probes: trajectory:``), if the suite has one."""

    def partner(self, concept: str) -> str | None:
        return partners(self.swap_pairs).get(concept)

    @property
    def swapped(self) -> list[str]:
        return [c for pair in self.swap_pairs for c in pair]


def load_suite(name_or_path: str, seeds_override: int | None = None,
               swap_pairs: Sequence[Sequence[str]] = DEFAULT_PAIRS) -> Suite:
    """The suite's prompts for the run's ``swap_pairs`` (``data.swap_pairs``)."""
    path = suite_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        labels = [str(x) for x in raw["labels"]]
        groups = raw["groups"]
        declared = raw.get("swap")
    except (yaml.YAMLError, KeyError, TypeError) as e:
        raise UserError(f"suite {path} is malformed ({type(e).__name__}: {e}); it needs labels and groups") from None
    pairs = _check_pairs(swap_pairs, labels, path)
    swapped = {c for pair in pairs for c in pair}
    if declared is not None and {frozenset(map(str, declared))} != {frozenset(p) for p in pairs}:
        # Suites written before they became templates name their pair; scoring another pair with
        # such a suite would silently measure the wrong swap.
        raise UserError(f"suite {path} is written for the pair {list(declared)} (its swap: key) but the run swaps "
                        f"{[list(p) for p in pairs]}; delete swap: from the suite to template it over the run's pairs")
    others = ConceptSwapper(pairs)
    items: list[PromptItem] = []
    for group, spec in groups.items():
        seeds = tuple(range(seeds_override or int(spec["seeds"])))
        kinds = spec.get("kinds") or {group: spec["prompts"]}
        concepts = spec["concepts"]
        if concepts == SWAPPED:
            concepts = [c for pair in pairs for c in pair]
        elif not isinstance(concepts, list):
            raise UserError(f"suite {path}: concepts of group {group} must be a list or {SWAPPED!r}")
        for kind, templates in kinds.items():
            for concept in concepts:
                if concept not in labels:
                    raise UserError(f"suite {path}: concept {concept!r} of group {group} is not in labels; add it")
                if concept in swapped and spec["concepts"] != SWAPPED:
                    continue
                for template in templates:
                    text = template.format(a=concept, plural=plural(concept))
                    if others.mentioned(text) - {concept}:
                        continue
                    items.append(PromptItem(group, kind, concept, text, seeds))
    probe_items, trajectory = expand(raw.get("probes"), labels, [c for pair in pairs for c in pair], path,
                                     seeds_override)
    return Suite(path.stem, labels, list(raw.get("judge_templates") or ["a photo of a {}."]), pairs,
                 items + probe_items, int(raw.get("keep_samples", 4)), trajectory)


def _check_pairs(swap_pairs: Sequence[Sequence[str]], labels: list[str], path: Path) -> list[tuple[str, str]]:
    pairs = [tuple(str(c) for c in pair) for pair in swap_pairs]
    concepts = [c for pair in pairs for c in pair]
    if not pairs or any(len(p) != 2 or p[0] == p[1] for p in pairs) or len(set(concepts)) != len(concepts):
        raise UserError(f"data.swap_pairs {[list(p) for p in pairs]} must be pairs of two different concepts, each "
                        "concept in one pair only; e.g. --set 'data.swap_pairs=[[giraffe,zebra]]'")
    missing = [c for c in concepts if c not in labels]
    if missing:
        raise UserError(f"suite {path}: its labels must contain both swapped concepts of every pair in "
                        f"data.swap_pairs ({', '.join(missing)} missing); add them to labels or use another suite")
    return [(a, b) for a, b in pairs]

