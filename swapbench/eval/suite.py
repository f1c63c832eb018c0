"""Evaluation suites as data (``eval/suites/<name>.yaml``), expanded into prompt items.

A suite is a template over the edits of the run it evaluates (``edits``, or ``data.swap_pairs``, of the
run's config.json; swapbench/edits/), so one suite measures a giraffe<->zebra swap, an erased lion and a
horse -> cow remap alike. It names the judge's label set and templates and four prompt groups:
``swap`` (prompts naming an edited concept; each row's group is its edit's kind: ``swap``, ``remap`` or
``erase``), ``control`` (other concepts that must not move), ``generality`` (plurals, contexts,
paraphrases, compositions of an edited concept) and ``specificity`` (near neighbours that must not
move). A suite may add robustness probes under ``probes:`` (forms, trajectory, unnamed; see
``swapbench/eval/probes.py``) and ``nothing:`` labels with their own texts, the judge's "none of these"
for a run that erases (an erased image need not show any concept). A group's ``concepts`` is either
``swapped`` (every edited concept: the sources of the run's edits) or a list; the run's edited concepts
are left out of a list, so a control is never a concept the run edits (a remap's target and an erasure's
anchor stay: their own prompts must not move). Template fields: ``{a}`` the concept, ``{plural}`` its
plural. A prompt that would also name another edited concept ("a horse next to a cow" when both are
edited) is left out: it has no single right answer. Compositions are left out for an edit without a
target (an erasure): the scene's other animal, not the edit, would decide the label.

How an item succeeds (the edit's own rule, ``swapbench.edits.Edit``):
- a prompt naming an edited concept succeeds when its tuned image shows the edit: judged as the target
  (a swap's partner, a remap's target), or for an erasure judged anything but the erased concept;
- a composition ("a giraffe next to an elephant") is judged on the two labels only: it succeeds when the
  judge prefers the target over the named concept, so the other animal in the scene does not decide;
- any other prompt succeeds when the tuned model's label equals the base model's for the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from swapbench.concepts import suite_path
from swapbench.edits import Edits, parse_edits
from swapbench.edits.words import concept_finder, plural
from swapbench.errors import UserError
from swapbench.eval.probes import TrajectorySpec, expand
from swapbench.eval.rows import PromptItem

SWAPPED = "swapped"
"""A group's ``concepts: swapped``: every edited concept (the sources of the run's edits)."""
EDITED_GROUP = "swap"
"""The suite group of prompts naming an edited concept; its rows take their edit's kind as group."""
DEFAULT_EDITS = parse_edits([], [("giraffe", "zebra")])


@dataclass
class Suite:
    name: str
    labels: list[str]
    judge_templates: list[str]
    edits: Edits
    items: list[PromptItem]
    keep_samples: int
    trajectory: TrajectorySpec | None = None
    """The trajectory probe's settings (``probes: trajectory:``), if the suite has one."""
    nothing: dict[str, list[str]] | None = None
    """The "none of these" labels in ``labels`` (a run that erases) and the texts the judge reads them from."""

    def target(self, concept: str) -> str | None:
        return self.edits.target(concept)

    @property
    def swap_pairs(self) -> list[tuple[str, str]]:
        return self.edits.swap_pairs

    @property
    def swapped(self) -> list[str]:
        """The edited concepts (the sources of the run's edits)."""
        return self.edits.sources


def load_suite(name_or_path: str, seeds_override: int | None = None, edits: Edits = DEFAULT_EDITS) -> Suite:
    """The suite's prompts for the run's ``edits``."""
    path = suite_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        labels = [str(x) for x in raw["labels"]]
        groups = raw["groups"]
        declared = raw.get("swap")
        nothing = {str(k): [str(t) for t in v] for k, v in (raw.get("nothing") or {}).items()}
    except (yaml.YAMLError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"suite {path} is malformed ({type(e).__name__}: {e}); it needs labels and groups") from None
    named_nothing = [c for c in edits.concepts if c in nothing]
    if named_nothing:
        raise UserError(f"suite {path}: {', '.join(named_nothing)} is one of its nothing labels, not a concept to edit")
    edits.check_labels(labels, f"suite {path}")
    if declared is not None and [{"swap": sorted(map(str, declared))}] != [
            {"swap": sorted(e.to_config().get("swap", []))} for e in edits]:
        # Suites written before they became templates name their pair; scoring another edit with such a
        # suite would silently measure the wrong one.
        raise UserError(f"suite {path} is written for the pair {list(declared)} (its swap: key) but the run edits "
                        f"{edits.describe()}; delete swap: from the suite to template it over the run's edits")
    if edits.erases and not nothing:
        raise UserError(f"suite {path} has no nothing: labels, so an erased image would be forced into some concept; "
                        "add nothing: {LABEL: [texts of a scene without any concept]} to the suite")
    edited = set(edits.sources)
    finder = concept_finder(edited)
    items: list[PromptItem] = []
    for group, spec in groups.items():
        seeds = tuple(range(seeds_override or int(spec["seeds"])))
        kinds = spec.get("kinds") or {group: spec["prompts"]}
        concepts = spec["concepts"]
        if concepts == SWAPPED:
            concepts = edits.sources
        elif not isinstance(concepts, list):
            raise UserError(f"suite {path}: concepts of group {group} must be a list or {SWAPPED!r}")
        for kind, templates in kinds.items():
            for concept in concepts:
                if concept not in labels:
                    raise UserError(f"suite {path}: concept {concept!r} of group {group} is not in labels; add it")
                if concept in edited and spec["concepts"] != SWAPPED:
                    continue
                if kind == "compositions" and edits.target(concept) is None:
                    continue
                row_group = edits.of(concept).kind if group == EDITED_GROUP and concept in edited else group
                for template in templates:
                    text = template.format(a=concept, plural=plural(concept))
                    if finder.mentioned(text) - {concept}:
                        continue
                    items.append(PromptItem(row_group, kind if kind != group else row_group, concept, text, seeds))
    probe_items, trajectory = expand(raw.get("probes"), labels, edits.sources, path, seeds_override)
    used = nothing if edits.erases else None
    return Suite(path.stem, labels + list(used or {}), list(raw.get("judge_templates") or ["a photo of a {}."]),
                 edits, items + probe_items, int(raw.get("keep_samples", 4)), trajectory, used)
