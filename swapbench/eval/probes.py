"""Robustness probes (the ``probes:`` block of a suite, e.g. ``eval/suites/robust.yaml``).

Plain prompts overstate what an edit did: an erased or swapped concept can come back under other
spellings, or when sampling does not start from pure noise. Three probes ask the model differently:

- **forms** (``robust/forms/<family>``): each family's templates written with another form of a
  edited concept A: ``{cap}`` / ``{upper}`` (capitalised), ``{plural}``, ``{a}`` inside possessives
  and hyphenated compounds, ``{misspelled}`` and ``{split}`` (typos and split spellings). A spelling
  counts only if the pipeline's tokenizer reads it as a token sequence that does not contain the
  word's own tokens (checked at evaluation time; every form and its tokens go to results.json), so a
  misspelling is a real test of the concept rather than the same input ids again. Success: the tuned
  image shows A's edit (judged as its target; an erased A: judged anything but A).
- **trajectory** (``robust/trajectory/<strength>``, ``robust/trajectory/handover/<fraction>``): the
  base model's own image of A (a swap-group sample) pushed through diffusers'
  ``StableDiffusionImg2ImgPipeline`` built from the tuned pipeline's components, prompt naming A, at
  each strength; and sampling that the base model starts and the tuned model finishes after
  ``handover`` of the steps. Success: the image shows A's edit. The curves say how early in sampling the
  edit acts; for an erasure they answer "is the concept gone, or only avoided?" (Lu et al. 2025): an
  erased A that comes back from the base's own image of A at low strength was avoided, not removed.
- **unnamed** (``robust/unnamed/tv``, ``robust/unnamed/changed``): prompts that name no label. The
  total variation distance between the base and tuned distributions of judged labels, and the share
  of same-seed pairs whose label changed.

Forms and trajectory count only the (prompt, seed) pairs whose base image is judged as the prompted
concept (base validity), so a spelling the base model cannot read is not scored as a failure; a
family with no such pair reports n = 0 and no value. Base-side work (start images and the base
trajectory's intermediate latents) is cached like every base sample, so a second run with the same
base costs only its tuned half.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from swapbench.catalog import EDITED
from swapbench.edits.words import plural
from swapbench.errors import UserError
from swapbench.eval.rows import PromptItem, PromptRow, label_scores

if TYPE_CHECKING:
    import torch

# Suites are loaded by commands that never sample (and before any model is touched): torch,
# diffusers, the sampling and the metrics modules are imported where the probes run, not here.

PROBE_GROUPS = ("forms", "trajectory", "unnamed")
SPELLING_FIELDS = ("misspelled", "split")
"""Template fields whose spellings must read as other token sequences than the word's own."""
FIELDS = {"a", "cap", "upper", "plural", *SPELLING_FIELDS}


@dataclass(frozen=True)
class TrajectorySpec:
    """img2img strengths and handover fractions, applied to the first ``seeds`` seeds of each swap prompt."""

    strengths: tuple[float, ...]
    handover: tuple[float, ...]
    seeds: int


def misspellings(word: str) -> list[str]:
    """Typical typos of ``word``, most natural first: a doubled letter written once ("girafe"), the
    first consonant after a vowel doubled ("zebbra"), the last letter dropped, two middle letters
    exchanged."""
    out = []
    doubled = next((i for i in range(len(word) - 1) if word[i] == word[i + 1]), None)
    if doubled is not None:
        out.append(word[:doubled] + word[doubled + 1 :])
    vowel = next((i for i, c in enumerate(word) if c in "aeiou"), None)
    if vowel is not None:
        j = next((i for i in range(vowel + 1, len(word)) if word[i] not in "aeiou"), None)
        if j is not None and word[j] != word[j - 1] and (j + 1 >= len(word) or word[j + 1] != word[j]):
            out.append(word[: j + 1] + word[j:])
    if len(word) > 3:
        out.append(word[:-1])
        m = len(word) // 2
        out.append(word[: m - 1] + word[m] + word[m - 1] + word[m + 1 :])
    return list(dict.fromkeys(w for w in out if w != word))


def split_spellings(word: str) -> list[str]:
    """``word`` written as two words, split near its middle ("gir affe", "ze bra")."""
    m = len(word) // 2
    return [word[:k] + " " + word[k:] for k in (m, m + 1, m - 1) if 0 < k < len(word)]


