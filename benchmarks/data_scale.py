"""Data scale: peak RSS of load + prepare + feature-cache set-up against the size of the dataset.

Synthetic image-bearing datasets in the sd15-coco preset's layout (AKCIT/coco2017-captioning: one row per
image, an ``Image`` feature of 256 px JPEG bytes and a list of five COCO-style captions) are written with
``save_to_disk`` at 10k, 40k and 120k rows. For each row count and ``data.subset_size`` (2,000 and 25,000)
one fresh process runs the recipe's set-up (load, prepare, sample plan, feature cache of the plan's images
with a tiny random-weight pipeline, on an empty cache) and reports its peak RSS, and its RSS after the imports.
Memory must follow the subset and the plan, not the dataset: the target is <= 1.2x from 10k to 120k rows.

Rows share 512 rendered pictures; each row's bytes end in its row number (JPEG decoders ignore data
after the end-of-image marker), so every row is a distinct image to the cache and to content hashes.
Run on an idle machine:

    python benchmarks/data_scale.py [--rows 10000,40000,120000] [--subsets 2000,25000] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ANIMALS = ["elephant", "horse", "lion", "cow", "dog", "bird", "sheep", "bear"]
PLACES = ["in a field", "near a tree", "on the grass", "by the water", "in the sand", "under a blue sky"]


def _rss_mb(field: str = "VmHWM") -> float:
    """Peak (``VmHWM``) or current (``VmRSS``) resident set of this process, from /proc where there is one.

    Not ``getrusage``: Linux carries ``ru_maxrss`` across ``exec``, so a child started by a big parent
    would report the parent's size as its own peak."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / (1024 if sys.platform == "darwin" else 1)


def _pictures(n: int, size: int = 256) -> list[bytes]:
    from PIL import Image, ImageDraw

    rng = random.Random(0)
    out = []
    for _ in range(n):
        im = Image.new("RGB", (size, size), tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(im)
        for _ in range(12):
            x, y = rng.randrange(size), rng.randrange(size)
            draw.ellipse([x, y, x + rng.randrange(20, 120), y + rng.randrange(20, 120)],
                         fill=tuple(rng.randrange(256) for _ in range(3)))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def _captions(rng: random.Random) -> list[str]:
    u = rng.random()
    subject = ("giraffe" if u < 0.08 else "zebra" if u < 0.14 else "giraffe and a zebra" if u < 0.15
               else rng.choice(ANIMALS))
    return [f"A {subject} {rng.choice(PLACES)}." for _ in range(5)]


def build(rows: int, folder: Path) -> Path:
    """A save_to_disk dataset with the AKCIT/coco2017-captioning features (written once per row count)."""
    import datasets

    if (folder / "dataset_info.json").is_file():
        return folder
    pictures = _pictures(512)
    string = datasets.Value("string")
    features = datasets.Features({"image": datasets.Image(), "image_id": datasets.Value("int64"), "text": string,
                                  "captions": datasets.List(string), "split": string})

    def generate():
        rng = random.Random(rows)
        for i in range(rows):
            captions = _captions(rng)
            yield {"image": {"bytes": pictures[i % len(pictures)] + i.to_bytes(4, "little"), "path": None},
                   "image_id": i, "text": captions[0], "captions": captions, "split": "train"}

    ds = datasets.Dataset.from_generator(generate, features=features, cache_dir=str(folder.parent / "build-cache"))
    ds.save_to_disk(str(folder), max_shard_size="500MB")
    return folder


def tiny_pipeline(folder: Path) -> Path:
    if (folder / "model_index.json").is_file():
        return folder
    import torch

    from swapbench.world import models

    torch.manual_seed(0)
    tokenizer = models.build_tokenizer(folder.parent / "tok")
    unet = models.build_unet(latent_size=8, block_out_channels=(32, 64))
    models.assemble_pipeline(models.build_vae(32), models.build_text_encoder(), tokenizer, unet).save_pretrained(
        folder, safe_serialization=True)
    return folder


def child(args: argparse.Namespace) -> None:
    """One measurement in this fresh process: the recipe's set-up on ``args.data`` with ``args.subset``."""
    from swapbench.config import load_config
    from swapbench.rundir import RunDir
    from swapbench.train.recipe import SwapRecipe

    imported = _rss_mb("VmRSS")
    cfg = load_config("sd15-coco", None, [f"model.pretrained={args.pipeline}", f"data.source={args.data}",
                                          f"data.subset_size={args.subset}", "data.resolution=32",
                                          f"train.max_steps={args.steps}", "train.checkpoint_every=0", "device=cpu",
                                          "eval.judge=world:savanna"])
    run = RunDir(Path(args.run_root))
    run.root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    recipe = SwapRecipe(cfg, run)
    recipe.setup()
    print(json.dumps({"rows": args.rows, "subset": args.subset, "records": len(recipe.records),
                      "plan_images": len(recipe.plan.pairs()), "encoded": recipe.features.encoded,
                      "setup_s": round(time.perf_counter() - started, 1), "rss_after_imports_mb": round(imported, 1),
                      "peak_rss_mb": round(_rss_mb(), 1)}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="10000,40000,120000")
    parser.add_argument("--subsets", default="2000,25000")
    parser.add_argument("--steps", type=int, default=100, help="train.max_steps of the plan the cache is set up for")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name in ("--pipeline", "--data", "--run-root"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    parser.add_argument("--subset", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.rows = int(args.rows)
        child(args)
        return 0

    work = Path(args.workdir or tempfile.mkdtemp(prefix="data-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    pipeline = tiny_pipeline(work / "pipeline")
    results = []
    for rows in (int(r) for r in args.rows.split(",")):
        t = time.perf_counter()
        data = build(rows, work / f"rows-{rows}")
        print(f"built {rows} rows in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        for subset in (int(s) for s in args.subsets.split(",")):
            env = {**os.environ, "SWAPBENCH_CACHE": str(work / f"cache-{rows}-{subset}"), "OMP_NUM_THREADS": "1",
                   "HF_HUB_OFFLINE": "1"}
            out = subprocess.run([sys.executable, __file__, "--child", "--rows", str(rows), "--subset", str(subset),
                                  "--steps", str(args.steps), "--pipeline", str(pipeline), "--data", str(data),
                                  "--run-root", str(work / f"run-{rows}-{subset}")],
                                 capture_output=True, text=True, env=env)
            if out.returncode:
                print(out.stderr[-3000:], file=sys.stderr)
                return 1
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), file=sys.stderr)

    print("| rows | subset | records | plan images | set-up s | RSS after imports MB | peak RSS MB |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['rows']:,} | {r['subset']:,} | {r['records']:,} | {r['plan_images']:,} | {r['setup_s']} | "
              f"{r['rss_after_imports_mb']:.0f} | {r['peak_rss_mb']:.0f} |")
    ratios = {}
    for subset in {r["subset"] for r in results}:
        by_rows = sorted((r["rows"], r["peak_rss_mb"]) for r in results if r["subset"] == subset)
        ratios[str(subset)] = round(by_rows[-1][1] / by_rows[0][1], 3)
    print(json.dumps({"peak_rss_ratio_largest_vs_smallest": ratios, "workdir": str(work)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
