"""The savanna world's dataset: deterministic cartoon scenes with COCO-style captions.

Every image is a pure function of ``(seed, split, index)``, so a dataset is reproducible byte for
byte and can be generated in parallel. ``write_coco`` lays it out exactly like COCO 2017 captions
(``annotations/captions_<split>2017.json`` + ``<split>2017/*.png``); each image entry also carries
a ``concepts`` mapping (species -> count), which plain COCO readers ignore.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from swapbench.world.draw import BACKGROUNDS, HEIGHTS, Placement, Pose, render

GENERATOR_VERSION = 3
IMAGE_SIZE = 32
SWAPPED = ("giraffe", "zebra")
CONTROLS = ("elephant", "horse", "lion", "cow")
NEIGHBOURS = ("donkey", "deer", "okapi")
CONCEPTS = SWAPPED + CONTROLS + NEIGHBOURS
PLURALS = {c: c + "s" for c in CONCEPTS} | {"deer": "deer"}
COUNT_WORDS = {2: ["two", "two", "a pair of", "a couple of"], 3: ["three", "three", "a group of", "a few"]}

# Scene mix: mostly one species (the base model must learn each name), some with two species
# (giraffe+zebra among them, so the both-words filter has work), some with none.
P_PAIR, P_EMPTY = 0.12, 0.06


@dataclass
class Scene:
    placements: list[Placement]
    background: str

    @property
    def concepts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for p in self.placements:
            counts[p.concept] = counts.get(p.concept, 0) + 1
        return counts


def image_rng(seed: int, split: str, index: int) -> random.Random:
    return random.Random(f"swapbench-world-v{GENERATOR_VERSION}:{seed}:{split}:{index}")


def sample_scene(rng: random.Random, only: str | None = None) -> Scene:
    """A random scene; ``only`` forces a single animal of that species (held-out checks)."""
    kind = rng.choice(BACKGROUNDS)
    r = rng.random()
    if only:
        species = [only]
    elif r < P_EMPTY:
        species: list[str] = []
    elif r < P_EMPTY + P_PAIR:
        first = rng.choice(SWAPPED) if rng.random() < 0.4 else rng.choice(CONCEPTS)
        second = rng.choice([c for c in CONCEPTS if c != first])
        if first in SWAPPED and rng.random() < 0.5:
            second = "zebra" if first == "giraffe" else "giraffe"
        species = [first, second]
    else:
        species = [rng.choice(CONCEPTS)] * rng.choices([1, 2, 3], weights=[0.6, 0.25, 0.15])[0]
    horizon = 0.88 if kind == "sky" else 0.5
    placements = []
    n = len(species)
    for i, concept in enumerate(species):
        ground = rng.uniform(min(0.95, horizon + 0.06), 0.97)
        max_scale = (ground - 0.03) / HEIGHTS[concept]
        scale = rng.uniform(0.7, 1.0) * max_scale if n == 1 else rng.uniform(0.45, 0.65) * max_scale
        slot = (i + 0.5) / n
        x = slot + rng.uniform(-0.12, 0.12) / n if n > 1 else rng.uniform(0.3, 0.7)
        pose = Pose(stride=rng.choice([0.0, rng.uniform(0.15, 0.35)]), head_down=rng.random() < 0.25)
        placements.append(Placement(concept, x, ground, scale, rng.random() < 0.5, pose))
    return Scene(placements, kind)


PLACES = {
    "grass": ["in a grassy field", "on the grass", "in a green field", "in the savanna", "on a grassy plain"],
    "sand": ["in the sand", "on a sandy plain", "in the desert", "on the dry ground", "in a dusty field"],
    "sky": ["under a blue sky", "against a cloudy sky", "on a hill under the sky", "under a bright sky"],
    "trees": ["near a tree", "next to some trees", "by an acacia tree", "in a field with trees", "under the trees"],
}
EMPTY_CAPTIONS = {
    "grass": ["An empty grassy field.", "A green field with no animals.", "Grass stretching to the horizon."],
    "sand": ["A sandy plain with nothing on it.", "An empty desert under the sky.", "Dry sand and a blue sky."],
    "sky": ["A wide blue sky over a low hill.", "Clouds in a blue sky above the plain.",
            "An empty sky over the savanna."],
    "trees": ["A few trees on an empty plain.", "Acacia trees in a field.", "A lone tree in the savanna."],
}


def _subject(concept: str, count: int, rng: random.Random) -> str:
    if count == 1:
        return ("an " if concept[0] in "aeiou" else "a ") + concept
    return f"{rng.choice(COUNT_WORDS[count])} {PLURALS[concept]}"


def _finish(text: str, rng: random.Random) -> str:
    text = text[0].upper() + text[1:] if rng.random() < 0.9 else text[0].lower() + text[1:]
    return text.rstrip(".") + ("." if rng.random() < 0.7 else "")


def captions(scene: Scene, rng: random.Random, k: int = 5) -> list[str]:
    """``k`` distinct COCO-style captions naming every species in the scene."""
    place = lambda: rng.choice(PLACES[scene.background])  # noqa: E731
    counts = scene.concepts
    if not counts:
        pool = EMPTY_CAPTIONS[scene.background] + [f"A quiet landscape {place()}", f"Nothing but the savanna {place()}"]
    elif len(counts) == 1:
        (concept, n), = counts.items()
        pose = scene.placements[0].pose.name
        subj = _subject(concept, n, rng)
        be = "is" if n == 1 else "are"
        pool = [
            f"{subj} {pose} {place()}",
            f"{subj} {place()}",
            f"a photo of {subj} in the wild",
            f"there {be} {subj} {place()}",
            f"{subj} on a sunny day",
            f"{subj} {be} {pose} {place()}",
            f"an image of {subj} {place()}",
            f"{subj} out in the open",
        ]
        if n == 1:
            size = "large" if scene.placements[0].scale * HEIGHTS[concept] > 0.5 else "small"
            pool += [f"a {size} {concept} {place()}", f"a lone {concept} {pose} {place()}", f"close up of {subj}"]
        else:
            pool += [f"{subj} together {place()}", f"{subj} standing side by side",
                     f"a herd of {PLURALS[concept]} {place()}"]
        if pose == "grazing":
            pool += [f"{subj} eating grass {place()}", f"{subj} with {'its head' if n == 1 else 'their heads'} down"]
    else:
        (a, na), (b, nb) = counts.items()
        sa, sb = _subject(a, na, rng), _subject(b, nb, rng)
        pool = [
            f"{sa} and {sb} {place()}",
            f"{sa} standing next to {sb}",
            f"{sa} and {sb} together {place()}",
            f"{sb} near {sa} {place()}",
            f"a photo of {sa} and {sb}",
            f"{sa} with {sb} on a sunny day",
            f"{sb} and {sa} sharing the field",
        ]
    rng.shuffle(pool)
    out: list[str] = []
    for text in pool:
        caption = _finish(text, rng)
        if caption not in out:
            out.append(caption)
        if len(out) == k:
            break
    return out


@dataclass
class Example:
    image: np.ndarray  # HxWx3 uint8
    captions: list[str]
    concepts: dict[str, int]
    background: str


def make_example(seed: int, split: str, index: int, size: int = IMAGE_SIZE) -> Example:
    rng = image_rng(seed, split, index)
    scene = sample_scene(rng)
    image = render(scene.placements, scene.background, size, rng)
    return Example(np.asarray(image), captions(scene, rng), scene.concepts, scene.background)


def make_single(concept: str, seed: int, index: int, size: int = IMAGE_SIZE) -> np.ndarray:
    """One image of one animal of ``concept`` (held-out judge checks and build-time quality cards)."""
    rng = image_rng(seed, f"single-{concept}", index)
    scene = sample_scene(rng, only=concept)
    return np.asarray(render(scene.placements, scene.background, size, rng))


def _batch(args: tuple[int, str, int, int, int]) -> list[Example]:
    seed, split, start, stop, size = args
    return [make_example(seed, split, i, size) for i in range(start, stop)]


def generate(seed: int, split: str, n: int, size: int = IMAGE_SIZE, workers: int | None = None) -> Iterator[Example]:
    """Yield ``n`` examples in index order, drawn in parallel worker processes."""
    workers = workers or min(4, os.cpu_count() or 1)
    chunk = 500
    jobs = [(seed, split, s, min(n, s + chunk), size) for s in range(0, n, chunk)]
    if workers == 1 or n <= chunk:
        for job in jobs:
            yield from _batch(job)
        return
    with ProcessPoolExecutor(workers) as pool:
        for batch in pool.map(_batch, jobs):
            yield from batch


def generate_arrays(seed: int, split: str, n: int,
                    size: int = IMAGE_SIZE) -> tuple[np.ndarray, list[list[str]], list[dict[str, int]]]:
    images, caps, labels = [], [], []
    for ex in generate(seed, split, n, size):
        images.append(ex.image)
        caps.append(ex.captions)
        labels.append(ex.concepts)
    return np.stack(images), caps, labels


def write_coco(root: str | Path, seed: int, sizes: dict[str, int], size: int = IMAGE_SIZE,
               progress=None) -> dict[str, str]:
    """Write a COCO 2017 captions layout; returns {split: sha256 of its annotations file}."""
    from PIL import Image

    root = Path(root)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    hashes = {}
    for split, n in sizes.items():
        folder = root / f"{split}2017"
        folder.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for index, ex in enumerate(generate(seed, split, n, size)):
            image_id = index + 1
            name = f"{image_id:012d}.png"
            Image.fromarray(ex.image).save(folder / name, compress_level=6)
            images.append({"id": image_id, "file_name": name, "width": size, "height": size,
                           "concepts": ex.concepts, "background": ex.background})
            for caption in ex.captions:
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "caption": caption})
            if progress:
                progress(split, index + 1, n)
        payload = {
            "info": {"description": f"swapbench savanna world v{GENERATOR_VERSION}, seed {seed}",
                     "version": str(GENERATOR_VERSION)},
            "licenses": [],
            "images": images,
            "annotations": annotations,
        }
        text = json.dumps(payload, separators=(",", ":"))
        tmp = root / "annotations" / f".captions_{split}2017.json.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(root / "annotations" / f"captions_{split}2017.json")
        hashes[split] = hashlib.sha256(text.encode()).hexdigest()
    return hashes
