"""The reference recipe's data steps, for every edit (swapbench/edits/): subset -> filter -> edit -> 1.7:1 balance
-> preservation share.

Record-level rules (a record is one image with all its captions):
- *subset*: ``data.subset_size`` records are chosen by index (a seeded shuffle) before anything but
  their captions is read; images stay file paths or row references until the feature cache encodes them;
- *filter* (``data.drop_both``): a record is dropped when its captions, taken together, name two concepts
  of one edit (a swap's two words, a remap's A and B, an erasure and its anchor); for the reference code's
  per-caption layout (``Records.caption_filter``) the test is the reference's own, one caption's tokens at
  a time: such captions are dropped, and a record left without captions;
- *edit*: a record naming concepts of one edit is replaced by the records that edit's ``training`` makes
  of it (the target records). A record naming concepts of several edits is dropped, since no one caption
  teaches two edits, unless each of them only rewrites caption words (swaps): those rewrites touch
  disjoint words and compose, as the several pairs of ``data.swap_pairs`` always did;
- *anchor pool* (for an erasure without anchor): the records naming no concept of the vocabulary (the
  eval suite's labels and the edits' concepts), drawn by a generator of their own seed, so that every
  other step draws what it drew before; they stay preservation records too;
- *balance* (the reference recipe's rule for its pair, so for the first swap edit only; counted on the
  swapped captions, after the filter, in the reference recipe's order): ``g`` = records naming the first
  concept, ``z`` = records naming the second; ``n = min(len(g) // ratio, len(z))``; keep
  ``floor(ratio * n)`` of ``g`` and ``n`` of ``z``, chosen by a seeded shuffle;
- *preservation*: records naming no edited concept are kept with probability ``data.keep_other``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import datasets

from swapbench.config import DataConfig
from swapbench.data.sources import Records
from swapbench.edits import AnchorPool, Edit, Edits, parse_edits
from swapbench.edits.words import ConceptRewriter, concept_finder
from swapbench.errors import UserError

if TYPE_CHECKING:
    from swapbench.config import Config

EXAMPLES = 8
"""Before/after captions data_audit.json shows, in all and per edit."""


@dataclass
class Prepared:
    target: list[dict]  # records the edits made (captions rewritten, images drawn)
    other: list[dict]  # preservation records (captions untouched)
    audit: dict = field(default_factory=dict)

    @property
    def records(self) -> list[dict]:
        return self.target + self.other


def prepare_run(cfg: Config) -> Prepared:
    """A run's training data: ``data.source`` read and prepared for its edits, the pool's vocabulary being
    its eval suite's labels."""
    from swapbench.concepts import suite_labels
    from swapbench.data.sources import load_records

    d = cfg.data
    return prepare(load_records(d.source, d.split, cfg.seed, world_size=d.subset_size, image_root=d.image_root),
                   d, cfg.seed, cfg.edit_set, suite_labels(cfg.eval.suite))


def prepare(source: Records | datasets.Dataset, cfg: DataConfig, seed: int, edits: Edits | None = None,
            vocabulary: Sequence[str] = ()) -> Prepared:
    """``edits``: None means the swaps of ``cfg.swap_pairs``. ``vocabulary``: the concepts the judge knows
    (with the edits' own), which an anchor pool's image must not show."""
    if isinstance(source, datasets.Dataset):
        source = Records(source, cfg.source, "records", "image")
    edits = edits if edits is not None else parse_edits([], cfg.swap_pairs)
    concepts = list(dict.fromkeys(c for edit in edits for c in edit.data_concepts))
    groups = [set(edit.data_concepts) for edit in edits]
    finder = concept_finder(concepts)
    rng = random.Random(seed)
    stages = [{"stage": "loaded", "records": len(source)}]
    # Shuffling indices draws what shuffling the records drew, so subsets are those of earlier versions.
    indices = list(range(len(source)))
    if cfg.subset_size and len(indices) > cfg.subset_size:
        rng.shuffle(indices)
        indices = indices[: cfg.subset_size]
    records = source.read(indices)
    stages.append({"stage": "subset", "records": len(records), "subset_size": cfg.subset_size})
    dropped_captions = 0
    if cfg.drop_both and source.caption_filter:
        records, dropped_captions = _drop_captions_naming_both(records, finder, groups)

    names = [set().union(*(finder.mentioned(c) for c in r["captions"])) if r["captions"] else set() for r in records]
    seen = set().union(*names)
    for concept in concepts:
        if concept not in seen:
            raise UserError(f"edited concept {concept!r} never appears in the captions of {cfg.source}; check "
                            f"edits (or data.swap_pairs) or point --data at data that names it")
    pool, vocabulary = _anchor_pool(records, edits, vocabulary, seed)

    counts = {edit: {"edit": edit.describe(), "records_read": 0, "records_made": 0, "examples": []} for edit in edits}
    examples, both, several, composed, target, other = [], 0, 0, 0, [], []
    for record, named in zip(records, names, strict=True):
        if cfg.drop_both and not source.caption_filter and any(len(named & g) > 1 for g in groups):
            both += 1
            continue
        mine = [(edit, named & group) for edit, group in zip(edits, groups, strict=True) if named & group]
        if not mine:
            other.append(record)
            continue
        if len(mine) > 1 and not all(edit.rewrites for edit, _ in mine):
            several += 1
            continue
        made = [record]
        for edit, mentioned in mine:
            made = [out for r in made for out in edit.training(r, mentioned, pool)]
        if len(mine) > 1:
            composed += 1
        else:
            count = counts[mine[0][0]]
            count["records_read"] += 1
            count["records_made"] += len(made)
            if made and len(count["examples"]) < EXAMPLES:
                count["examples"].append(_example(record, made[-1]))
        if made and len(examples) < EXAMPLES:
            examples.append(_example(record, made[-1]))
        target += made
    read = composed + sum(count["records_read"] for count in counts.values())
    stage = {"stage": "swap+filter" if edits.verb == "swapped" else "edit+filter",
             "records": len(target) + len(other), "dropped_both_words": both, "dropped_several_edits": several,
             "naming_a_concept": read, "made": len(target), "naming_neither": len(other)}
    if len(edits) > 1:
        stage["rewritten_by_several_swaps"] = composed
    if source.caption_filter:
        stage["dropped_captions_both_words"] = dropped_captions
    stages.append(stage)
    if not target:
        raise UserError(f"no record names a {edits.verb} concept after filtering; relax data.drop_both or use "
                        "other data")

    target, balance = _balance(target, edits.of_kind("swap"), cfg, rng)
    stages.append({"stage": "balance", "records": len(target), **balance})
    rng.shuffle(other)
    kept_other = other[: int(round(cfg.keep_other * len(other)))]
    stages.append({"stage": "preservation", "records": len(kept_other), "keep_other": cfg.keep_other})
    audit = {
        "source": cfg.source,
        "layout": source.describe(),
        **({"swap_pairs": [list(pair) for pair in edits.swap_pairs]} if edits.swap_pairs else {}),
        "edits": edits.to_config(),
        "stages": stages,
        "balance": balance,
        "per_edit": list(counts.values()),
        **({"anchor_pool": {"records": len(pool.records), "naming_none_of": vocabulary}} if pool else {}),
        "final": {"target": len(target), "preservation": len(kept_other), "total": len(target) + len(kept_other)},
        "examples": examples,
    }
    return Prepared(target, kept_other, audit)