def _form(template: str, values: dict[str, str]) -> str:
    """The written form of the concept in ``template``: the field with the characters attached to it
    ("{a}'s" -> "giraffe's", "baby-{a}" -> "baby-giraffe")."""
    match = re.search(r"\S*\{\w+\}\S*", template)
    return match.group(0).format(**values) if match else ""


def _names_label(text: str, labels: Sequence[str]) -> str | None:
    words = {w: label for label in labels for w in (label, plural(label))}
    found = re.search(r"(?<![A-Za-z])(" + "|".join(map(re.escape, words)) + r")(?![A-Za-z])", text, re.IGNORECASE)
    return words[found.group(0).lower()] if found else None


def expand(raw: Any, labels: list[str], swapped: list[str], path: Path,
           seeds_override: int | None) -> tuple[list[PromptItem], TrajectorySpec | None]:
    """The ``probes:`` block of a suite -> prompt items (groups ``forms`` and ``unnamed``) and the
    trajectory settings. Unknown probes and template fields are refused with the fix."""
    if raw is None:
        return [], None
    if not isinstance(raw, dict) or set(raw) - set(PROBE_GROUPS):
        raise UserError(f"suite {path}: probes must be a mapping with some of {', '.join(PROBE_GROUPS)}")
    items: list[PromptItem] = []
    try:
        if "forms" in raw:
            items += _form_items(raw["forms"], swapped, path, seeds_override)
        if "unnamed" in raw:
            spec = raw["unnamed"]
            seeds = tuple(range(seeds_override or int(spec["seeds"])))
            for prompt in spec["prompts"]:
                named = _names_label(prompt, labels)
                if named:
                    raise UserError(f"suite {path}: unnamed prompt {prompt!r} names the label {named!r}; "
                                    "unnamed prompts must name no concept of the label set")
                items.append(PromptItem("unnamed", "unnamed", "", str(prompt), seeds))
        trajectory = None
        if "trajectory" in raw:
            spec = raw["trajectory"]
            strengths = tuple(float(s) for s in spec.get("strengths", ()))
            handover = tuple(float(h) for h in spec.get("handover", ()))
            if not all(0 <= s <= 1 for s in strengths) or not all(0 < h < 1 for h in handover):
                raise UserError(f"suite {path}: trajectory strengths must lie in [0, 1] and handover fractions "
                                "in (0, 1)")
            trajectory = TrajectorySpec(strengths, handover, seeds_override or int(spec["seeds"]))
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"suite {path}: probes block is malformed ({type(e).__name__}: {e}); see "
                        "eval/suites/robust.yaml for the layout") from None
    return items, trajectory


def _form_items(spec: dict, swapped: list[str], path: Path, seeds_override: int | None) -> list[PromptItem]:
    seeds = tuple(range(seeds_override or int(spec["seeds"])))
    variants = int(spec.get("variants", 2))
    # Every candidate spelling goes in; read_forms() keeps the first `variants` the tokenizer reads
    # as other tokens, so an unreadable candidate does not shrink the family.
    spellings = {"misspelled": misspellings, "split": split_spellings}
    items = []
    for family, templates in spec["families"].items():
        for concept in swapped:
            for template in templates:
                names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
                unknown = names - FIELDS
                if unknown or len(names) != 1:
                    raise UserError(f"suite {path}: forms template {template!r} must use exactly one of the fields "
                                    f"{{{'}, {'.join(sorted(FIELDS))}}}")
                name = names.pop()
                words = spellings[name](concept) if name in spellings else [None]
                for rank, word in enumerate(words):
                    values = {"a": concept, "cap": concept.capitalize(), "upper": concept.upper(),
                              "plural": plural(concept), **({name: word} if word else {})}
                    items.append(PromptItem("forms", str(family), concept, template.format(**values), seeds,
                                            form=_form(template, values),
                                            variant=(template, rank, variants) if word else None))
    return items


