"""``{swap: [A, B]}``: A's prompts draw B and B's draw A (two remaps at once); ``data.swap_pairs`` are swaps."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from swapbench.edits import EXAMPLE, AnchorPool, Edit, concept_name
from swapbench.edits.words import ConceptSwapper
from swapbench.errors import UserError


@dataclass(frozen=True)
class Swap(Edit):
    pair: tuple[str, str]

    kind = "swap"
    keys = ("swap",)
    summary = "A's prompts draw B and B's draw A"
    verb = "swapped"

    @classmethod
    def parse(cls, item: Mapping[str, Any]) -> Swap:
        pair = item["swap"]
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise UserError(f"swap {pair!r} must be a pair of two concepts; {EXAMPLE}")
        a, b = (concept_name(c, "a swapped concept") for c in pair)
        if a == b:
            raise UserError(f"swap [{a}, {b}] names one concept twice; a swap exchanges two different concepts")
        return cls((a, b))

    @property
    def sources(self) -> tuple[str, ...]:
        return self.pair

    def target(self, concept: str) -> str | None:
        a, b = self.pair
        return b if concept == a else a if concept == b else None

    def describe(self) -> str:
        return f"{self.pair[0]} <-> {self.pair[1]}"

    def to_config(self) -> dict[str, Any]:
        return {"swap": list(self.pair)}

    def metrics(self) -> list[str]:
        a, b = self.pair
        return [f"swap_success/{a}->{b}", f"swap_success/{b}->{a}"]

    @property
    def rewrites(self) -> dict[str, str]:
        a, b = self.pair
        return {a: b, b: a}

    def training(self, record: dict, named: set[str], pool: AnchorPool) -> list[dict]:
        """The record with the two words exchanged in every caption: images of A captioned B and back."""
        swapper = ConceptSwapper([self.pair])
        return [{"image": record["image"], "captions": [swapper.swap_text(c) for c in record["captions"]],
                 "tokens": [swapper.swap_tokens(t) for t in record.get("tokens") or []]}]


EDIT = Swap
