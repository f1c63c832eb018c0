"""One evaluation in four steps: sample base and tuned with the same seeds, judge every image once,
score the per-prompt rows, write results.json. :func:`evaluate` runs them in that order.

Base samples are cached on disk by (what the base loaded, sampler settings, prompt, seed), so a
second run evaluated against the same base samples only its tuned half.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from diffusers import DiffusionPipeline

from swapbench import __version__, catalog, schema
from swapbench.config import Config
from swapbench.eval import judge as judge_module
from swapbench.eval import metrics as M
from swapbench.eval import panel, probes, scoring, summaries
from swapbench.eval.inception import InceptionFeatures
from swapbench.eval.judge import Assessment, Judge, ZeroShotJudge
from swapbench.eval.rows import PromptItem, PromptRow, label_scores
from swapbench.eval.samples import SampleStore, keep_image, to_float, to_uint8
from swapbench.eval.sampling import deal, my_batches, sample
from swapbench.eval.suite import Suite
from swapbench.families import for_pipeline
from swapbench.io import atomic_write_json
from swapbench.loading import ModelSpec, SafetyChecker, family_of, load_pipeline, resolve_model
from swapbench.paths import cache_dir
from swapbench.progress import progress_bar
from swapbench.weights import model_hash

Job = tuple[PromptItem, int]
"""One image to draw: a prompt item and a seed."""
SINGLE_CONCEPT = ("swap", "remap", "erase", "control", "specificity")
"""Groups whose prompts name one concept: the rows of the confusion tables."""


@dataclass
class Target:
    tuned: str  # pipeline folder or spec
    base: str
    name: str
    run_dir: Path | None = None
    weights: dict | None = None
    """What ``--weights`` applied to the base to make the tuned model (``swapbench.weights_formats.load_edited``)."""

    @property
    def tuned_is_base(self) -> bool:
        return self.tuned == self.base


@dataclass
class Samples:
    """What sampling gives the later steps: both models' 8-bit images of every job, in job order."""

    items: list[PromptItem]
    """The items evaluated: the suite's, with the forms the base's tokenizer reads as intended."""
    forms: list[dict]
    jobs: list[Job]
    base: np.ndarray
    tuned: np.ndarray
    base_hash: str
    """:func:`swapbench.weights.model_hash` of the base: the key of its cached samples."""
    trajectory: probes.Trajectory | None
    timing: dict


@dataclass
class Judgement:
    """The judge's view of both models' images, and the control features KID and FID compare."""

    base: Assessment
    tuned: Assessment
    distance: tuple[torch.Tensor, torch.Tensor, str] | None
    """(tuned, base, what they are) features of the control images; None with too few controls."""
    further: dict[str, tuple[Assessment, Assessment]]
    """Each further judge's (base, tuned) view of the same images, by name."""


def prepare_pipeline(pipe: DiffusionPipeline, cfg: Config, device: torch.device) -> DiffusionPipeline:
    pipe.scheduler = for_pipeline(pipe).sampler(cfg.eval.sampler, pipe.scheduler.config)
    return pipe.to(device)


def sampler_settings(cfg: Config) -> dict:
    """What an image depends on besides weights, prompt and seed (the base-sample cache key, the pairing check)."""
    length = cfg.model.max_sequence_length
    return {"sampler": cfg.eval.sampler, "steps": cfg.eval.steps, "guidance_scale": cfg.eval.guidance_scale,
            "resolution": cfg.eval.resolution, **({"max_sequence_length": length} if length is not None else {})}


