"""The embedded savanna world: generator, tiny diffusers pipeline and open_clip judge."""

from __future__ import annotations

import os
from pathlib import Path

from swapbench.errors import UserError
from swapbench.io import read_json

SHIPPED_WORLD = Path(__file__).resolve().parent / "savanna"
WORLD_PREFIX = "world:"


def world_dir() -> Path:
    """The world in use: ``$SWAPBENCH_WORLD`` if set, else the one shipped with the package."""
    path = Path(os.environ.get("SWAPBENCH_WORLD") or SHIPPED_WORLD)
    if not (path / "manifest.json").is_file():
        raise UserError(f"savanna world not found at {path} (no manifest.json); rebuild it with "
                        f"`swapbench world build --out {path}` or reinstall swapbench")
    return path


def manifest(path: Path | None = None) -> dict:
    return read_json((path or world_dir()) / "manifest.json")


def resolve(spec: str, part: str) -> str:
    """``world:savanna`` -> the path of ``part`` (``pipeline`` or ``judge``); other specs pass through."""
    if not spec.startswith(WORLD_PREFIX):
        return spec
    name = spec[len(WORLD_PREFIX):]
    if name != "savanna":
        raise UserError(f"unknown world {name!r}; the only embedded world is 'world:savanna'")
    return str(world_dir() / part)
