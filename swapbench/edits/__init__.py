"""What a run edits, as data: the top-level config list ``edits``, one module per kind behind :class:`Edit`.

Each item is one edit: ``{swap: [A, B]}`` (A's prompts draw B and B's draw A), ``{remap: A, to: B}`` (A's
prompts draw B; B keeps drawing B), ``{erase: A}`` (A's prompts draw anything but A) or
``{erase: A, anchor: C}`` (A's prompts draw C instead). An empty list means the swaps of ``data.swap_pairs``,
so every older config and run keeps its meaning.

One :class:`Edit` answers, for the whole of swapbench, what its kind means: which concepts it edits (their
prompts are the edited rows and are left out of controls and neighbours), which judged label counts as
success for a prompt naming one of them, how a training caption is rewritten (``training``), which metrics
score it and how the model card and results describe it. Nothing else branches on the kind.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from swapbench.errors import UserError

KINDS = ("swap", "remap", "erase")
"""The edit kinds: each a module of this package, named as its key in a config item."""
EXAMPLE = "e.g. --set 'edits=[{erase: giraffe}]' or 'edits=[{swap: [giraffe, zebra]}, {remap: lion, to: cow}]'"


@dataclass(frozen=True)
class TrainingRecords:
    """What an edit makes of one data record naming one of its concepts (``Edit.training``)."""

    records: list[dict]
    """The records the model trains on in its place (none: the record is dropped)."""


class Edit(ABC):
    """One edit of a model's concepts."""

    kind: ClassVar[str]
    keys: ClassVar[tuple[str, ...]]
    """The keys a config item of this kind may have (its kind's key first)."""
    summary: ClassVar[str]
    """What the kind does, in a phrase (the README's table, ``--help``)."""
    verb: ClassVar[str]
    """What the kind does to a source concept, as messages say it: ``swapped``, ``remapped``, ``erased``."""

    @classmethod
    @abstractmethod
    def parse(cls, item: Mapping[str, Any]) -> Edit:
        """The edit of a config item (its keys already checked against ``keys``)."""

    @property
    @abstractmethod
    def sources(self) -> tuple[str, ...]:
        """The concepts whose prompts this edit changes: the edited rows, left out of controls."""

    @property
    def concepts(self) -> tuple[str, ...]:
        """Every concept the edit names (sources, targets, anchors): each needs a judge label."""
        return tuple(dict.fromkeys([*self.sources, *(t for c in self.sources if (t := self.target(c)))]))

    @abstractmethod
    def target(self, concept: str) -> str | None:
        """The label a prompt naming source ``concept`` should be judged as; None: anything but ``concept``."""

    def replacement(self, concept: str) -> str | None:
        """The concept that stands in for source ``concept`` where a method replaces it in text space (UCE's
        values, token-swap's rows): its target, else an erasure's anchor; None: no concept stands in."""
        return self.target(concept)

    def succeeds(self, concept: str, label: str) -> bool:
        """Whether a tuned image of a prompt naming source ``concept``, judged ``label``, shows the edit."""
        target = self.target(concept)
        return label == target if target is not None else label != concept

    def prefers(self, concept: str, scores: Mapping[str, float]) -> bool | None:
        """A composition ("a giraffe next to an elephant"): whether the judge prefers the target over the named
        concept, looking at those two labels only; None where the edit has no target (an erasure: the other
        animal of the scene would decide the label, so compositions do not score it)."""
        target = self.target(concept)
        return None if target is None else bool(scores[target] > scores[concept])

    @abstractmethod
    def describe(self) -> str:
        """One line: ``giraffe <-> zebra``, ``giraffe -> zebra``, ``erase giraffe``."""

    @abstractmethod
    def to_config(self) -> dict[str, Any]:
        """The config item this edit was parsed from, in its canonical form (results.json, config.json)."""

    @abstractmethod
    def metrics(self) -> list[str]:
        """The metric names that score this edit (one per direction), in the metric table's terms."""

    @property
    def rewrites(self) -> dict[str, str]:
        """Caption words exchanged in a training record naming a source (``swap``); empty for other kinds."""
        return {}

    @abstractmethod
    def training(self, record: dict, named: set[str], pool: AnchorPool) -> list[dict] | None:
        """The records a caption-trained method (finetune, lora) learns this edit from, made of a data
        record whose captions name the concepts ``named`` (some of ``data_concepts``); None: not this edit's."""

    @property
    def data_concepts(self) -> tuple[str, ...]:
        """Concepts whose records the data rule reads; each must appear in the training captions."""
        return self.concepts


class AnchorPool:
    """Images a plain erasure's captions are paired with: records naming no concept the judge knows
    (on the savanna world, its empty landscapes), drawn with a seeded generator."""

    def __init__(self, records: list[dict], rng):
        self.records, self.rng = records, rng

    def draw(self) -> dict:
        return self.records[self.rng.randrange(len(self.records))]


def edit_kind(name: str) -> type[Edit]:
    return importlib.import_module(f"{__name__}.{name}").EDIT


