"""The embedded savanna world: generator, tiny diffusers pipeline and open_clip judge.

Where the world lives and how ``world:savanna`` specs resolve is decided in :mod:`swapbench.loading`
(below train and eval); these names stay importable from here.
"""

from __future__ import annotations

from swapbench.loading import SHIPPED_WORLD, WORLD_PREFIX, manifest, world_dir
from swapbench.loading import resolve_world as resolve

__all__ = ["SHIPPED_WORLD", "WORLD_PREFIX", "manifest", "resolve", "world_dir"]