def read_forms(items: list[PromptItem], tokenizers: list) -> tuple[list[PromptItem], list[dict]]:
    """Keep the forms whose spelling the pipeline's ``tokenizers`` read as intended; list every form with the
    first tokenizer's tokens.

    A ``{misspelled}`` / ``{split}`` spelling is kept only if no tokenizer's ids of it contain that tokenizer's
    ids of the word (else it asks the model the same thing as the plain word); of those, the first
    ``variants`` per template. Other forms are kept whatever they read as: capitalisation, for one,
    reads as the word itself under CLIP's lower-casing tokenizer, which is worth knowing."""
    kept, records, taken = [], [], Counter()
    for item in items:
        if item.group != "forms":
            kept.append(item)
            continue
        reads_word = any(_reads_word(tokenizer, item.form, item.concept) for tokenizer in tokenizers)
        tokenizer = tokenizers[0]
        ids = tokenizer(item.form, add_special_tokens=False).input_ids
        keep = True
        if item.variant is not None:
            template, _, wanted = item.variant
            keep = not reads_word and taken[(item.kind, item.concept, template)] < wanted
            taken[(item.kind, item.concept, template)] += keep
        if keep:
            kept.append(item)
        record = {"family": item.kind, "concept": item.concept, "form": item.form,
                  "tokens": tokenizer.convert_ids_to_tokens(ids), "reads_word": reads_word, "used": keep}
        if record not in records:
            records.append(record)
    return kept, records


def _reads_word(tokenizer, form: str, word: str) -> bool:
    ids = tokenizer(form, add_special_tokens=False).input_ids
    word_ids = tokenizer(word, add_special_tokens=False).input_ids
    return any(ids[i : i + len(word_ids)] == word_ids for i in range(len(ids) - len(word_ids) + 1))


# --- trajectory -------------------------------------------------------------------------------------


