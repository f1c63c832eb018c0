"""Samples as arrays and files: the 8-bit images that are cached, judged and kept, and their names.

Images are quantised to 8-bit before judging, exactly as they are cached, so cached and fresh
samples score identically.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from swapbench.io import atomic_write
from swapbench.paths import cache_dir


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """N x 3 x H x W floats in [0, 1] -> N x H x W x 3 uint8."""
    return (images.permute(0, 2, 3, 1).numpy() * 255).round().clip(0, 255).astype(np.uint8)


def to_float(arrays: np.ndarray) -> torch.Tensor:
    """N x H x W x 3 uint8 -> N x 3 x H x W floats in [0, 1]."""
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 255


def cache_stem(prompt: str, seed: int) -> str:
    """The file name (without suffix) of a (prompt, seed) entry in a base cache."""
    return f"{hashlib.sha256(prompt.encode()).hexdigest()[:20]}-{seed}"


class SampleStore:
    """Base samples on disk: one PNG per (prompt, seed) under a folder keyed by weights + sampler."""

    def __init__(self, key: str):
        self.key = key
        self.root = cache_dir("base-samples", key)

    def path(self, prompt: str, seed: int) -> Path:
        return self.root / f"{cache_stem(prompt, seed)}.png"

    def get(self, prompt: str, seed: int) -> np.ndarray | None:
        p = self.path(prompt, seed)
        return np.asarray(Image.open(p).convert("RGB")) if p.is_file() else None

    def put(self, prompt: str, seed: int, image: np.ndarray) -> None:
        # A unique temporary name per write: evaluations that share a base (parallel sweep points)
        # write the same entries at the same time, and a shared name lets one move the other's half-file.
        atomic_write(self.path(prompt, seed), lambda tmp: Image.fromarray(image).save(tmp, format="PNG"))


def keep_image(out_dir: Path, group: str, prompt: str, name: str, image: np.ndarray) -> str:
    """Save a kept sample as ``samples/<group>/<prompt slug>/<name>.png``; returns the path relative to
    ``out_dir``."""
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:60]
    path = out_dir / "samples" / group / slug / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return str(path.relative_to(out_dir))
