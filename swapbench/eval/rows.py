"""What an evaluation asks and what it answers: a suite's prompt item and a judged per-prompt row.

Both sit below the suite, the probes and the evaluation, which all build or read them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class PromptItem:
    group: str
    kind: str
    concept: str
    prompt: str
    seeds: tuple[int, ...]
    form: str = ""
    """Forms probe: the concept as written in the prompt ("Giraffe", "gir affe", "giraffe-like")."""
    variant: tuple[str, int, int] | None = None
    """Forms probe, a generated spelling: (template, rank among candidates, spellings wanted)."""
    case_numbers: tuple[int | str | None, ...] = ()
    """A CSV prompt file's ``case_number`` of each seed's row (aligned with ``seeds``), when it has them."""

    def case_number(self, seed: int) -> int | str | None:
        return self.case_numbers[self.seeds.index(seed)] if self.case_numbers else None


@dataclass(kw_only=True)
class PromptRow:
    """One judged (prompt, seed) pair: an entry of results.json's ``per_prompt``.

    Fields are written in this order, the optional ones only when set, so the rows of an old
    results.json and a new one read alike."""

    group: str
    kind: str
    probe: str | None = None
    """Trajectory rows: ``img2img`` or ``handover``."""
    level: float | None = None
    """Trajectory rows: the img2img strength or the handover fraction."""
    concept: str
    target: str | None = None
    """The label that shows the edit for a prompt naming an edited concept (a swap's partner, a remap's target)."""
    erased: bool | None = None
    """The concept is erased: the edit shows as any label but the concept."""
    anchor: str | None = None
    """An anchored erasure's anchor: the concept drawn instead (``erase_anchor``)."""
    prompt: str
    seed: int
    case_number: int | str | None = None
    """The prompt file's ``case_number`` of this (prompt, seed), to join the row back to the file."""
    base_label: str
    tuned_label: str
    success: bool
    scores: dict[str, float]
    """The judge's probability of every label for the tuned image, to four decimals."""
    labels: dict[str, dict[str, Any]] | None = None
    """Further judges (``eval.judges``): each one's ``{"base", "tuned", "success"}`` for this row, by judge name;
    ``base_label``, ``tuned_label`` and ``success`` are the primary judge's."""
    clip: float | None = None
    """Control rows: 100 x cos(tuned image, prompt) in the judge's space."""
    clip_base: float | None = None
    safety_flagged: dict[str, bool] | None = None
    """``eval.safety_checker=count``: whether SD's checker flags the base and the tuned image."""
    images: dict[str, str] | None = None
    """Kept samples: the base and tuned image files, relative to the evaluation folder."""

    def to_json(self) -> dict[str, Any]:
        return {f.name: value for f in fields(self) if (value := getattr(self, f.name)) is not None}


def label_scores(probabilities: Sequence[float], labels: Sequence[str]) -> dict[str, float]:
    """A row's ``scores``: the judge's probability of each label, to four decimals."""
    return {label: round(float(probabilities[j]), 4) for j, label in enumerate(labels)}