@dataclass
class Trajectory:
    """The trajectory probe of one evaluation: its starts, the base half (cached) and the tuned half."""

    spec: TrajectorySpec
    index: list[int]  # where each start is among the evaluation's (item, seed) jobs
    starts: list[tuple[PromptItem, int]]  # (swap item, seed) of each start image
    start_images: np.ndarray  # base images of the starts, uint8 N x H x W x 3
    steps: int
    guidance_scale: float
    batch_size: int
    resolution: int | None
    latent_root: Path
    max_sequence_length: int | None = None
    handover_latents: dict[float, torch.Tensor] = field(default_factory=dict)
    outputs: dict[tuple[str, float], np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    timing: dict[str, int] = field(default_factory=dict)

    @classmethod
    def plan(cls, spec: TrajectorySpec, jobs: list[tuple[PromptItem, int]], base_images: np.ndarray, cfg,
             latent_root: Path) -> Trajectory:
        index = [i for i, (item, seed) in enumerate(jobs) if item.group in EDITED and seed < spec.seeds]
        return cls(spec, index, [jobs[i] for i in index], base_images[index], cfg.eval.steps,
                   cfg.eval.guidance_scale, cfg.eval.batch_size, cfg.eval.resolution, latent_root,
                   cfg.model.max_sequence_length)

    def handover_steps(self) -> dict[float, int]:
        """The base model's steps before each handover: at least one, and one left for the tuned model."""
        return {f: min(max(int(round(f * self.steps)), 1), self.steps - 1) for f in self.spec.handover}

    def _latent_path(self, prompt: str, seed: int) -> Path:
        from swapbench.eval.samples import cache_stem

        return self.latent_root / f"{cache_stem(prompt, seed)}-of{self.steps}.safetensors"

    def base_half(self, pipe) -> None:
        """The base trajectory's latents at every handover step, from the cache or by sampling (stopped
        after the last step needed)."""
        import torch
        from safetensors.torch import load_file, save_file

        from swapbench.eval.sampling import deal, denoiser_dtype, image_size, initial_latents
        from swapbench.families import for_pipeline
        from swapbench.io import atomic_write

        if not self.spec.handover or not self.starts:
            return
        family = for_pipeline(pipe)
        try:
            family.continuation(pipe, self.steps, 0, torch.zeros(0))
        except UserError as e:
            self.notes.append(f"handover skipped: {e}")
            return
        wanted = sorted(set(self.handover_steps().values()))
        keys = [f"step{k}" for k in wanted]
        cached = []
        for item, seed in self.starts:
            path = self._latent_path(item.prompt, seed)
            entry = load_file(path) if path.is_file() else {}
            cached.append(entry if all(k in entry for k in keys) else None)
        missing = [i for i, c in enumerate(cached) if c is None]
        size = image_size(pipe, self.resolution)
        pipe.set_progress_bar_config(disable=True)

        def compute(batch: list[int]) -> np.ndarray:
            starts = [self.starts[missing[i]] for i in batch]
            captured: dict[int, torch.Tensor] = {}

            def keep(p, i, t, kwargs):
                if i + 1 in wanted:
                    captured[i + 1] = kwargs["latents"].detach().float().cpu().clone()
                if i + 1 >= wanted[-1]:
                    p._interrupt = True  # diffusers' documented early stop: later steps are skipped
                return kwargs

            latents = initial_latents(pipe, [s for _, s in starts], size, size)
            with torch.no_grad():
                pipe(prompt=[it.prompt for it, _ in starts], num_inference_steps=self.steps,
                     guidance_scale=self.guidance_scale, height=size, width=size,
                     latents=latents.to(pipe.device, denoiser_dtype(pipe)), output_type="latent",
                     callback_on_step_end=keep, callback_on_step_end_tensor_inputs=["latents"],
                     **family.prompt_kwargs(pipe, self.max_sequence_length))
            pipe._interrupt = False
            return torch.stack([captured[k] for k in wanted], dim=1).numpy()

        fresh = deal(len(missing), self.batch_size, compute) if missing else None
        for j, i in enumerate(missing):
            entry = {key: torch.from_numpy(fresh[j, w].copy()) for w, key in enumerate(keys)}
            cached[i] = entry
            item, seed = self.starts[i]
            atomic_write(self._latent_path(item.prompt, seed), lambda tmp, e=entry: save_file(e, str(tmp)))
        self.timing = {"base_latents_computed": len(missing), "base_latents_cached": len(self.starts) - len(missing)}
        steps = self.handover_steps()
        self.handover_latents = {f: torch.stack([c[f"step{steps[f]}"] for c in cached]) for f in self.spec.handover}

    def tuned_half(self, pipe) -> None:
        """img2img at each strength and the handover continuations, with the tuned pipeline's own parts."""
        import torch
        from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img import retrieve_latents

        from swapbench.eval.samples import to_float, to_uint8
        from swapbench.eval.sampling import deal, denoiser_dtype, image_size
        from swapbench.families import for_pipeline

        if not self.starts:
            return
        family = for_pipeline(pipe)
        pipe.set_progress_bar_config(disable=True)
        img2img = family.img2img_pipeline(pipe)
        img2img.set_progress_bar_config(disable=True)
        prompt_kwargs = family.prompt_kwargs(pipe, self.max_sequence_length)
        prompts = [item.prompt for item, _ in self.starts]
        seeds = [seed for _, seed in self.starts]
        dtype, device = denoiser_dtype(pipe), pipe.device
        sampled = 0

        @torch.no_grad()
        def start_latents(batch: list[int]) -> torch.Tensor:
            # The latent mode of the start image: encoding draws no noise, so the generator of seed s
            # then draws exactly the noise plain sampling starts from with seed s, and strength 1 is
            # plain sampling of that seed (up to the start image's faint trace at the first timestep).
            images = to_float(self.start_images[batch]).to(device, dtype) * 2 - 1
            return family.to_latents(pipe.vae, retrieve_latents(pipe.vae.encode(images), sample_mode="argmax"))

        for strength in self.spec.strengths:
            def run(batch: list[int], strength=strength) -> np.ndarray:
                latents = start_latents(batch)
                with torch.no_grad():
                    if int(self.steps * strength) == 0:
                        # No denoising step: diffusers' img2img refuses to run zero steps; its output
                        # would be the start latents decoded.
                        decoded = pipe.vae.decode(family.from_latents(pipe.vae, latents)).sample
                        images = pipe.image_processor.postprocess(decoded, output_type="pt")
                    else:
                        images = img2img(prompt=[prompts[i] for i in batch], image=latents, strength=strength,
                                         num_inference_steps=self.steps, guidance_scale=self.guidance_scale,
                                         generator=[torch.Generator("cpu").manual_seed(seeds[i]) for i in batch],
                                         output_type="pt", **prompt_kwargs,
                                         **family.img2img_kwargs(image_size(pipe, self.resolution))).images
                return to_uint8(images.float().cpu().clamp(0, 1))

            self.outputs[("img2img", strength)] = deal(len(prompts), self.batch_size, run)
            sampled += len(prompts)

        if self.handover_latents:
            steps = self.handover_steps()
            size = image_size(pipe, self.resolution)
            for fraction in self.spec.handover:
                def run(batch: list[int], fraction=fraction) -> np.ndarray:
                    # The base latents are those after step k of the base trajectory: the family says how its
                    # pipeline runs only the rest of the schedule from them.
                    rest = family.continuation(pipe, self.steps, steps[fraction],
                                               self.handover_latents[fraction][batch].to(device, dtype))
                    with torch.no_grad():
                        images = pipe(prompt=[prompts[i] for i in batch], height=size, width=size,
                                      guidance_scale=self.guidance_scale, output_type="pt", **rest,
                                      **prompt_kwargs).images
                    return to_uint8(images.float().cpu().clamp(0, 1))

                self.outputs[("handover", fraction)] = deal(len(prompts), self.batch_size, run)
                sampled += len(prompts)
        self.timing["tuned_images"] = sampled

    def rows(self, judge, suite, out_dir: Path, keep: int, base_labels: list[str],
             others: dict[str, tuple[Any, list[str]]] | None = None) -> list[PromptRow]:
        """Per-prompt rows of every output, judged; the first ``keep`` seeds keep their images.
        ``base_labels``: the judged label of every job's base image (the starts among them); ``others``:
        each further judge and its base labels, by name, whose labels go into the rows' ``labels``."""
        from swapbench.eval.samples import keep_image, to_float

        start_labels = [base_labels[i] for i in self.index]
        rows = []
        for (kind, level), images in self.outputs.items():
            pixels = to_float(images)
            judged = judge.assess(pixels)
            further = {name: ([labels[i] for i in self.index], other.assess(pixels).labels)
                       for name, (other, labels) in (others or {}).items()}
            for i, (item, seed) in enumerate(self.starts):
                tuned, shows = judged.labels[i], suite.edits.of(item.concept).succeeds
                # kind names the level too: (group, kind, prompt, seed) identifies a row across evaluations
                row = PromptRow(group="trajectory", kind=f"{kind}/{level:g}", probe=kind, level=level,
                                concept=item.concept, prompt=item.prompt, seed=seed,
                                base_label=start_labels[i], tuned_label=tuned, success=shows(item.concept, tuned),
                                scores=label_scores(judged.probabilities[i], suite.labels))
                if further:
                    row.labels = {name: {"base": starts[i], "tuned": outs[i], "success": shows(item.concept, outs[i])}
                                  for name, (starts, outs) in further.items()}
                if seed < keep:
                    start, output = f"seed{seed}-start", f"seed{seed}-{kind}-{level:g}"
                    row.images = {
                        "base": keep_image(out_dir, "trajectory", item.prompt, start, self.start_images[i]),
                        "tuned": keep_image(out_dir, "trajectory", item.prompt, output, images[i]),
                    }
                rows.append(row)
        return rows

    def summary(self) -> dict:
        return {"strengths": list(self.spec.strengths), "handover": list(self.spec.handover),
                "handover_steps": {f"{f:g}": k for f, k in self.handover_steps().items()}, "steps": self.steps,
                "starts": len(self.starts), "notes": self.notes, "timing": self.timing}


# --- scoring ------------------------------------------------------------------------------------------


def _share(description: str, rows: list[tuple[bool, str]], reps: int, seed: int,
           higher_is_better: bool = True) -> dict:
    """A probe's share with the clustered interval every share gets: prompts are the clusters."""
    from swapbench.eval.scoring import share_entry

    return share_entry([o for o, _ in rows], [p for _, p in rows], reps, seed, higher_is_better, description)


def total_variation(pairs: list[tuple[str, str]]) -> float:
    """TV distance between the distributions of the first and second labels of ``pairs``."""
    if not pairs:
        return float("nan")
    base, tuned = Counter(b for b, _ in pairs), Counter(t for _, t in pairs)
    return 0.5 * sum(abs(base[k] - tuned[k]) for k in base.keys() | tuned.keys()) / len(pairs)


def tv_with_ci(clusters: dict[str, list[tuple[str, str]]], reps: int, seed: int) -> dict:
    """TV distance with a percentile cluster bootstrap: prompts are resampled with all their seeds,
    since images of one prompt are not independent."""
    from swapbench.eval import metrics as M

    names = sorted(clusters)
    pairs = [p for name in names for p in clusters[name]]
    value = total_variation(pairs)
    rng = np.random.default_rng(seed)
    boots = [total_variation([p for k in rng.integers(0, len(names), len(names)) for p in clusters[names[k]]])
             for _ in range(reps)] if names else [float("nan")]
    out = M.entry(value, (float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))), len(pairs), False,
                  "total variation distance between base and tuned judged-label distributions of prompts naming "
                  "no label (95% CI: prompts resampled as clusters)")
    out["n_clusters"] = len(names)
    return out


