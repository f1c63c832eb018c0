"""The sample plan: which record, caption and cached view every training sample reads.

It is drawn up front from the seed, one micro-batch after another, so that
- the feature cache encodes only the (record, view) pairs and captions the run will read, which is
  what makes a first run on a fresh cache short;
- resuming needs only the step: the plan is drawn again, identically;
- a longer run (more ``train.max_steps``) starts with the same batches as a shorter one.

Noise, timesteps and latent samples come from a separate generator (checkpointed by the recipe).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplePlan:
    record: torch.Tensor  # (micro_batches, batch_size): index into the prepared records (target first)
    caption: torch.Tensor  # index into that record's captions
    view: torch.Tensor  # cached view of the image (all 0 when the run does not cache)

    def pairs(self) -> list[tuple[int, int]]:
        """Distinct (record, view) pairs the run reads, in first-use order."""
        return list(dict.fromkeys(zip(self.record.flatten().tolist(), self.view.flatten().tolist(), strict=True)))


def derived_seed(seed: int, purpose: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{purpose}:{seed}".encode()).digest()[:8], "little") >> 1


def draw_plan(caption_counts: list[int], n_target: int, target_share: float | None, micro_batches: int,
              batch_size: int, views: int, caption_mode: str, seed: int) -> SamplePlan:
    """Records ``[0, n_target)`` are the edits' target records. With ``target_share`` set and preservation records
    present, each micro-batch takes ``round(share * batch_size)`` samples from those and the rest from the
    others; otherwise records are drawn uniformly. Captions are drawn uniformly per sample (``random``) or
    the first one is used (``first``); views uniformly from ``range(views)``."""
    g = torch.Generator().manual_seed(derived_seed(seed, "plan"))
    counts = torch.tensor(caption_counts)
    n_records = len(caption_counts)
    split = target_share is not None and n_records > n_target
    n_first = round(target_share * batch_size) if split else batch_size
    records, captions, chosen_views = [], [], []
    for _ in range(micro_batches):
        if split:
            idx = torch.cat([torch.randint(n_target, (n_first,), generator=g),
                             torch.randint(n_records - n_target, (batch_size - n_first,), generator=g) + n_target])
        else:
            idx = torch.randint(n_records, (batch_size,), generator=g)
        u = torch.rand(batch_size, generator=g)
        captions.append((u * counts[idx]).long().clamp_max(counts[idx] - 1) if caption_mode == "random"
                        else torch.zeros(batch_size, dtype=torch.long))
        chosen_views.append(torch.randint(views, (batch_size,), generator=g))
        records.append(idx)
    return SamplePlan(torch.stack(records), torch.stack(captions), torch.stack(chosen_views))
