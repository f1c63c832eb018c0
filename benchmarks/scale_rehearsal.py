"""Scale rehearsal: the sd15-coco recipe's set-up and first steps at its real tensor shapes, by max_steps.

Real SD1.5 weights and COCO cannot be downloaded here, so the rehearsal builds a random-weight pipeline
with the reference recipe's shapes and tiny compute (benchmarks/rehearsal_models.py: 77 x 768 text
embeddings, a factor-8 VAE giving 4 x 32 x 32 latents at 256 px, cross_attention_dim 768) and a 256 px
COCO-format data set from the world generator (25,000 images by default). Then, for each
``train.max_steps`` (1k / 5k / 10k), one fresh process runs the recipe's set-up (data, sample plan,
feature cache) and a few optimiser steps, and reports its peak RSS, the cache's size on disk and the
set-up time. Memory must not grow with max_steps: the plan's features live on disk, not in RAM.

The runs share one feature cache, as consecutive runs of a user do: each encodes only the entries its
longer plan adds (``--cold`` gives every run an empty cache instead). Run on an idle machine:

    python benchmarks/scale_rehearsal.py [--images 25000] [--max-steps 1000,5000,10000] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path


def child(args: argparse.Namespace) -> None:
    """One run in this (fresh) process: set-up for ``max_steps``, then ``loop_steps`` optimiser steps."""
    from swapbench.config import load_config
    from swapbench.rundir import RunDir
    from swapbench.train.recipe import SwapRecipe

    cfg = load_config("sd15-coco", None, [f"model.pretrained={args.pipeline}", f"data.source={args.data}",
                                          f"train.max_steps={args.child}", "train.checkpoint_every=0",
                                          "device=cpu", f"train.log_every={args.loop_steps}"])
    run = RunDir(Path(args.run_root) / f"steps-{args.child}")
    run.root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    recipe = SwapRecipe(cfg, run)
    recipe.setup()
    setup_s = time.perf_counter() - started
    plan_samples = recipe.plan.record.numel()
    recipe.cfg.train.max_steps = args.loop_steps  # the plan and cache were made for the full run
    loop = recipe.train()
    print(json.dumps({
        "max_steps": args.child, "setup_s": round(setup_s, 1), "plan_samples": plan_samples,
        "records": len(recipe.records), "cache_entries_encoded": recipe.features.encoded,
        "loop_img_per_s": round(args.loop_steps * cfg.train.batch_size / loop["seconds"], 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "cache_dir": str(recipe.features.path),
    }))


def du_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=25_000, help="256 px training images to generate")
    parser.add_argument("--max-steps", default="1000,5000,10000", help="comma-separated train.max_steps values")
    parser.add_argument("--loop-steps", type=int, default=10, help="optimiser steps run after each set-up")
    parser.add_argument("--workdir", help="keep pipeline, data and caches here (default: a temporary folder)")
    parser.add_argument("--cold", action="store_true", help="give every run an empty feature cache")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--pipeline", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--run-root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        from rehearsal_models import reference_shapes, run_child

        from swapbench.world import generator

        pipeline = work / "pipeline"
        if not (pipeline / "model_index.json").is_file():
            reference_shapes(work)
        data = work / f"coco256-{args.images}"
        started = time.perf_counter()
        if not (data / "annotations/captions_train2017.json").is_file():
            shutil.rmtree(data, ignore_errors=True)
            generator.write_coco(data, seed=0, sizes={"train": args.images}, size=256)
        data_s = time.perf_counter() - started
        rows = []
        for steps in [int(s) for s in args.max_steps.split(",")]:
            cache = work / (f"cache-{steps}" if args.cold else "cache")
            if args.cold:
                shutil.rmtree(cache, ignore_errors=True)
            env = {**os.environ, "SWAPBENCH_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
            row = run_child([__file__, "--child", str(steps), "--pipeline", str(pipeline), "--data", str(data),
                             "--run-root", str(work / "runs"), "--loop-steps", str(args.loop_steps)], env)
            row["cache_on_disk_mb"] = round(du_mb(Path(row.pop("cache_dir"))), 1)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    first, last = rows[0], rows[-1]
    print(json.dumps({"images": args.images, "data_generation_s": round(data_s, 1), "cold": args.cold, "runs": rows,
                      "peak_rss_ratio_last_vs_first": round(last["peak_rss_mb"] / first["peak_rss_mb"], 3),
                      "plan_samples_ratio_last_vs_first": round(last["plan_samples"] / first["plan_samples"], 1)},
                     indent=2))
    print("\n| max_steps | plan samples | entries encoded | set-up s | peak RSS MB | cache on disk MB |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['max_steps']:,} | {r['plan_samples']:,} | {r['cache_entries_encoded']:,} | {r['setup_s']} | "
              f"{r['peak_rss_mb']:,.0f} | {r['cache_on_disk_mb']:,.0f} |")


if __name__ == "__main__":
    main()
