"""Trainer throughput: the default cached trainer vs the exact uncached fp32 mode, from one run.

The uncached mode runs the random augmentation, the VAE and the text encoder at every step, as the
diffusers example trainer does; the cached mode reads stored latent distributions and caption
embeddings (swapbench/train/features.py). Both train the same savanna UNet on the same data.
Run on an idle machine:

    python benchmarks/train_throughput.py [--steps 60]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from swapbench.config import load_config
from swapbench.rundir import RunDir
from swapbench.train.recipe import SwapRecipe


def measure(cache: bool, steps: int, root: Path) -> dict:
    cfg = load_config("savanna", None, [f"train.cache={str(cache).lower()}", f"train.max_steps={steps}",
                                        "train.checkpoint_every=0", f"train.log_every={steps}"])
    run = RunDir(root / ("cached" if cache else "uncached"))
    run.root.mkdir(parents=True)
    recipe = SwapRecipe(cfg, run)
    start = time.perf_counter()
    recipe.setup()
    setup = time.perf_counter() - start
    recipe.next_batch()  # warm-up outside the timed loop, as for the reference
    result = recipe.train()
    return {"setup_s": round(setup, 2), "loop_s": round(result["seconds"], 2),
            "img_per_s": round(steps * cfg.train.batch_size / result["seconds"], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        measure(True, 2, Path(tmp) / "warm")  # fills the feature cache so "cached" measures steady state
        cached = measure(True, args.steps, Path(tmp))
        uncached = measure(False, args.steps, Path(tmp))
    print(json.dumps({"steps": args.steps, "cached": cached, "uncached_fp32": uncached,
                      "speedup": round(cached["img_per_s"] / uncached["img_per_s"], 2)}, indent=2))


if __name__ == "__main__":
    main()
