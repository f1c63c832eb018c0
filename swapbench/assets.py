"""Locate files shipped with swapbench (presets, suites, gate rules, report templates).

In a source checkout they sit at the top level (``train/``, ``eval/``, ``reports/``); in an
installed wheel they are copied to ``swapbench/_assets/``.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def asset_path(relative: str) -> Path:
    """Path of a shipped asset such as ``"train/presets/savanna.yaml"``."""
    for root in (_PACKAGE / "_assets", _PACKAGE.parent):
        candidate = root / relative
        if candidate.exists():
            return candidate
    return _PACKAGE.parent / relative


def asset_names(directory: str, suffix: str = ".yaml") -> list[str]:
    """Stem names of the shipped files in ``directory`` (e.g. preset names)."""
    folder = asset_path(directory)
    return sorted(p.name[: -len(suffix)] for p in folder.glob(f"*{suffix}")) if folder.is_dir() else []