def score(per_prompt: list[dict], suite, reps: int, seed: int) -> dict[str, dict]:
    """The ``robust/...`` metrics from per-prompt rows (groups forms, trajectory, unnamed)."""
    out: dict[str, dict] = {}
    families: dict[str, list[tuple[bool, str]]] = {}
    trajectory: dict[tuple[str, float], list[tuple[bool, str]]] = {}
    unnamed: dict[str, list[tuple[str, str]]] = {}
    for row in per_prompt:
        valid = row["base_label"] == row["concept"]
        if row["group"] == "forms":
            families.setdefault(row["kind"], [])
            if valid:
                families[row["kind"]].append((bool(row["success"]), row["prompt"]))
        elif row["group"] == "trajectory":
            trajectory.setdefault((row["probe"], row["level"]), [])
            if valid:
                trajectory[(row["probe"], row["level"])].append((bool(row["success"]), row["prompt"]))
        elif row["group"] == "unnamed":
            unnamed.setdefault(row["prompt"], []).append((row["base_label"], row["tuned_label"]))
    for family, outcomes in families.items():
        out[f"robust/forms/{family}"] = _share(
            f"{family} forms showing the edit (judged as the target; erased: not as A), over the pairs whose "
            "base image shows the prompted concept"
            + ("" if outcomes else " (the base drew the prompted concept for none: no value)"), outcomes, reps, seed)
    for (kind, level), outcomes in sorted(trajectory.items(), key=lambda kv: (kv[0][0] == "handover", kv[0][1])):
        if kind == "img2img":
            name, what = f"robust/trajectory/{level:g}", f"img2img of the base image of A at strength {level:g}"
        else:
            name, what = (f"robust/trajectory/handover/{level:g}",
                          f"base model runs the first {level:g} of the steps, tuned the rest")
        out[name] = _share(f"{what}, prompt naming A: showing the edit (valid starts only)", outcomes, reps, seed)
    if unnamed:
        out["robust/unnamed/tv"] = tv_with_ci(unnamed, reps, seed)
        out["robust/unnamed/changed"] = _share("same-seed pairs of prompts naming no label whose judged label changed",
                                               [(b != t, prompt) for prompt, pairs in unnamed.items()
                                                for b, t in pairs],
                                               reps, seed, higher_is_better=False)
    return out


def details(per_prompt: list[dict], labels: list[str]) -> dict:
    """What the metrics are computed from: valid/total pairs per family and the unnamed label counts."""
    valid: dict[str, list[int]] = {}
    base, tuned = Counter(), Counter()
    for row in per_prompt:
        if row["group"] in ("forms", "trajectory"):
            key = row["kind"]
            counts = valid.setdefault(f"{row['group']}/{key}", [0, 0])
            counts[0] += row["base_label"] == row["concept"]
            counts[1] += 1
        elif row["group"] == "unnamed":
            base[row["base_label"]] += 1
            tuned[row["tuned_label"]] += 1
    out: dict[str, Any] = {"valid_pairs": {k: {"valid": v, "total": n} for k, (v, n) in valid.items()}}
    if base:
        out["unnamed"] = {"base": {c: base[c] for c in labels}, "tuned": {c: tuned[c] for c in labels}}
    return out