def evaluate(cfg: Config, target: Target, suite: Suite, items: list[PromptItem], judge: ZeroShotJudge,
             out_dir: Path, device: torch.device, tuned_pipe: DiffusionPipeline | None = None,
             others: dict[str, Judge] | None = None) -> dict | None:
    """Sample (split over the processes of a launch), judge and score; the main process writes
    ``results.json`` and returns it, the other processes return None.

    ``tuned_pipe``: the tuned model already in memory (training's in-loop evaluation, or the base with
    ``--weights`` applied), used instead of loading ``target.tuned``. ``others``: the further judges
    (``eval.judges``) by name; the metrics of ``judge`` keep the plain names, theirs are ``judge/<name>/...``
    with ``agreement/<name>/...``."""
    others = others or {}
    started = time.perf_counter()
    # Loaded before sampling, so a missing weight file fails in seconds, not after the images.
    inception = (InceptionFeatures(cfg.eval.inception_weights, device) if cfg.eval.fid_features == "inception"
                 else None)
    samples = sample_models(cfg, target, suite, items, device, tuned_pipe)
    if not PartialState().is_main_process:
        return None  # the main process judges, scores and writes
    judged = judge_samples(judge, samples, inception, target.tuned_is_base, others)
    rows = prompt_rows(suite, samples.jobs, judged, judge)
    safety, flagged = count_flagged(cfg, target, samples, rows, device)
    keep = suite.keep_samples if cfg.eval.keep_samples is None else cfg.eval.keep_samples
    keep_samples(rows, samples, keep, out_dir)
    if samples.trajectory:
        further = {name: (others[name], base.labels) for name, (base, _) in judged.further.items()}
        rows += samples.trajectory.rows(judge, suite, out_dir, keep, judged.base.labels, further)
    records = [row.to_json() for row in rows]
    metrics = {**score(cfg, suite, samples.jobs, records, judged), **flagged,
               **probes.score(records, suite, cfg.eval.bootstrap, cfg.seed),
               **panel.score(records, suite, list(others), cfg.eval.bootstrap, cfg.seed, target.tuned_is_base)}
    results = results_document(cfg, target, suite, judge, samples, rows, records, metrics, safety, inception,
                               device, others)
    results["timing"]["total_s"] = round(time.perf_counter() - started, 2)
    atomic_write_json(out_dir / "results.json", results)
    return results


# --- step 1: sampling ---------------------------------------------------------------------------------


def sample_models(cfg: Config, target: Target, suite: Suite, items: list[PromptItem], device: torch.device,
                  tuned_pipe: DiffusionPipeline | None = None) -> Samples:
    """Both models' images of every (item, seed), the base's from its cache where it has them."""
    started = time.perf_counter()
    spec = base_spec(target.base, cfg)
    # SD's safety checker never runs inside sampling: an image it would blacken is scored as drawn and
    # counted apart (safety_flagged/*), not silently judged as whatever a black square looks like.
    base_pipe = prepare_pipeline(load_pipeline(spec, safety_checker=False), cfg, device)
    # spellings are checked on the real tokenizer
    text_parts = for_pipeline(base_pipe).text_parts
    tokenizers = [t for t in (getattr(base_pipe, name) for name, _ in text_parts) if t is not None]
    items, forms = probes.read_forms(items, tokenizers)
    jobs = [(item, seed) for item in items for seed in item.seeds]
    prompts_seeds = [(item.prompt, seed) for item, seed in jobs]
    base_hash = model_hash(spec)
    key = json.dumps([base_hash, sampler_settings(cfg)], sort_keys=True)
    store = SampleStore(hashlib.sha256(key.encode()).hexdigest()[:24])
    base, base_sampled = generate(base_pipe, prompts_seeds, cfg, "base", store)
    trajectory = None
    if suite.trajectory:
        latents = cache_dir("base-trajectories", store.key)
        trajectory = probes.Trajectory.plan(suite.trajectory, jobs, base, cfg, latents)
    if trajectory:
        trajectory.base_half(base_pipe)
    t_base = time.perf_counter() - started
    if target.tuned_is_base:
        tuned, tuned_sampled, tuned_pipe = base, 0, base_pipe
    else:
        del base_pipe
        tuned_pipe = tuned_pipe or load_pipeline(target.tuned, safety_checker=False)
        tuned_pipe = prepare_pipeline(tuned_pipe, cfg, device)
        tuned, tuned_sampled = generate(tuned_pipe, prompts_seeds, cfg, "tuned", None)
    if trajectory:
        trajectory.tuned_half(tuned_pipe)
    timing = {"total_s": None, "sampling_s": round(time.perf_counter() - started, 2),
              "base_sampling_s": round(t_base, 2), "base_sampled": base_sampled,
              "base_cached": len(jobs) - base_sampled, "tuned_sampled": tuned_sampled}
    return Samples(items, forms, jobs, base, tuned, base_hash, trajectory, timing)


