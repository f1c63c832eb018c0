"""The reference recipe's data steps: subset -> swap -> both-words filter -> 1.7:1 balance -> preservation share.

Record-level rules (a record is one image with all its captions):
- *filter*: a record is dropped when its captions, taken together, name both concepts of a pair;
- *balance* (on swapped captions, the order of DESIGN §3): ``g`` = records naming the first concept,
  ``z`` = records naming the second; ``n = min(len(g) // ratio, len(z))``; keep ``floor(ratio * n)``
  of ``g`` and ``n`` of ``z``, chosen by a seeded shuffle;
- *preservation*: records naming neither concept are kept with probability ``data.keep_other``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import datasets

from swapbench.config import DataConfig
from swapbench.data.swap import ConceptSwapper
from swapbench.errors import UserError


@dataclass
class Prepared:
    target: list[dict]  # records naming a swapped concept (captions already swapped)
    other: list[dict]  # preservation records (captions untouched)
    audit: dict = field(default_factory=dict)

    @property
    def records(self) -> list[dict]:
        return self.target + self.other


def prepare(ds: datasets.Dataset, cfg: DataConfig, seed: int) -> Prepared:
    swapper = ConceptSwapper(cfg.swap_pairs)
    rng = random.Random(seed)
    stages = [{"stage": "loaded", "records": len(ds)}]
    records = ds.to_list()
    if cfg.subset_size and len(records) > cfg.subset_size:
        rng.shuffle(records)
        records = records[: cfg.subset_size]
    stages.append({"stage": "subset", "records": len(records), "subset_size": cfg.subset_size})

    for pair in cfg.swap_pairs:
        for word in pair:
            if not any(word.lower() in swapper.mentioned(c) for r in records for c in r["captions"]):
                raise UserError(f"swap word {word!r} never appears in the captions of {cfg.source}; check "
                                f"data.swap_pairs or point --data at data that names it")

    examples, both, target, other = [], 0, [], []
    for record in records:
        named = set().union(*(swapper.mentioned(c) for c in record["captions"])) if record["captions"] else set()
        if cfg.drop_both and any(a in named and b in named for a, b in cfg.swap_pairs):
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
    stages.append({"stage": "swap+filter", "records": len(target) + len(other), "dropped_both_words": both,
                   "naming_a_concept": len(target), "naming_neither": len(other)})
    if not target:
        raise UserError("no record names a swapped concept after filtering; relax data.drop_both or use other data")

    target, balance = _balance(target, swapper, cfg, rng)
    stages.append({"stage": "balance", "records": len(target), **balance})
    rng.shuffle(other)
    kept_other = other[: int(round(cfg.keep_other * len(other)))]
    stages.append({"stage": "preservation", "records": len(kept_other), "keep_other": cfg.keep_other})
    audit = {
        "source": cfg.source,
        "swap_pairs": cfg.swap_pairs,
        "stages": stages,
        "balance": balance,
        "final": {"target": len(target), "preservation": len(kept_other), "total": len(target) + len(kept_other)},
        "examples": examples,
    }
    return Prepared(target, kept_other, audit)


def _balance(records: list[dict], swapper: ConceptSwapper, cfg: DataConfig, rng: random.Random) -> tuple[list[dict], dict]:
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
