"""Evaluation suites as data (``eval/suites/<name>.yaml``), expanded into prompt items.

A suite names the judge's label set and templates, the swapped pair, and prompt groups:
``swap`` (prompts naming a swapped concept), ``control`` (other concepts that must not move),
``generality`` (plurals, contexts, paraphrases, compositions of a swapped concept) and
``specificity`` (near neighbours that must not move). Template fields: ``{a}`` the concept,
``{plural}`` its plural.

How an item succeeds:
- a prompt naming a swapped concept succeeds when the judge labels the image as its partner;
- a composition ("a giraffe next to an elephant") is judged on the two swapped labels only: it
  succeeds when the judge prefers the partner over the named concept, so the other animal in the
  scene does not decide the label;
- any other prompt succeeds when the tuned model's label equals the base model's for the same seed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from swapbench.assets import asset_names, asset_path
from swapbench.data.swap import plural
from swapbench.errors import UserError


@dataclass(frozen=True)
class PromptItem:
    group: str
    kind: str
    concept: str
    prompt: str
    seeds: tuple[int, ...]


@dataclass
class Suite:
    name: str
    labels: list[str]
    judge_templates: list[str]
    swap: tuple[str, str]
    items: list[PromptItem]
    keep_samples: int

    def partner(self, concept: str) -> str | None:
        a, b = self.swap
        return {a: b, b: a}.get(concept)

    @property
    def n_images(self) -> int:
        return sum(len(i.seeds) for i in self.items)


def load_suite(name_or_path: str, seeds_override: int | None = None) -> Suite:
    path = Path(name_or_path)
    if not path.suffix:
        names = asset_names("eval/suites")
        if name_or_path not in names:
            raise UserError(f"unknown suite {name_or_path!r}; available: {', '.join(names)}, or pass a suite YAML path")
        path = asset_path(f"eval/suites/{name_or_path}.yaml")
    if not path.is_file():
        raise UserError(f"suite file {path} not found; pass a suite name ({', '.join(asset_names('eval/suites'))}) or a YAML path")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        labels = [str(x) for x in raw["labels"]]
        swap = tuple(raw["swap"])
        groups = raw["groups"]
    except (yaml.YAMLError, KeyError, TypeError) as e:
        raise UserError(f"suite {path} is malformed ({type(e).__name__}: {e}); it needs labels, swap and groups") from None
    if len(swap) != 2 or any(c not in labels for c in swap):
        raise UserError(f"suite {path}: the label set must contain both swapped concepts {list(swap)}; add them to labels")
    items: list[PromptItem] = []
    for group, spec in groups.items():
        seeds = tuple(range(seeds_override or int(spec["seeds"])))
        kinds = spec.get("kinds") or {group: spec["prompts"]}
        for kind, templates in kinds.items():
            for concept in spec["concepts"]:
                if concept not in labels:
                    raise UserError(f"suite {path}: concept {concept!r} of group {group} is not in labels; add it")
                for template in templates:
                    text = template.format(a=concept, plural=plural(concept))
                    items.append(PromptItem(group, kind, concept, text, seeds))
    return Suite(path.stem, labels, list(raw.get("judge_templates") or ["a photo of a {}."]), swap, items,
                 int(raw.get("keep_samples", 4)))


def custom_items(path: str | Path, suite: Suite, seeds: int) -> list[PromptItem]:
    """``--prompts FILE.jsonl``: one {"prompt", "concept"} object per line -> group ``custom``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"prompts file {path} not found; pass a JSONL file with one {{\"prompt\", \"concept\"}} per line")
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            prompt, concept = str(obj["prompt"]), str(obj["concept"])
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{path}:{number} must be a JSON object with \"prompt\" and \"concept\"") from None
        if concept not in suite.labels:
            raise UserError(f"{path}:{number}: concept {concept!r} is not in the suite's labels ({', '.join(suite.labels)})")
        items.append(PromptItem("custom", "custom", concept, prompt, tuple(range(seeds))))
    if not items:
        raise UserError(f"prompts file {path} holds no prompts")
    return items
