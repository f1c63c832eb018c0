"""Whole-word concept rewriting in captions and prompts, keeping plurals and capitalisation (the edits' words).

``"Two Zebras near a giraffe."`` -> ``"Two Giraffes near a zebra."``. A hyphen is a word boundary,
so compounds follow their head word: ``"giraffe-like"`` -> ``"zebra-like"`` (the caption still
describes the swapped animal). Words that merely contain a concept (``"zebrafish"``) are left alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

IRREGULAR_PLURALS = {"deer": "deer", "sheep": "sheep", "mouse": "mice", "ox": "oxen", "goose": "geese"}


def plural(word: str) -> str:
    if word in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[word]
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def _match_case(template: str, word: str) -> str:
    if template.isupper() and len(template) > 1:
        return word.upper()
    if template[0].isupper():
        return word[0].upper() + word[1:]
    return word


class ConceptRewriter:
    """Rewrites whole words of raw text and token lists by ``mapping`` (``{"giraffe": "zebra"}``), plurals too."""

    def __init__(self, mapping: Mapping[str, str]):
        self.mapping: dict[str, str] = {}
        self.singular: dict[str, str] = {}
        for a, b in ((a.lower(), b.lower()) for a, b in mapping.items()):
            self.mapping |= {a: b, plural(a): plural(b)}
            self.singular |= {a: a, plural(a): a}
        words = sorted(self.mapping, key=len, reverse=True)
        self.pattern = re.compile(r"(?<![A-Za-z])(" + "|".join(map(re.escape, words)) + r")(?![A-Za-z])", re.IGNORECASE)

    def swap_text(self, text: str) -> str:
        return self.pattern.sub(lambda m: _match_case(m.group(0), self.mapping[m.group(0).lower()]), text)

    def swap_tokens(self, tokens: list[str]) -> list[str]:
        return [self.swap_text(t) for t in tokens]

    def mentioned(self, text: str) -> set[str]:
        """Singular concepts named in ``text`` (plural forms count)."""
        return {self.singular[m.lower()] for m in self.pattern.findall(text)}


class ConceptSwapper(ConceptRewriter):
    """Exchanges each pair of concepts (``[["giraffe", "zebra"]]``) in raw text and in token lists."""

    def __init__(self, pairs: Iterable[Iterable[str]]):
        mapping: dict[str, str] = {}
        for pair in pairs:
            a, b = (w.lower() for w in pair)
            if a == b:
                raise ValueError(f"swap pair {a!r} <-> {b!r} names the same word twice")
            mapping |= {a: b, b: a}
        super().__init__(mapping)


def concept_finder(concepts: Iterable[str]) -> ConceptRewriter:
    """Finds ``concepts`` in text without rewriting them (``mentioned``)."""
    return ConceptRewriter({c: c for c in concepts})