class Edits(Sequence[Edit]):
    """A run's edits, checked together: every concept is the source of one edit at most, and no edit's target or
    anchor is another edit's source."""

    def __init__(self, edits: Iterable[Edit]):
        self.items = list(edits)
        if not self.items:
            raise UserError(f"edits is empty: a run needs at least one edit; {EXAMPLE}")
        self.by_source: dict[str, Edit] = {}
        for edit in self.items:
            for concept in edit.sources:
                other = self.by_source.setdefault(concept, edit)
                if other is not edit:
                    raise UserError(f"edits edit {concept!r} twice ({other.describe()}; {edit.describe()}): a prompt "
                                    "naming it would have two right answers; keep one of them")
        for edit in self.items:
            for concept in edit.sources:
                stand_in = edit.replacement(concept)
                other = self.by_source.get(stand_in) if stand_in else None
                if other is not None and other is not edit:
                    raise UserError(f"{edit.describe()} draws {stand_in} instead of {concept}, and {other.describe()} "
                                    f"edits {stand_in} itself: the images that teach the first edit are the ones the "
                                    f"second takes away; give {concept} a concept no edit changes")

    def __getitem__(self, i):  # type: ignore[override]
        return Edits(self.items[i]) if isinstance(i, slice) else self.items[i]

    def __len__(self) -> int:
        return len(self.items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Edits) and self.to_config() == other.to_config()

    def of(self, concept: str) -> Edit | None:
        """The edit whose source ``concept`` is, if any."""
        return self.by_source.get(concept)

    @property
    def sources(self) -> list[str]:
        return list(self.by_source)

    @property
    def concepts(self) -> list[str]:
        return list(dict.fromkeys(c for edit in self.items for c in edit.concepts))

    def target(self, concept: str) -> str | None:
        edit = self.of(concept)
        return edit.target(concept) if edit else None

    def replacement(self, concept: str) -> str | None:
        edit = self.of(concept)
        return edit.replacement(concept) if edit else None

    @property
    def verb(self) -> str:
        """The edits' verb in messages: their kinds' one (``swapped``), or ``edited`` for several kinds."""
        verbs = {edit.verb for edit in self.items}
        return verbs.pop() if len(verbs) == 1 else "edited"

    def targets(self) -> dict[str, str | None]:
        """Each source concept's target label (None: an erasure's "anything but")."""
        return {c: self.target(c) for c in self.sources}

    def succeeds(self, concept: str, label: str) -> bool:
        edit = self.of(concept)
        return edit.succeeds(concept, label) if edit else label == concept

    @property
    def swap_pairs(self) -> list[tuple[str, str]]:
        """The pairs of the swap edits (results.json's ``swap_pairs``, kept for older readers)."""
        return [edit.pair for edit in self.items if edit.kind == "swap"]  # type: ignore[attr-defined]

    def of_kind(self, kind: str) -> list[Edit]:
        return [edit for edit in self.items if edit.kind == kind]

    @property
    def erases(self) -> bool:
        """Whether some edit has no target (its images need a "none of these" label)."""
        return any(self.target(c) is None for c in self.sources)

    def metrics(self) -> list[str]:
        return [name for edit in self.items for name in edit.metrics()]

    def describe(self) -> str:
        return "; ".join(edit.describe() for edit in self.items)

    def to_config(self) -> list[dict[str, Any]]:
        return [edit.to_config() for edit in self.items]

    def check_labels(self, labels: Sequence[str], where: str) -> None:
        missing = [c for c in self.concepts if c not in labels]
        if missing:
            raise UserError(f"{where}: the judge has no label for the edited concept(s) {', '.join(missing)} "
                            "(the suite's labels); add them to its labels or use another suite")


def parse_item(item: Any) -> Edit:
    if not isinstance(item, Mapping):
        raise UserError(f"edit {item!r} is not a mapping; {EXAMPLE}")
    kinds = [k for k in KINDS if k in item]
    if len(kinds) != 1:
        raise UserError(f"edit {dict(item)} must name exactly one kind of {', '.join(KINDS)}; {EXAMPLE}")
    cls = edit_kind(kinds[0])
    unknown = [k for k in item if k not in cls.keys]
    if unknown:
        raise UserError(f"edit {dict(item)}: unknown key(s) {', '.join(map(str, unknown))}; {cls.kind} takes "
                        f"{', '.join(cls.keys)}")
    return cls.parse(item)


def parse_edits(items: Sequence[Any], swap_pairs: Sequence[Sequence[str]]) -> Edits:
    """A config's edits: ``items`` (the ``edits`` list), or the swaps of ``swap_pairs`` when it is empty."""
    if not items:
        return Edits(parse_item({"swap": list(pair)}) for pair in swap_pairs)
    return Edits(parse_item(item) for item in items)


def concept_name(value: Any, what: str) -> str:
    """A concept as a config item names it: a non-empty word, lower case."""
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{what} must be a concept name, got {value!r}; {EXAMPLE}")
    return value.strip().lower()
