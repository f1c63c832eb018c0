"""Trainer throughput: the default cached trainer vs the exact uncached fp32 mode, from one run.

The uncached mode runs the random augmentation, the VAE and the text encoder at every step, as the
diffusers example trainer does; the cached mode reads stored latent distributions and caption
embeddings (swapbench/train/features.py). Both train the same savanna UNet on the same data and
sample plan. A third loop feeds one fixed batch, so no data work at all: its img/s is the ceiling any
data path can reach, and ``ceiling / uncached`` the most that caching could ever gain on this model.
The three loops take turns in rounds (median reported) so that a machine whose speed drifts
does not favour one of them. Run on an idle machine:

    python benchmarks/train_throughput.py [--steps 30] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from swapbench.config import load_config
from swapbench.rundir import RunDir
from swapbench.train.recipe import SwapRecipe


def make(mode: str, steps: int, root: Path) -> SwapRecipe:
    cfg = load_config("savanna", None, [f"train.cache={str(mode != 'uncached').lower()}", f"train.max_steps={steps}",
                                        "train.checkpoint_every=0", f"train.log_every={steps}"])
    run = RunDir(root / mode)
    run.root.mkdir(parents=True)
    recipe = SwapRecipe(cfg, run)
    recipe.setup()
    if mode == "ceiling":
        fixed = recipe.next_batch(0)
        recipe.next_batch = lambda micro: fixed
    recipe.next_batch(0)  # warm-up outside the timed loops
    return recipe


def timed_steps(recipe: SwapRecipe, steps: int) -> float:
    """img/s of the next ``steps`` optimiser steps of the recipe's own loop."""
    recipe.cfg.train.max_steps = recipe.step + steps
    start = time.perf_counter()
    recipe.train()
    return steps * recipe.cfg.train.batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="optimiser steps per loop and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    total = args.steps * args.rounds
    with tempfile.TemporaryDirectory() as tmp:
        recipes = {mode: make(mode, total, Path(tmp)) for mode in ("cached", "uncached", "ceiling")}
        speeds: dict[str, list[float]] = {mode: [] for mode in recipes}
        for _ in range(args.rounds):
            for mode, recipe in recipes.items():
                speeds[mode].append(timed_steps(recipe, args.steps))
    img_s = {mode: round(statistics.median(v), 1) for mode, v in speeds.items()}
    print(json.dumps({
        "steps_per_round": args.steps, "rounds": args.rounds, "batch_size": recipes["cached"].cfg.train.batch_size,
        "img_per_s": img_s, "per_round": {m: [round(x, 1) for x in v] for m, v in speeds.items()},
        "speedup_cached_vs_uncached_fp32": round(img_s["cached"] / img_s["uncached"], 2),
        "ceiling_speedup_no_data_work": round(img_s["ceiling"] / img_s["uncached"], 2),
    }, indent=2))


if __name__ == "__main__":
    main()
