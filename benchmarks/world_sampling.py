"""Sampling throughput of the savanna pipeline at the default sampler.

Reports images/s at batch 64 and, as the in-run reference, images/s of the same pipeline called one
prompt at a time (how a naive evaluation script samples). Run on an idle machine:

    python benchmarks/world_sampling.py [--n 128]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from diffusers import StableDiffusionPipeline

from swapbench.eval.sampling import sample
from swapbench.world import manifest, resolve


def images_per_s(pipe, n: int, batch: int, steps: int, cfg: float) -> float:
    prompts = [f"a photo of a {c}" for c in ("giraffe", "zebra", "elephant", "horse")] * (n // 4)
    start = time.perf_counter()
    sample(pipe, prompts, list(range(len(prompts))), steps, cfg, batch_size=batch)
    return len(prompts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128, help="images per measurement")
    args = parser.parse_args()
    sampler = manifest()["sampler"]
    pipe = StableDiffusionPipeline.from_pretrained(resolve("world:savanna", "pipeline"), torch_dtype=torch.float32)
    images_per_s(pipe, 8, 8, sampler["steps"], sampler["guidance_scale"])  # warm-up
    batched = images_per_s(pipe, args.n, 64, sampler["steps"], sampler["guidance_scale"])
    single = images_per_s(pipe, max(16, args.n // 8), 1, sampler["steps"], sampler["guidance_scale"])
    print(json.dumps({
        "sampler": sampler, "threads": torch.get_num_threads(),
        "batch64_images_per_s": round(batched, 2), "batch1_images_per_s": round(single, 2),
        "speedup_vs_batch1": round(batched / single, 2),
    }, indent=2))


if __name__ == "__main__":
    main()
