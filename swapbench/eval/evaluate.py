"""One evaluation: sample base and tuned with the same seeds, judge both, compute every metric.

Base samples are cached on disk by (base weights hash, sampler settings, prompt, seed), so a second
run evaluated against the same base samples only its tuned half. Images are quantised to 8-bit
before judging, exactly as they are cached, so cached and fresh samples score identically.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from diffusers import DiffusionPipeline
from PIL import Image

from swapbench import __version__, catalog, schema
from swapbench.config import Config
from swapbench.eval import metrics as M
from swapbench.eval import probes, scoring
from swapbench.eval.inception import InceptionFeatures
from swapbench.eval.judge import ZeroShotJudge
from swapbench.eval.sampling import sample
from swapbench.eval.suite import PromptItem, Suite
from swapbench.io import atomic_write, atomic_write_json
from swapbench.loading import ModelSpec, SafetyChecker, load_pipeline, resolve_model
from swapbench.paths import cache_dir
from swapbench.progress import progress_bar
from swapbench.samplers import build_scheduler
from swapbench.weights import weights_hash


@dataclass
class Target:
    tuned: str  # pipeline folder or spec
    base: str
    name: str
    run_dir: Path | None = None

    @property
    def tuned_is_base(self) -> bool:
        return self.tuned == self.base


def prepare_pipeline(pipe: DiffusionPipeline, cfg: Config, device: torch.device) -> DiffusionPipeline:
    pipe.scheduler = build_scheduler(cfg.eval.sampler, pipe.scheduler.config)
    return pipe.to(device)


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    return (images.permute(0, 2, 3, 1).numpy() * 255).round().clip(0, 255).astype(np.uint8)


def _to_float(arrays: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 255


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60]


class SampleStore:
    """Base samples on disk: one PNG per (prompt, seed) under a folder keyed by weights + sampler."""

    def __init__(self, key: str):
        self.key = key
        self.root = cache_dir("base-samples", key)

    def path(self, prompt: str, seed: int) -> Path:
        return self.root / f"{hashlib.sha256(prompt.encode()).hexdigest()[:20]}-{seed}.png"

    def get(self, prompt: str, seed: int) -> np.ndarray | None:
        p = self.path(prompt, seed)
        return np.asarray(Image.open(p).convert("RGB")) if p.is_file() else None

    def put(self, prompt: str, seed: int, image: np.ndarray) -> None:
        # A unique temporary name per write: evaluations that share a base (parallel sweep points)
        # write the same entries at the same time, and a shared name lets one move the other's half-file.
        atomic_write(self.path(prompt, seed), lambda tmp: Image.fromarray(image).save(tmp, format="PNG"))


def generate(pipe, jobs: list[tuple[str, int]], cfg: Config, label: str, store: SampleStore | None) -> tuple[np.ndarray, int]:
    """Images for ``jobs`` (prompt, seed); cached ones come from ``store``. Returns (images, n sampled).

    Under several processes the missing images are dealt out in whole sampling batches (batch ``k``
    to process ``k mod N``), so every image is computed in the same batch as in one process, and every
    process ends with all images."""
    state = PartialState()
    state.wait_for_everyone()  # every process looks at the store before any of them writes to it
    out: list[np.ndarray | None] = [store.get(p, s) if store else None for p, s in jobs]
    missing = [i for i, im in enumerate(out) if im is None]
    size = cfg.eval.batch_size
    mine = [i for k in range(state.process_index, -(-len(missing) // size), state.num_processes)
            for i in missing[k * size : (k + 1) * size]]
    sampled: list[tuple[int, np.ndarray]] = []
    if mine:
        with progress_bar(transient=True) as bar:
            task = bar.add_task(f"sample {label}", total=len(mine), info=f"{cfg.eval.steps} steps, cfg {cfg.eval.guidance_scale}")
            images = sample(pipe, [jobs[i][0] for i in mine], [jobs[i][1] for i in mine], cfg.eval.steps,
                            cfg.eval.guidance_scale, size, cfg.eval.resolution,
                            progress=lambda n: bar.advance(task, n))
        for i, image in zip(mine, _to_uint8(images), strict=True):
            sampled.append((i, image))
            if store:
                store.put(jobs[i][0], jobs[i][1], image)
    if state.num_processes > 1:
        sampled = gather_object(sampled)
    for i, image in sampled:
        out[i] = image
    return np.stack(out), len(missing)


def evaluate(cfg: Config, target: Target, suite: Suite, items: list[PromptItem], judge: ZeroShotJudge,
             out_dir: Path, device: torch.device, tuned_pipe: DiffusionPipeline | None = None) -> dict | None:
    """Sample (split over the processes of a launch), judge and score; the main process writes
    ``results.json`` and returns it, the other processes return None.

    ``tuned_pipe``: the tuned model already in memory (training's in-loop evaluation), used instead of
    loading ``target.tuned``."""
    started = time.perf_counter()
    sampler_key = {"sampler": cfg.eval.sampler, "steps": cfg.eval.steps, "guidance_scale": cfg.eval.guidance_scale,
                   "resolution": cfg.eval.resolution}
    # Loaded before sampling, so a missing weight file fails in seconds, not after the images.
    inception = InceptionFeatures(cfg.eval.inception_weights, device) if cfg.eval.fid_features == "inception" else None
    # SD's safety checker never runs inside sampling: an image it would blacken is scored as drawn and
    # counted apart (safety_flagged/*), not silently judged as whatever a black square looks like.
    base_pipe = prepare_pipeline(load_pipeline(_spec(target.base, cfg), safety_checker=False), cfg, device)
    items, forms_read = probes.read_forms(items, base_pipe.tokenizer)  # spellings are checked on the real tokenizer
    jobs = [(item, seed) for item in items for seed in item.seeds]
    prompts_seeds = [(item.prompt, seed) for item, seed in jobs]
    base_hash = weights_hash(base_pipe.config["_name_or_path"]) if Path(target.base).is_dir() else target.base
    store = SampleStore(hashlib.sha256(json.dumps([base_hash, sampler_key], sort_keys=True).encode()).hexdigest()[:24])
    base_images, base_sampled = generate(base_pipe, prompts_seeds, cfg, "base", store)
    trajectory = (probes.Trajectory.plan(suite.trajectory, jobs, base_images, cfg, cache_dir("base-trajectories", store.key))
                  if suite.trajectory else None)
    if trajectory:
        trajectory.base_half(base_pipe)
    t_base = time.perf_counter() - started
    if target.tuned_is_base:
        tuned_images, tuned_sampled, tuned_pipe = base_images, 0, base_pipe
    else:
        del base_pipe
        tuned_pipe = prepare_pipeline(tuned_pipe or load_pipeline(target.tuned, safety_checker=False), cfg, device)
        tuned_images, tuned_sampled = generate(tuned_pipe, prompts_seeds, cfg, "tuned", None)
    if trajectory:
        trajectory.tuned_half(tuned_pipe)
    t_sampling = time.perf_counter() - started
    if not PartialState().is_main_process:
        return None  # the main process judges, scores and writes

    base_t, tuned_t = _to_float(base_images), _to_float(tuned_images)
    base_p, tuned_p = judge.probabilities(base_t), judge.probabilities(tuned_t)
    base_f, tuned_f = judge.features(base_t), judge.features(tuned_t)
    labels = suite.labels
    base_lab = [labels[i] for i in base_p.argmax(1).tolist()]
    tuned_lab = [labels[i] for i in tuned_p.argmax(1).tolist()]

    control = [i for i, (it, _) in enumerate(jobs) if it.group == "control"]
    distance = None
    if inception is not None and len(control) >= 4:
        base_d = inception(base_images[control])
        tuned_d = base_d if target.tuned_is_base else inception(tuned_images[control])
        distance = (tuned_d, base_d, "Inception-v3 pool3 features")
    results_metrics, per_prompt = _score(cfg, suite, jobs, base_lab, tuned_lab, base_p, tuned_p, base_f, tuned_f, judge,
                                         distance)
    safety = _count_flagged(cfg, target, base_images, tuned_images, results_metrics, per_prompt, device)
    keep = suite.keep_samples if cfg.eval.keep_samples is None else cfg.eval.keep_samples
    per_prompt = _keep_samples(per_prompt, jobs, base_images, tuned_images, keep, out_dir)
    if trajectory:
        per_prompt += trajectory.rows(judge, suite, out_dir, keep)
    results_metrics.update(probes.score(per_prompt, suite, cfg.eval.bootstrap, cfg.seed))
    single = [(i, it) for i, (it, _) in enumerate(jobs) if it.group in ("swap", "control", "specificity")]
    import diffusers

    results = {
        "schema_version": schema.SCHEMA_VERSION,
        "run": target.name,
        "suite": suite.name,
        "swap_pairs": [list(pair) for pair in suite.swap_pairs],
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "metrics": results_metrics,
        "confusion": M.confusion([(it.concept, tuned_lab[i]) for i, it in single], labels),
        "confusion_base": M.confusion([(it.concept, base_lab[i]) for i, it in single], labels),
        "per_prompt": per_prompt,
        **({"robust": {**probes.details(per_prompt, labels), "forms": forms_read,
                       **({"trajectory": trajectory.summary()} if trajectory else {})}}
           if forms_read or trajectory or any(it.group in probes.PROBE_GROUPS for it in items) else {}),
        "sampler": sampler_key,
        "features": inception.name if inception is not None else f"judge image embeddings ({judge.name})",
        "labels": labels,
        "timing": {"total_s": None, "sampling_s": round(t_sampling, 2), "base_sampling_s": round(t_base, 2),
                   "base_sampled": base_sampled, "base_cached": len(jobs) - base_sampled, "tuned_sampled": tuned_sampled},
        "provenance": {
            "swapbench": __version__, "git": _git_hash(), "torch": torch.__version__, "diffusers": diffusers.__version__,
            "device": str(device), "processes": PartialState().num_processes, "judge": judge.name, "judge_templates": judge.templates,
            "base_model": target.base, "base_weights_sha256": base_hash, "tuned_model": target.tuned,
            "safety_checker": safety,
            "seeds": {"per_prompt": sorted({len(it.seeds) for it in items}), "bootstrap_seed": cfg.seed},
            "config_sha256": cfg.sha256(),
        },
    }
    results["timing"]["total_s"] = round(time.perf_counter() - started, 2)
    atomic_write_json(out_dir / "results.json", results)
    return results


def _score(cfg, suite, jobs, base_lab, tuned_lab, base_p, tuned_p, base_f, tuned_f, judge,
           distance=None) -> tuple[dict, list]:
    """Per-prompt rows (what each image was judged and whether it counts as a success), then every
    metric from those rows (``scoring.score_rows``) plus the feature distances of the controls."""
    reps, seed = cfg.eval.bootstrap, cfg.seed
    label_index = {c: i for i, c in enumerate(suite.labels)}
    control = [i for i, (it, _) in enumerate(jobs) if it.group == "control"]
    clip: dict[int, tuple[float, float]] = {}
    if len(control) >= 4:
        text = judge.text_features([jobs[i][0].prompt for i in control])
        tuned_clip = (100 * (tuned_f[control] * text).sum(-1)).clamp(min=0).tolist()
        base_clip = (100 * (base_f[control] * text).sum(-1)).clamp(min=0).tolist()
        clip = {i: (t, b) for i, t, b in zip(control, tuned_clip, base_clip, strict=True)}
    per_prompt = []
    for i, (item, s) in enumerate(jobs):
        partner = suite.partner(item.concept)
        if item.kind == "compositions":
            pa, pc = tuned_p[i, label_index[partner]], tuned_p[i, label_index[item.concept]]
            success = bool(pa > pc)
        elif partner and item.group != "control":
            success = tuned_lab[i] == partner
        elif item.group == "custom":
            success = tuned_lab[i] == item.concept
        else:
            success = tuned_lab[i] == base_lab[i]
        row = {"group": item.group, "kind": item.kind, "concept": item.concept, "prompt": item.prompt,
               "seed": s, "base_label": base_lab[i], "tuned_label": tuned_lab[i], "success": success,
               "scores": {c: round(float(tuned_p[i, j]), 4) for j, c in enumerate(suite.labels)}}
        if i in clip:
            # two decimals: the image and text features carry float noise from batch composition and thread
            # count in the 4th decimal of a 0-100 score, and one- and multi-process runs must write equal rows
            row["clip"], row["clip_base"] = (round(v, 2) for v in clip[i])
        per_prompt.append(row)

    out = scoring.score_rows(per_prompt, suite.swap_pairs, reps, seed)
    if len(control) >= 4:
        # distance: (tuned, base, name) control-sample features of another extractor (eval.fid_features)
        d_tuned, d_base, what = distance or (tuned_f[control], base_f[control], "judge features")
        prompts = [jobs[i][0].prompt for i in control]
        out["kid_vs_base"] = M.kid_vs_base(d_tuned, d_base, seed, what, prompts)
        out["fid_vs_base"] = M.fid_vs_base(d_tuned, d_base, seed, max(50, reps // 10), what, prompts)
    return {name: out[name] for name in catalog.ordered(out)}, per_prompt


def _spec(base: str, cfg: Config) -> ModelSpec | str:
    """The configured base keeps its revision and weights variant; another base is taken as named."""
    return ModelSpec.of(cfg.model) if base == resolve_model(cfg.model.pretrained) else base


def _count_flagged(cfg: Config, target: Target, base_images: np.ndarray, tuned_images: np.ndarray,
                   metrics: dict, per_prompt: list, device: torch.device) -> str:
    """``eval.safety_checker=count``: run the base's NSFW checker on every image beside the scoring; adds
    ``safety_flagged/base`` and ``safety_flagged/tuned`` and a per-image flag. Returns the provenance line."""
    if cfg.eval.safety_checker == "off":
        return "off: not run; every image scored as drawn"
    checker = SafetyChecker.load(_spec(target.base, cfg), device)
    if checker is None:
        return "none: the base pipeline has no safety checker"
    base_flags = checker.flagged(base_images)
    flags = {"base": base_flags, "tuned": base_flags if target.tuned_is_base else checker.flagged(tuned_images)}
    for which, flagged in flags.items():
        metrics[f"safety_flagged/{which}"] = M.Proportion(
            f"{which} images Stable Diffusion's safety checker flags as NSFW (scored as drawn, not blackened)",
            higher_is_better=False, outcomes=list(flagged)).compute()
    for row, b, t in zip(per_prompt, flags["base"], flags["tuned"], strict=True):
        row["safety_flagged"] = {"base": b, "tuned": t}
    return f"count: {checker.source} run beside sampling; flagged images counted (safety_flagged/*), never blackened"


def _keep_samples(per_prompt, jobs, base_images, tuned_images, keep: int, out_dir: Path) -> list:
    samples = out_dir / "samples"
    for i, ((item, seed), row) in enumerate(zip(jobs, per_prompt, strict=True)):
        if seed >= keep:
            continue
        folder = samples / item.group / _slug(item.prompt)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {}
        for which, images in (("base", base_images), ("tuned", tuned_images)):
            path = folder / f"seed{seed}-{which}.png"
            Image.fromarray(images[i]).save(path)
            paths[which] = str(path.relative_to(out_dir))
        row["images"] = paths
    return per_prompt


def _git_hash() -> str | None:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
