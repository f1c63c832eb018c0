"""GPU rehearsal of the reference recipe: SD1.5's real component sizes, random weights, 256 px, batch 8.

Neither SD1.5 weights nor COCO can be downloaded on the machines this is run on, so it builds the
published SD1.5 component configs with random weights (benchmarks/rehearsal_models.py: UNet
320/640/1280/1280, ~860M parameters; the 4-block VAE; a 12-layer 768-wide CLIP text encoder) and a
256 px COCO-format set from the world generator. Throughput does not depend on the weights' values.
It runs the sd15-coco recipe two ways, each in a fresh process:

- ``cached-bf16``: swapbench's default on a GPU (feature cache, bf16 autocast);
- ``uncached-fp32``: augmentation, VAE and text encoder at every step in fp32, what the diffusers
  example trainer does each step;

and reports img/s over timed steps after warm-up, peak GPU memory, set-up time, and the projected wall
time of the recipe's 10,000 steps (set-up for the 10k plan's cache entries + loop) next to the
reference's ~3 h on one L4. ``--width tiny`` keeps the structure at a few channels so the same code
runs on a CPU in seconds (the slow-marked test does that):

    python benchmarks/gpu_rehearsal.py [--width full] [--images 2000] [--steps 50] [--warmup 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REFERENCE_HOURS_L4 = 3.0
RECIPE_STEPS = 10_000
MODES = {"cached-bf16": ["train.cache=true", "train.mixed_precision=bf16"],
         "uncached-fp32": ["train.cache=false", "train.mixed_precision=no"]}


def child(args: argparse.Namespace) -> dict:
    """One mode in this (fresh) process."""
    import torch

    from swapbench.config import load_config
    from swapbench.rundir import RunDir
    from swapbench.train.plan import draw_plan
    from swapbench.train.recipe import SwapRecipe

    device = "cuda" if torch.cuda.is_available() else "cpu"
    steps = args.warmup + args.steps
    overrides = [f"model.pretrained={args.pipeline}", f"data.source={args.data}", f"train.max_steps={steps}",
                 "train.checkpoint_every=0", f"train.log_every={steps}", f"device={device}", *MODES[args.child]]
    if device == "cpu":
        overrides.append("train.mixed_precision=no")  # bf16 autocast on a CPU measures nothing a GPU user sees
    cfg = load_config("sd15-coco", None, overrides)
    run = RunDir(Path(args.run_root) / args.child)
    run.root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    recipe = SwapRecipe(cfg, run)
    recipe.setup()
    setup_s = time.perf_counter() - started
    recipe.cfg.train.max_steps = args.warmup
    recipe.train()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    recipe.cfg.train.max_steps = steps
    loop = recipe.train()
    if device == "cuda":
        torch.cuda.synchronize()
    img_s = args.steps * cfg.train.batch_size / loop["seconds"]
    result = {"mode": args.child, "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
              "img_per_s": round(img_s, 2), "setup_s": round(setup_s, 1), "timed_steps": args.steps,
              "unet_parameters": sum(p.numel() for p in recipe.accelerator.unwrap_model(recipe.denoiser).parameters()),
              "peak_gpu_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20) if device == "cuda" else None,
              "mixed_precision": recipe.accelerator.mixed_precision}
    if recipe.features is not None:
        # The full recipe's plan decides how many entries its cache needs; this run's set-up timed a sample.
        full = draw_plan([len(r["captions"]) for r in recipe.records], recipe.n_target, cfg.data.target_share,
                         RECIPE_STEPS * cfg.train.grad_accum, cfg.train.batch_size, cfg.train.cache_views,
                         cfg.data.caption, cfg.seed)
        entries = len(full.pairs()) + len({recipe.records[r]["captions"][c] for r, c in
                                           zip(full.record.flatten().tolist(), full.caption.flatten().tolist(),
                                               strict=True)})
        result["cache_entries_10k"] = entries
        result["setup_s_per_entry"] = setup_s / max(recipe.features.encoded, 1)  # an upper bound: includes loading
        setup_10k = entries * result["setup_s_per_entry"]
    else:
        setup_10k = setup_s
    result["projected_10k_steps_h"] = round((setup_10k + RECIPE_STEPS * cfg.train.batch_size / img_s) / 3600, 2)
    return result


def rehearse(width: str, images: int, steps: int, warmup: int, work: Path) -> dict:
    from child_process import run_child
    from rehearsal_models import sd15

    from swapbench.world import generator

    pipeline = work / f"sd15-{width}" / "pipeline"
    if not (pipeline / "model_index.json").is_file():
        sd15(pipeline.parent, width)
    data = work / f"coco256-{images}"
    if not (data / "annotations/captions_train2017.json").is_file():
        generator.write_coco(data, seed=0, sizes={"train": images}, size=256)
    rows = {}
    for mode in MODES:
        env = {**os.environ, "SWAPBENCH_CACHE": str(work / "cache"), "HF_HUB_OFFLINE": "1"}
        rows[mode] = run_child([__file__, "--child", mode, "--pipeline", str(pipeline), "--data", str(data),
                                "--run-root", str(work / "runs"), "--steps", str(steps), "--warmup", str(warmup)], env)
        print(json.dumps(rows[mode]), file=sys.stderr)
    cached, uncached = rows["cached-bf16"], rows["uncached-fp32"]
    return {"width": width, "images": images, "batch_size": 8, "resolution": 256, "modes": rows,
            "speedup_cached_bf16_vs_uncached_fp32": round(cached["img_per_s"] / uncached["img_per_s"], 2),
            "reference_h_one_l4": REFERENCE_HOURS_L4,
            "projected_vs_reference": round(cached["projected_10k_steps_h"] / REFERENCE_HOURS_L4, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", choices=["full", "tiny"], default="full")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=50, help="timed optimiser steps per mode")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--workdir", help="keep pipeline, data and cache here (default: a temporary folder)")
    parser.add_argument("--child", choices=list(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--pipeline", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--run-root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        print(json.dumps(rehearse(args.width, args.images, args.steps, args.warmup, work), indent=2))


if __name__ == "__main__":
    main()
