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

``--family sd|sdxl|sd3|flux|all`` measures the feature cache of each family's preset (sd15-coco,
sdxl-coco, sd35-coco, flux-coco) at the family's real shapes instead: what ``FeatureCache`` stores is
one fp16 row per caption in each conditioning store (SD1.5: 77 x 768 text; SDXL: 77 x 2048 text and a
1280 pooled vector; SD3.5: (77 + T5 tokens) x 4096 and 2048; FLUX.1: T5 tokens x 4096 and 768) and one
fp16 row of posterior mean and log-variance per cached image view (4 or 16 channels at 1/8 of the
preset's resolution). Random tensors of those shapes go through the cache's own writer (``ShardStore``,
in the encoder's chunks) and reader (``FeatureCache.batch``) in a fresh process per size; the shard files'
sizes give the bytes per caption and per view, and the preset's sample plan (``draw_plan`` over
``data.subset_size`` images of 5 COCO captions each) the cache it fills. Memory is taken at two entry
counts (whole multiples of the captions the writer holds before it writes a shard), to show it does not
grow with the entries: the peak RSS while writing, and what reading adds to the resident set. SD1.5 is
always measured, as the ratios' base.

    python benchmarks/scale_rehearsal.py --family all [--sizes 1,4] [--json cache.json]
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import resource
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

FAMILY_PRESETS = {"sd": "sd15-coco", "sdxl": "sdxl-coco", "sd3": "sd35-coco", "flux": "flux-coco"}
CLIP_TOKENS, CLIP_L, CLIP_G, T5_XXL = 77, 768, 1280, 4096
"""CLIP's 77 tokens and the encoders' widths: CLIP ViT-L/14 (SD1.5; the first of SDXL and SD3; FLUX's),
OpenCLIP ViT-bigG/14 (the second of SDXL and SD3; its pooled projection is 1280 wide too), T5 v1.1 XXL."""
LATENT_CHANNELS = {"sd": 4, "sdxl": 4, "sd3": 16, "flux": 16}
VAE_FACTOR = 8
CAPTIONS_PER_IMAGE = 5
"""COCO's captions per image, for the plan's distinct captions."""


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


# ---- the feature cache per family (--family) ------------------------------------------------------

def t5_tokens(family: str, cfg) -> int | None:
    """The T5 tokens a caption is encoded with: ``model.max_sequence_length`` or the pipeline's default."""
    from swapbench.families import flux, sd3

    defaults = {"sd3": sd3.SEQUENCE_LENGTH, "flux": flux.DEV_LENGTH}
    if family not in defaults:
        return None
    return cfg.model.max_sequence_length or defaults[family]


def cache_shapes(family: str, resolution: int, t5: int | None) -> dict[str, list[int]]:
    """The row shape of every store ``FeatureCache`` keeps: each conditioning key (the family's encode) and
    ``latents`` (the VAE posterior's mean and log-variance, stacked on channels as its ``parameters``)."""
    if family == "sd":
        cond = {"text": [CLIP_TOKENS, CLIP_L]}
    elif family == "sdxl":  # both CLIP encoders' penultimate states side by side; the second's projection
        cond = {"text": [CLIP_TOKENS, CLIP_L + CLIP_G], "pooled": [CLIP_G]}
    elif family == "sd3":  # both CLIPs zero-padded to T5's width, then T5, along the sequence
        cond = {"text": [CLIP_TOKENS + t5, T5_XXL], "pooled": [CLIP_L + CLIP_G]}
    else:  # FLUX: T5's states alone; CLIP's pooled output
        cond = {"text": [t5, T5_XXL], "pooled": [CLIP_L]}
    side = resolution // VAE_FACTOR
    return {**cond, "latents": [2 * LATENT_CHANNELS[family], side, side]}


def flush_rows(row_shape: list[int]) -> int:
    """Captions the cache writer holds before it writes a shard: whole encoder chunks up to ``SHARD_BYTES``."""
    from swapbench.train.features import SHARD_BYTES, FeatureCache

    chunk = FeatureCache.CHUNK_CAPTIONS
    return chunk * -(-SHARD_BYTES // (chunk * 2 * math.prod(row_shape)))


def rss_mb() -> float:
    """This process's resident set now (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def caption_key(i: int) -> str:
    """A caption as long as COCO's (about 52 characters): the stores key their rows by the text."""
    return f"a photo of a giraffe standing in a field, number {i:07d}"


def view_key(i: int, views: int = 4) -> str:
    """An image view's key as the cache makes it: path, size and mtime of a COCO file, then the view."""
    return f"/data/coco/train2017/{i // views:012d}.jpg|161234|1700000000000000000#{i % views}"


def chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def write_entries(folder: Path, shapes: dict[str, list[int]], entries: int) -> float:
    """``entries`` captions and image views written as ``FeatureCache.for_plan`` writes them: float32 rows
    (what the encoders return) in the encoder's chunks, stored in fp16 through each store's writer;
    returns the peak RSS while writing."""
    import torch

    from swapbench.train.features import FeatureCache, ShardStore

    cond_keys = [k for k in shapes if k != "latents"]
    peak = rss_mb()
    with ExitStack() as stack:
        outs = {k: stack.enter_context(ShardStore(folder, k).writer()) for k in cond_keys}
        for start, stop in chunks(entries, FeatureCache.CHUNK_CAPTIONS):
            cond = {k: torch.randn(stop - start, *shapes[k]) for k in cond_keys}
            for k, out in outs.items():
                out.append([caption_key(i) for i in range(start, stop)], cond[k].half())
            peak = max(peak, rss_mb())
    if "latents" in shapes:
        with ShardStore(folder, "latents").writer() as out:
            for start, stop in chunks(entries, FeatureCache.CHUNK_IMAGES):
                params = torch.randn(stop - start, *shapes["latents"])
                out.append([view_key(i) for i in range(start, stop)], params.half())
                peak = max(peak, rss_mb())
    return max(peak, peak_rss_mb())  # the shard writes happen between the samples


def read_batches(folder: Path, shapes: dict[str, list[int]], entries: int, batch: int, reads: int) -> float:
    """``reads`` micro-batches of ``batch`` random entries, read as a new run reads them (shards indexed from
    disk, ``FeatureCache.batch``); returns the peak RSS while reading, each batch held when it is taken."""
    import torch

    from swapbench.train.features import FeatureCache, ShardStore

    text = {k: ShardStore(folder, k) for k in shapes if k != "latents"}
    latents = ShardStore(folder, "latents")
    picks = torch.randint(entries, (reads * batch,), generator=torch.Generator().manual_seed(0)).tolist()
    latent_loc = latents.locate([view_key(i) for i in picks]).view(reads, batch, 2)
    text_loc = {k: s.locate([caption_key(i) for i in picks]).view(reads, batch, 2) for k, s in text.items()}
    cache = FeatureCache(latents, text, latent_loc, text_loc, folder, 0)
    peak = rss_mb()
    for micro in range(reads):
        params, cond = cache.batch(micro)
        assert params.shape == (batch, *shapes["latents"]) and all(
            cond[k].shape == (batch, *shapes[k]) for k in text)
        peak = max(peak, rss_mb())
    return peak


def cache_child(spec: dict) -> None:
    """One size of one family in this (fresh) process: write, then read; prints the measurements."""
    import torch

    import swapbench.train.features  # noqa: F401 - the baseline includes what a run imports

    torch.set_num_threads(1)
    folder = Path(spec["folder"])
    baseline = rss_mb()
    started = time.perf_counter()
    write_peak = write_entries(folder, spec["shapes"], spec["entries"])
    write_s = time.perf_counter() - started
    # What writing leaves resident (freed heap the allocator keeps) varies from run to run by tens of MB, so
    # reading is measured as what it adds to the resident set it starts from.
    before_read = rss_mb()
    started = time.perf_counter()
    read_peak = read_batches(folder, spec["shapes"], spec["entries"], spec["batch"], spec["reads"])
    read_s = time.perf_counter() - started
    print(json.dumps({
        "entries": spec["entries"], "baseline_rss_mb": round(baseline, 1), "write_peak_rss_mb": round(write_peak, 1),
        "read_added_rss_mb": round(read_peak - before_read, 1), "write_s": round(write_s, 2),
        "read_s": round(read_s, 2),
        "store_bytes": {k: sum(f.stat().st_size for f in folder.glob(f"{k}-*.safetensors")) for k in spec["shapes"]},
    }))


@functools.cache
def plan_reads(subset: int, micro_batches: int, batch: int, views: int, caption_mode: str,
               seed: int) -> tuple[int, int]:
    """(distinct captions, distinct image views) a preset's sample plan reads over ``subset`` COCO images."""
    from swapbench.train.plan import draw_plan

    plan = draw_plan([CAPTIONS_PER_IMAGE] * subset, 0, None, micro_batches, batch, views, caption_mode, seed)
    captions = set(zip(plan.record.flatten().tolist(), plan.caption.flatten().tolist(), strict=True))
    return len(captions), len(plan.pairs())


def measure_family(family: str, args: argparse.Namespace, work: Path) -> dict:
    """Bytes per caption and view from the largest size's shards, peak RSS at every size, the preset's plan."""
    from child_process import run_child

    from swapbench.config import load_config
    from swapbench.families import get_family

    preset = FAMILY_PRESETS[family]
    cfg = load_config(preset)
    if cfg.data.target_share is not None:
        sys.exit(f"{preset}: the plan projection assumes uniform sampling (data.target_share null)")
    t5 = t5_tokens(family, cfg)
    shapes = cache_shapes(family, cfg.data.resolution, t5)
    cond_keys = [k for k in shapes if k != "latents"]
    assert cond_keys == list(get_family(family).cond_keys), (family, cond_keys)
    if args.entries:
        sizes = [int(n) for n in args.entries.split(",")]
    else:  # flush_rows imports the cache module (torchvision, accelerate): only for sizes in its units
        sizes = [flush_rows(shapes["text"]) * int(k) for k in args.sizes.split(",")]
    runs = []
    for entries in sizes:
        folder = work / f"{family}-{entries}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        spec = {"folder": str(folder), "shapes": shapes, "entries": entries, "batch": cfg.train.batch_size,
                "reads": args.reads}
        runs.append(run_child([__file__, "--cache-child", json.dumps(spec)], dict(os.environ)))
        shutil.rmtree(folder)
        print(json.dumps({"family": family, **runs[-1]}), file=sys.stderr)
    largest = runs[-1]
    per_caption = sum(largest["store_bytes"][k] for k in cond_keys) / largest["entries"]
    per_view = largest["store_bytes"]["latents"] / largest["entries"]
    views = cfg.train.cache_views if cfg.train.cache else 1
    captions, view_pairs = plan_reads(cfg.data.subset_size, cfg.train.max_steps * cfg.train.grad_accum,
                                      cfg.train.batch_size, views, cfg.data.caption, cfg.seed)
    row = {"family": family, "preset": preset, "shapes": shapes, "t5_tokens": t5,
           "resolution": cfg.data.resolution, "cache_views": views,
           "bytes_per_caption": round(per_caption), "bytes_per_view": round(per_view),
           "bytes_per_image": round(per_view * views),
           "plan": {"samples": cfg.train.max_steps * cfg.train.grad_accum * cfg.train.batch_size,
                    "distinct_captions": captions, "distinct_views": view_pairs,
                    "cache_gb": round((captions * per_caption + view_pairs * per_view) / 1e9, 2)},
           "runs": runs}
    default_t5 = t5_tokens(family, load_config(preset, overrides=["model.max_sequence_length=null"]))
    if t5 is not None and default_t5 != t5:
        row["at_pipeline_t5"] = at_other_t5(family, cfg, default_t5, per_view, captions, view_pairs, work)
    return row


def at_other_t5(family: str, cfg, t5: int, per_view: float, captions: int, view_pairs: int, work: Path) -> dict:
    """The caption rows at another T5 length (a few entries written here; the views do not depend on it)."""
    shapes = {k: v for k, v in cache_shapes(family, cfg.data.resolution, t5).items() if k != "latents"}
    folder = work / f"{family}-t5-{t5}"
    folder.mkdir(parents=True)
    entries = 32
    write_entries(folder, shapes, entries)
    per_caption = sum(f.stat().st_size for f in folder.glob("*.safetensors")) / entries
    shutil.rmtree(folder)
    return {"t5_tokens": t5, "bytes_per_caption": round(per_caption),
            "cache_gb": round((captions * per_caption + view_pairs * per_view) / 1e9, 2)}


def cache_main(args: argparse.Namespace) -> None:
    families = list(FAMILY_PRESETS) if args.family == "all" else list(dict.fromkeys(["sd", args.family]))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        rows = [measure_family(family, args, work) for family in families]
    base = rows[0]
    for row in rows:
        row["vs_sd15"] = {key: round(row[key] / base[key], 2) for key in ("bytes_per_caption", "bytes_per_view")}
        row["vs_sd15"]["cache_gb"] = round(row["plan"]["cache_gb"] / base["plan"]["cache_gb"], 2)
    result = {"seconds": round(time.perf_counter() - started, 1), "families": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print_cache_tables(rows)


def print_cache_tables(rows: list[dict]) -> None:
    print("| preset | text row | pooled | latents | KB / caption | KB / view | x SD1.5 caption | x SD1.5 view "
          "| plan: captions / views | plan cache GB | x SD1.5 |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        s, plan = r["shapes"], r["plan"]
        print(f"| {r['preset']} | {' x '.join(map(str, s['text']))} | {s['pooled'][0] if 'pooled' in s else '-'} "
              f"| {' x '.join(map(str, s['latents']))} | {r['bytes_per_caption'] / 1e3:,.1f} "
              f"| {r['bytes_per_view'] / 1e3:,.1f} | {r['vs_sd15']['bytes_per_caption']} "
              f"| {r['vs_sd15']['bytes_per_view']} | {plan['distinct_captions']:,} / {plan['distinct_views']:,} "
              f"| {plan['cache_gb']:,.1f} | {r['vs_sd15']['cache_gb']} |")
        if "at_pipeline_t5" in r:
            other = r["at_pipeline_t5"]
            print(f"| ... at {other['t5_tokens']} T5 tokens | | | | {other['bytes_per_caption'] / 1e3:,.1f} | | | | "
                  f"| {other['cache_gb']:,.1f} | |")
    print("\n| preset | entries | baseline RSS MB | peak RSS writing MB | RSS added reading MB | write s | read s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        for run in r["runs"]:
            print(f"| {r['preset']} | {run['entries']:,} | {run['baseline_rss_mb']:,.0f} "
                  f"| {run['write_peak_rss_mb']:,.0f} | {run['read_added_rss_mb']:,.0f} | {run['write_s']} "
                  f"| {run['read_s']} |")


def du_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=25_000, help="256 px training images to generate")
    parser.add_argument("--max-steps", default="1000,5000,10000", help="comma-separated train.max_steps values")
    parser.add_argument("--loop-steps", type=int, default=10, help="optimiser steps run after each set-up")
    parser.add_argument("--workdir", help="keep pipeline, data and caches here (default: a temporary folder)")
    parser.add_argument("--cold", action="store_true", help="give every run an empty feature cache")
    parser.add_argument("--family", choices=[*FAMILY_PRESETS, "all"],
                        help="measure the feature cache at this family's real shapes instead (SD1.5 included)")
    parser.add_argument("--sizes", default="1,4",
                        help="--family: entry counts, in captions the cache writer holds before a shard is written")
    parser.add_argument("--entries", help="--family: comma-separated entry counts (instead of --sizes)")
    parser.add_argument("--reads", type=int, default=100, help="--family: micro-batches read back per size")
    parser.add_argument("--json", metavar="FILE", help="--family: also write the measurements to FILE")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cache-child", help=argparse.SUPPRESS)
    parser.add_argument("--pipeline", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--run-root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    if args.cache_child:
        return cache_child(json.loads(args.cache_child))
    if args.family:
        return cache_main(args)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        from child_process import run_child
        from rehearsal_models import reference_shapes

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