def generate(pipe, jobs: list[tuple[str, int]], cfg: Config, label: str,
             store: SampleStore | None) -> tuple[np.ndarray, int]:
    """Images for ``jobs`` (prompt, seed); cached ones come from ``store``. Returns (images, n sampled).

    Under several processes the missing images are dealt out in whole sampling batches
    (``sampling.deal``), and every process ends with all images."""
    out: list[np.ndarray | None] = [store.get(p, s) if store else None for p, s in jobs]
    PartialState().wait_for_everyone()  # every process looks at the store before any of them writes to it
    missing = [i for i, im in enumerate(out) if im is None]
    size = cfg.eval.batch_size
    if missing:
        with progress_bar(transient=True) as bar:
            mine = sum(len(batch) for _, batch in my_batches(len(missing), size))
            task = bar.add_task(f"sample {label}", total=mine,
                                info=f"{cfg.eval.steps} steps, cfg {cfg.eval.guidance_scale}")

            def compute(batch: list[int]) -> np.ndarray:
                todo = [missing[k] for k in batch]
                images = to_uint8(sample(pipe, [jobs[i][0] for i in todo], [jobs[i][1] for i in todo],
                                         cfg.eval.steps, cfg.eval.guidance_scale, size, cfg.eval.resolution,
                                         progress=lambda n: bar.advance(task, n),
                                         max_sequence_length=cfg.model.max_sequence_length))
                if store:
                    for i, image in zip(todo, images, strict=True):
                        store.put(*jobs[i], image)
                return images

            for i, image in zip(missing, deal(len(missing), size, compute), strict=True):
                out[i] = image
    return np.stack(out), len(missing)


def base_spec(base: str, cfg: Config) -> ModelSpec | str:
    """The configured base keeps its revision and weights variant; another base is taken as named."""
    return ModelSpec.of(cfg.model) if base == resolve_model(cfg.model.pretrained) else base


# --- step 2: judging ----------------------------------------------------------------------------------


def _controls(jobs: list[Job]) -> list[int]:
    """Positions of the control jobs, or none when there are too few for KID's two halves of two."""
    control = [i for i, (item, _) in enumerate(jobs) if item.group == "control"]
    return control if len(control) >= 4 else []


def judge_samples(judge: ZeroShotJudge, samples: Samples, inception: InceptionFeatures | None,
                  same: bool, others: dict[str, Judge] | None = None) -> Judgement:
    """Every image through each judge once (``same``: the tuned images are the base's); the control
    images through Inception too when ``eval.fid_features`` asks for it."""
    base_images = to_float(samples.base)
    tuned_images = base_images if same else to_float(samples.tuned)

    def both(j: Judge) -> tuple[Assessment, Assessment]:
        b = j.assess(base_images)
        return b, (b if same else j.assess(tuned_images))

    base, tuned = both(judge)
    further = {name: both(other) for name, other in (others or {}).items()}
    control = _controls(samples.jobs)
    if not control:
        return Judgement(base, tuned, None, further)
    if inception is None:
        return Judgement(base, tuned, (tuned.features[control], base.features[control], "judge features"), further)
    base_d = inception(samples.base[control])
    tuned_d = base_d if same else inception(samples.tuned[control])
    return Judgement(base, tuned, (tuned_d, base_d, "Inception-v3 pool3 features"), further)


# --- step 3: rows and scores --------------------------------------------------------------------------