def _anchor_pool(records: list[dict], edits: Edits, vocabulary: Sequence[str],
                 seed: int) -> tuple[AnchorPool | None, list[str]]:
    """The records a plain erasure draws its images from (None when no edit erases without an anchor), and
    the concepts none of them names."""
    plain = [c for c in edits.sources if edits.replacement(c) is None]  # no concept stands in
    words = list(dict.fromkeys([*(c.lower() for c in vocabulary), *edits.concepts]))
    if not plain:
        return None, words
    finder = concept_finder(words)
    empty = [r for r in records if not any(finder.mentioned(c) for c in r["captions"])]
    if not empty:
        raise UserError(f"erasing {', '.join(plain)} without an anchor pairs its captions with images that show "
                        f"no known concept ({', '.join(words)}), and every record's captions name one; give the "
                        f"erasure an anchor (e.g. {{erase: {plain[0]}, anchor: horse}}) or use data with such scenes")
    # A generator of its own: the subset, balance and preservation draws stay those of a run without the pool.
    return AnchorPool(empty, random.Random(f"anchor-pool:{seed}")), words


def _example(record: dict, made: dict) -> dict:
    """What data_audit.json shows of one edited record: its first caption before and after (and its image,
    where the edit drew another)."""
    out = {"before": record["captions"][0], "after": made["captions"][0]}
    if made["image"] is not record["image"]:
        out |= {"image_before": str(record["image"]), "image_after": str(made["image"])}
    return out


def _drop_captions_naming_both(records: list[dict], finder: ConceptRewriter,
                               groups: list[set[str]]) -> tuple[list[dict], int]:
    """Per caption, as the reference: drop a caption whose tokens (its raw text where it has none) name two
    concepts of one edit; returns the records that keep a caption (an emptied one counts as dropped) and
    the captions dropped."""
    kept_records, dropped = [], 0
    for record in records:
        tokens = record.get("tokens") or []
        keep = []
        for i, caption in enumerate(record["captions"]):
            named = finder.mentioned(" ".join(tokens[i]) if i < len(tokens) and tokens[i] else caption)
            if any(len(named & group) > 1 for group in groups):
                dropped += 1
            else:
                keep.append(i)
        if len(keep) < len(record["captions"]):
            record = {**record, "captions": [record["captions"][i] for i in keep],
                      "tokens": [tokens[i] for i in keep] if len(tokens) == len(record["captions"]) else tokens}
        if record["captions"]:
            kept_records.append(record)
    return kept_records, dropped


def _balance(records: list[dict], swaps: list[Edit], cfg: DataConfig,
             rng: random.Random) -> tuple[list[dict], dict]:
    if not cfg.balance_ratio:
        return records, {"ratio": None}
    if not swaps:
        return records, {"ratio": cfg.balance_ratio, "skipped": "no swap edit: the 1.7:1 rule is the reference "
                                                                "recipe's for its swap pair"}
    first, second = swaps[0].sources
    finder = concept_finder((first, second))
    names = [set().union(*(finder.mentioned(c) for c in r["captions"])) for r in records]
    g = [r for r, n in zip(records, names, strict=True) if first in n and second not in n]
    z = [r for r, n in zip(records, names, strict=True) if second in n and first not in n]
    rest = [r for r, n in zip(records, names, strict=True) if (first in n) == (second in n)]
    n = int(min(len(g) // cfg.balance_ratio, len(z)))
    rng.shuffle(g)
    rng.shuffle(z)
    kept_g, kept_z = g[: math.floor(cfg.balance_ratio * n)], z[:n]
    info = {"ratio": cfg.balance_ratio, first: len(g), second: len(z), "n": n,
            f"kept_{first}": len(kept_g), f"kept_{second}": len(kept_z), "other_pairs": len(rest)}
    if n == 0:
        raise UserError(f"balancing {first}:{second} at {cfg.balance_ratio}:1 leaves no data ({len(g)} {first}, "
                        f"{len(z)} {second} records); use more data or set data.balance_ratio=null")
    return kept_g + kept_z + rest, info
