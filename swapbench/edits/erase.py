"""``{erase: A}``: A's prompts draw anything but A; ``{erase: A, anchor: C}``: they draw C instead.

Success for a prompt naming A: its tuned image is not judged A (anchored or not). An erased image need
not show another concept, so an erasing run's judge also has the suite's ``nothing`` labels ("none of
these": an empty landscape), and what A's images became is reported as their label distribution, base
against tuned (results.json's ``confusion`` and ``confusion_base``). An anchored erasure also scores
``erase_anchor/A->C``: the share judged C.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from swapbench.edits import EXAMPLE, AnchorPool, Edit, concept_name
from swapbench.edits.remap import copied_as
from swapbench.errors import UserError


@dataclass(frozen=True)
class Erase(Edit):
    concept: str
    anchor: str | None = None

    kind = "erase"
    keys = ("erase", "anchor")
    summary = "A's prompts draw anything but A (with anchor: C instead)"
    verb = "erased"

    @classmethod
    def parse(cls, item: Mapping[str, Any]) -> Erase:
        a = concept_name(item["erase"], "an erased concept")
        anchor = item.get("anchor")
        if anchor is None:
            return cls(a)
        c = concept_name(anchor, "an erasure's anchor")
        if c == a:
            raise UserError(f"erase {a} names itself as its anchor; the anchor is the concept drawn instead "
                            f"(e.g. {{erase: {a}, anchor: horse}}), or leave anchor out ({EXAMPLE})")
        return cls(a, c)

    @property
    def sources(self) -> tuple[str, ...]:
        return (self.concept,)

    @property
    def concepts(self) -> tuple[str, ...]:
        return (self.concept,) + ((self.anchor,) if self.anchor else ())

    def target(self, concept: str) -> str | None:
        return None

    def anchor_of(self, concept: str) -> str | None:
        return self.anchor if concept == self.concept else None

    def replacement(self, concept: str) -> str | None:
        return self.anchor_of(concept)

    def describe(self) -> str:
        return f"erase {self.concept}" + (f" (anchor {self.anchor})" if self.anchor else "")

    def to_config(self) -> dict[str, Any]:
        return {"erase": self.concept, **({"anchor": self.anchor} if self.anchor else {})}

    def metrics(self) -> list[str]:
        return [f"erase_success/{self.concept}"] + ([f"erase_anchor/{self.concept}->{self.anchor}"]
                                                    if self.anchor else [])

    def training(self, record: dict, named: set[str], pool: AnchorPool) -> list[dict]:
        """Anchored: as a remap onto the anchor (Concept Ablation's rule: A's captions on the anchor's images).
        Plain: A's captions on an image of the pool (scenes that show no concept the judge knows), so the
        model learns to draw the scene without A, not some other concept in its place."""
        if self.anchor:
            return copied_as({**record, "named": named}, self.concept, self.anchor)
        return [{"image": pool.draw()["image"], "captions": list(record["captions"]),
                 "tokens": list(record.get("tokens") or [])}]


EDIT = Erase