def prompt_rows(suite: Suite, jobs: list[Job], judged: Judgement, judge: ZeroShotJudge) -> list[PromptRow]:
    """One row per job: what each image was judged and whether it counts as a success."""
    base, tuned = judged.base, judged.tuned
    rows = []
    for i, (item, seed) in enumerate(jobs):
        rows.append(PromptRow(group=item.group, kind=item.kind, concept=item.concept, **edit_fields(suite, item),
                              prompt=item.prompt, seed=seed, case_number=item.case_number(seed),
                              base_label=base.labels[i], tuned_label=tuned.labels[i],
                              success=row_success(suite, item, base.labels[i], tuned.labels[i],
                                                  probabilities(tuned, i, suite.labels)),
                              scores=label_scores(tuned.probabilities[i], suite.labels)))
        if judged.further:
            rows[-1].labels = {
                name: {"base": b.labels[i], "tuned": t.labels[i],
                       "success": row_success(suite, item, b.labels[i], t.labels[i],
                                              probabilities(t, i, other_labels(suite, t)))}
                for name, (b, t) in judged.further.items()}
    control = _controls(jobs)
    if control:
        text = judge.text_features([jobs[i][0].prompt for i in control])
        tuned_clip = (100 * (tuned.features[control] * text).sum(-1)).clamp(min=0).tolist()
        base_clip = (100 * (base.features[control] * text).sum(-1)).clamp(min=0).tolist()
        for i, t, b in zip(control, tuned_clip, base_clip, strict=True):
            # two decimals: the image and text features carry float noise from batch composition and thread
            # count in the 4th decimal of a 0-100 score, and one- and multi-process runs must write equal rows
            rows[i].clip, rows[i].clip_base = round(t, 2), round(b, 2)
    return rows


def probabilities(assessment: Assessment, i: int, labels: list[str]) -> dict[str, float]:
    """Image ``i``'s probability of each label at full precision (a row's ``scores`` keep four decimals, where
    a composition's two labels can tie)."""
    return dict(zip(labels, assessment.probabilities[i].tolist(), strict=True))


def other_labels(suite: Suite, assessment: Assessment) -> list[str]:
    """A further judge's label columns: the suite's, and a classifier's own "other" after them."""
    extra = assessment.probabilities.shape[1] - len(suite.labels)
    return suite.labels + [judge_module.OTHER] * extra


def edits_apply(item: PromptItem) -> bool:
    """Whether a prompt's concept is scored by its edit (controls and neighbours never are)."""
    return item.group not in ("control", "specificity")


def edit_fields(suite: Suite, item: PromptItem) -> dict:
    """A row's ``target``, ``erased`` and ``anchor``: what shows its concept's edit, when it has one."""
    edit = suite.edits.of(item.concept)
    if edit is None or not edits_apply(item):
        return {}
    target = edit.target(item.concept)
    anchor = getattr(edit, "anchor_of", lambda c: None)(item.concept)
    return {"target": target, "erased": True if target is None else None, "anchor": anchor}


def row_success(suite: Suite, item: PromptItem, base: str, tuned: str, scores: dict[str, float]) -> bool:
    """Whether a row counts as a success, by any judge: a composition when the judge prefers the edit's
    target over the named concept, a prompt naming an edited concept when it shows the edit (its edit's
    rule), a custom prompt of another concept when judged as itself, anything else when the tuned label
    is the base's."""
    edit = suite.edits.of(item.concept)
    if edit is not None and edits_apply(item):
        if item.kind == "compositions":
            return bool(edit.prefers(item.concept, scores))
        return edit.succeeds(item.concept, tuned)
    if item.group == "custom":
        return tuned == item.concept
    return tuned == base


