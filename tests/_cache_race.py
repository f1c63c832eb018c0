"""One process of the two-process feature-cache race test (tests/test_features.py).

Forces the interleaving that broke multi-process runs: after listing what is missing, rank 0 encodes
and writes a shard of those entries before rank 1 lists anything; rank 1 lists only once that shard
is on disk. Each rank then writes what it read for every micro-batch, and how long its own listing was.
"""

import json
import sys
import time
from pathlib import Path

import torch
from accelerate import PartialState
from safetensors.torch import save_file

from swapbench.config import DataConfig
from swapbench.data.sources import load_records
from swapbench.families import for_pipeline
from swapbench.loading import load_pipeline
from swapbench.train.features import Encoders, FeatureCache
from swapbench.train.plan import draw_plan

EARLY = 8  # entries rank 0 writes before rank 1 lists


def main(pipeline: str, coco: str, out: str) -> None:
    out_dir = Path(out)
    state = PartialState(cpu=True)
    pipe = load_pipeline(pipeline)
    records = load_records(coco, "train").to_list()
    plan = draw_plan([len(r["captions"]) for r in records], 20, 0.5, 12, 12, 2, "random", seed=4)
    cfg = DataConfig(resolution=32)
    encoders = Encoders(pipe, for_pipeline(pipe), "cpu", weights_key="tiny")
    flag = out_dir / "rank0-wrote"
    own: dict[str, int] = {}
    listing = FeatureCache.missing_work

    def interleaved(latents, text, pairs, image_keys, captions):
        if state.process_index == 1:
            deadline = time.monotonic() + 120
            while not flag.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            latents.refresh()  # rank 1 reaches its listing only now, as a slower process would
            text.refresh()
        todo, new_captions = listing(latents, text, pairs, image_keys, captions)
        own.update(images=len(todo), captions=len(new_captions))
        if state.process_index == 0:
            FeatureCache._encode_images(records, todo[:EARLY], image_keys, latents, cfg, encoders, 0, 0, 1)
            flag.touch()
        return todo, new_captions

    FeatureCache.missing_work = staticmethod(interleaved)
    cache = FeatureCache.for_plan(records, plan, cfg, encoders, seed=0)
    batches = [cache.batch(m) for m in range(len(plan.record))]
    rank = state.process_index
    save_file({"latents": torch.cat([b[0] for b in batches]).contiguous(),
               "text": torch.cat([b[1] for b in batches]).contiguous()}, str(out_dir / f"rank{rank}.safetensors"))
    (out_dir / f"rank{rank}.json").write_text(json.dumps({"own_listing": own, "encoded": cache.encoded}))


if __name__ == "__main__":
    main(*sys.argv[1:])
