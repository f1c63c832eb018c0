"""``{remap: A, to: B}``: A's prompts draw B, while B's prompts keep drawing B (one direction of a swap)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from swapbench.edits import EXAMPLE, AnchorPool, Edit, concept_name
from swapbench.edits.words import ConceptRewriter
from swapbench.errors import UserError


def copied_as(record: dict, source: str, target: str) -> list[dict]:
    """A record of ``target`` (B) as it is and once more with B's words written as ``source`` (A): images of B
    captioned A teach A's words to draw B, and the original keeps B's own words drawing B. A record of A
    is dropped: its image would teach A's words to keep drawing A."""
    if source in record["named"]:
        return []
    rewriter = ConceptRewriter({target: source})
    copy = {"image": record["image"], "captions": [rewriter.swap_text(c) for c in record["captions"]],
            "tokens": [rewriter.swap_tokens(t) for t in record.get("tokens") or []]}
    return [{k: v for k, v in record.items() if k != "named"}, copy]


@dataclass(frozen=True)
class Remap(Edit):
    source: str
    to: str

    kind = "remap"
    keys = ("remap", "to")
    summary = "A's prompts draw B; B's own prompts keep drawing B"
    verb = "remapped"

    @classmethod
    def parse(cls, item: Mapping[str, Any]) -> Remap:
        if "to" not in item:
            raise UserError(f"remap {item['remap']!r} needs to: the concept its prompts should draw; "
                            f"e.g. {{remap: {item['remap']}, to: zebra}}")
        a, b = concept_name(item["remap"], "a remapped concept"), concept_name(item["to"], "remap's to")
        if a == b:
            raise UserError(f"remap {a} to {b} maps a concept onto itself; name another concept as to: ({EXAMPLE})")
        return cls(a, b)

    @property
    def sources(self) -> tuple[str, ...]:
        return (self.source,)

    def target(self, concept: str) -> str | None:
        return self.to if concept == self.source else None

    def describe(self) -> str:
        return f"{self.source} -> {self.to}"

    def to_config(self) -> dict[str, Any]:
        return {"remap": self.source, "to": self.to}

    def metrics(self) -> list[str]:
        return [f"remap_success/{self.source}->{self.to}"]

    def training(self, record: dict, named: set[str], pool: AnchorPool) -> list[dict]:
        return copied_as({**record, "named": named}, self.source, self.to)


EDIT = Remap