def score(cfg: Config, suite: Suite, jobs: list[Job], records: list[dict], judged: Judgement) -> dict:
    """Every metric of the rows (``scoring.score_rows``), the summaries made of several row sets
    (``summaries.score``: MACE's H for an erasure) and the feature distances of the controls."""
    reps, seed = cfg.eval.bootstrap, cfg.seed
    out = {**scoring.score_rows(records, suite.edits, reps, seed), **summaries.score(records, suite.edits, reps, seed)}
    if judged.distance:
        d_tuned, d_base, what = judged.distance
        prompts = [jobs[i][0].prompt for i in _controls(jobs)]
        out["kid_vs_base"] = M.kid_vs_base(d_tuned, d_base, seed, what, prompts)
        out["fid_vs_base"] = M.fid_vs_base(d_tuned, d_base, seed, max(50, reps // 10), what, prompts)
    return {name: out[name] for name in catalog.ordered(out)}


def count_flagged(cfg: Config, target: Target, samples: Samples, rows: list[PromptRow],
                  device: torch.device) -> tuple[str, dict]:
    """``eval.safety_checker=count``: run the base's NSFW checker on every image beside the scoring; flags
    each row. Returns the provenance line and the ``safety_flagged/base`` and ``/tuned`` metrics."""
    if cfg.eval.safety_checker == "off":
        return "off: not run; every image scored as drawn", {}
    checker = SafetyChecker.load(base_spec(target.base, cfg), device)
    if checker is None:
        return "none: the base pipeline has no safety checker", {}
    base_flags = checker.flagged(samples.base)
    tuned_flags = base_flags if target.tuned_is_base else checker.flagged(samples.tuned)
    flags = {"base": base_flags, "tuned": tuned_flags}
    metrics = {f"safety_flagged/{which}": M.Proportion(
        f"{which} images Stable Diffusion's safety checker flags as NSFW (scored as drawn, not blackened)",
        higher_is_better=False, outcomes=list(flagged)).compute() for which, flagged in flags.items()}
    for row, b, t in zip(rows, flags["base"], flags["tuned"], strict=True):
        row.safety_flagged = {"base": b, "tuned": t}
    return (f"count: {checker.source} run beside sampling; flagged images counted (safety_flagged/*), "
            "never blackened"), metrics


# --- step 4: writing ----------------------------------------------------------------------------------


def keep_samples(rows: list[PromptRow], samples: Samples, keep: int, out_dir: Path) -> None:
    """The images of the first ``keep`` seeds of every prompt go to ``samples/``, named in their rows.

    First in the item's own order: a prompt file's seeds need not start at 0."""
    for i, row in enumerate(rows):
        if samples.jobs[i][0].seeds.index(row.seed) < keep:
            name = f"seed{row.seed}"
            row.images = {which: keep_image(out_dir, row.group, row.prompt, f"{name}-{which}", images[i])
                          for which, images in (("base", samples.base), ("tuned", samples.tuned))}


def results_document(cfg: Config, target: Target, suite: Suite, judge: ZeroShotJudge, samples: Samples,
                     rows: list[PromptRow], records: list[dict], metrics: dict, safety: str,
                     inception: InceptionFeatures | None, device: torch.device,
                     others: dict[str, Judge] | None = None) -> dict:
    """results.json (``schema.SCHEMA_VERSION``); ``timing.total_s`` is left to the caller. ``provenance.judges``
    names the further judges, when there are any."""
    import diffusers

    single = [row for row in rows if row.group in SINGLE_CONCEPT]
    labels, trajectory = suite.labels, samples.trajectory
    robust = samples.forms or trajectory or any(it.group in probes.PROBE_GROUPS for it in samples.items)
    seeds = sorted({len(it.seeds) for it in samples.items})
    return {
        "schema_version": schema.SCHEMA_VERSION,
        "run": target.name,
        "suite": suite.name,
        "swap_pairs": [list(pair) for pair in suite.swap_pairs],
        "edits": suite.edits.to_config(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "metrics": metrics,
        "confusion": M.confusion([(row.concept, row.tuned_label) for row in single], labels),
        "confusion_base": M.confusion([(row.concept, row.base_label) for row in single], labels),
        "per_prompt": records,
        **({"robust": {**probes.details(records, labels), "forms": samples.forms,
                       **({"trajectory": trajectory.summary()} if trajectory else {})}} if robust else {}),
        "sampler": sampler_settings(cfg),
        "features": inception.name if inception is not None else f"judge image embeddings ({judge.name})",
        "labels": labels,
        "timing": samples.timing,
        "provenance": {
            "swapbench": __version__, "git": _git_hash(), "torch": torch.__version__,
            "diffusers": diffusers.__version__, "device": str(device),
            "processes": PartialState().num_processes, "judge": judge.name,
            "judge_templates": judge.templates, "base_model": target.base, "family": family_of(target.base).name,
            "base_weights_sha256": samples.base_hash, "tuned_model": target.tuned, "safety_checker": safety,
            "seeds": {"per_prompt": seeds, "bootstrap_seed": cfg.seed}, "config_sha256": cfg.sha256(),
            **({"judges": {name: other.provenance() for name, other in others.items()}} if others else {}),
            **({"weights": target.weights} if target.weights else {}),
        },
    }


def _git_hash() -> str | None:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
