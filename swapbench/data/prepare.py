"""The reference recipe's data steps: subset -> swap -> both-words filter -> 1.7:1 balance -> preservation share.

Record-level rules (a record is one image with all its captions):
- *subset*: ``data.subset_size`` records are chosen by index (a seeded shuffle) before anything but
  their captions is read; images stay file paths or row references until the feature cache encodes them;
- *filter*: a record is dropped when its captions, taken together, name both concepts of a pair; for
  the reference code's per-caption layout (``Records.caption_filter``) the test is the reference's own,
  one caption's tokens at a time: such captions are dropped, and a record left without captions;
- *balance* (counted on the swapped captions, after the filter, in the reference recipe's order):
  ``g`` = records naming the first concept, ``z`` = records naming the second;
  ``n = min(len(g) // ratio, len(z))``; keep ``floor(ratio * n)`` of ``g`` and ``n`` of ``z``, chosen by
  a seeded shuffle;
- *preservation*: records naming neither concept are kept with probability ``data.keep_other``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import datasets

from swapbench.config import DataConfig
from swapbench.data.sources import Records
from swapbench.edits.words import ConceptSwapper
from swapbench.errors import UserError


@dataclass
class Prepared:
    target: list[dict]  # records naming a swapped concept (captions already swapped)
    other: list[dict]  # preservation records (captions untouched)
    audit: dict = field(default_factory=dict)

    @property
    def records(self) -> list[dict]:
        return self.target + self.other


def prepare(source: Records | datasets.Dataset, cfg: DataConfig, seed: int) -> Prepared:
    if isinstance(source, datasets.Dataset):
        source = Records(source, cfg.source, "records", "image")
    swapper = ConceptSwapper(cfg.swap_pairs)
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
        records, dropped_captions = _drop_captions_naming_both(records, swapper, cfg.swap_pairs)

    for pair in cfg.swap_pairs:
        for word in pair:
            if not any(word.lower() in swapper.mentioned(c) for r in records for c in r["captions"]):
                raise UserError(f"swap word {word!r} never appears in the captions of {cfg.source}; check "
                                f"data.swap_pairs or point --data at data that names it")

    examples, both, target, other = [], 0, [], []
    for record in records:
        named = set().union(*(swapper.mentioned(c) for c in record["captions"])) if record["captions"] else set()
        if cfg.drop_both and not source.caption_filter and any(a in named and b in named for a, b in cfg.swap_pairs):
            both += 1
            continue
        if named:
            swapped = {
                "image": record["image"],
                "captions": [swapper.swap_text(c) for c in record["captions"]],
                "tokens": [swapper.swap_tokens(t) for t in record.get("tokens") or []],
            }
            if len(examples) < 8:
                examples.append({"before": record["captions"][0], "after": swapped["captions"][0]})
            target.append(swapped)
        else:
            other.append(record)
    stage = {"stage": "swap+filter", "records": len(target) + len(other), "dropped_both_words": both,
             "naming_a_concept": len(target), "naming_neither": len(other)}
    if source.caption_filter:
        stage["dropped_captions_both_words"] = dropped_captions
    stages.append(stage)
    if not target:
        raise UserError("no record names a swapped concept after filtering; relax data.drop_both or use other data")

    target, balance = _balance(target, swapper, cfg, rng)
    stages.append({"stage": "balance", "records": len(target), **balance})
    rng.shuffle(other)
    kept_other = other[: int(round(cfg.keep_other * len(other)))]
    stages.append({"stage": "preservation", "records": len(kept_other), "keep_other": cfg.keep_other})
    audit = {
        "source": cfg.source,
        "layout": source.describe(),
        "swap_pairs": cfg.swap_pairs,
        "stages": stages,
        "balance": balance,
        "final": {"target": len(target), "preservation": len(kept_other), "total": len(target) + len(kept_other)},
        "examples": examples,
    }
    return Prepared(target, kept_other, audit)


def _drop_captions_naming_both(records: list[dict], swapper: ConceptSwapper,
                               pairs: list[list[str]]) -> tuple[list[dict], int]:
    """Per caption, as the reference: drop a caption whose tokens (its raw text where it has none) name both words
    of a pair; returns the records that keep a caption (an emptied one counts as dropped) and the captions dropped."""
    kept_records, dropped = [], 0
    for record in records:
        tokens = record.get("tokens") or []
        keep = []
        for i, caption in enumerate(record["captions"]):
            named = swapper.mentioned(" ".join(tokens[i]) if i < len(tokens) and tokens[i] else caption)
            if any(a.lower() in named and b.lower() in named for a, b in pairs):
                dropped += 1
            else:
                keep.append(i)
        if len(keep) < len(record["captions"]):
            record = {**record, "captions": [record["captions"][i] for i in keep],
                      "tokens": [tokens[i] for i in keep] if len(tokens) == len(record["captions"]) else tokens}
        if record["captions"]:
            kept_records.append(record)
    return kept_records, dropped


def _balance(records: list[dict], swapper: ConceptSwapper, cfg: DataConfig,
             rng: random.Random) -> tuple[list[dict], dict]:
    if not cfg.balance_ratio:
        return records, {"ratio": None}
    first, second = (w.lower() for w in cfg.swap_pairs[0])
    names = [set().union(*(swapper.mentioned(c) for c in r["captions"])) for r in records]
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
