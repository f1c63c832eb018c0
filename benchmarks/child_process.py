"""Benchmark steps in fresh processes (light to import: a parent that only spawns children loads no model code)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def run_child(args: list[str], env: dict[str, str]) -> dict:
    """Run ``python SCRIPT args`` in a fresh process (clean peak memory, its own accelerate state) and
    return the JSON object it prints last; its stderr tail explains a failure."""
    proc = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                          cwd=Path(__file__).parent)
    if proc.returncode:
        sys.exit(f"{' '.join(args[:3])} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
