"""A grid of ordinary runs: ``--set train.lr=1e-4,3e-4 --set train.max_steps=200,400`` -> 4 run dirs.

Every point is trained and evaluated by the ``swapbench train`` / ``swapbench eval`` commands in a
child process (a crash or out-of-memory in one point does not take the sweep down, and each
point's memory is returned), so a point is exactly what a user would get by hand, and ``--list``
prints those same commands for a cluster. Finished points are skipped, interrupted ones resumed.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from swapbench.config import flatten, load_config
from swapbench.errors import UserError
from swapbench.io import read_json
from swapbench.reports.compare import IGNORED_KEYS
from swapbench.reports.gate import load_results
from swapbench.rundir import RunDir


@dataclass(frozen=True)
class Axis:
    key: str
    values: list[str]
    """Raw values as written on the command line; ``swapbench train --set`` parses each one."""


@dataclass(frozen=True)
class Point:
    index: int
    name: str
    overrides: list[str]


class State(Enum):
    DONE = "done"            # trained and evaluated: skipped
    EVALUATE = "evaluate"    # trained, not evaluated
    RESUME = "resume"        # started, not finished: continue from its last checkpoint
    TRAIN = "train"          # not started


def split_values(raw: str) -> list[str]:
    """Split ``1e-4,3e-4`` on commas outside brackets and quotes, so ``[0.1,0.2],[0.3,0.4]`` is two lists."""
    values, depth, quote, current = [], 0, "", ""
    for ch in raw:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            values.append(current.strip())
            current = ""
            continue
        current += ch
    values.append(current.strip())
    if depth or quote or any(v == "" for v in values):
        raise UserError(f"--set {raw!r}: unbalanced brackets/quotes or an empty value; write e.g. train.lr=1e-4,3e-4")
    return values


def parse_axes(items: list[str]) -> list[Axis]:
    axes: list[Axis] = []
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--set expects key=v1,v2,..., got {item!r}; e.g. --set train.lr=1e-4,3e-4")
        if any(a.key == key for a in axes):
            raise UserError(f"--set {key} given twice; list all its values once, comma separated")
        axes.append(Axis(key, split_values(raw)))
    return axes


def _slug(key: str, value: str, short: bool) -> str:
    label = key.rsplit(".", 1)[-1] if short else key
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", f"{label}-{value}").strip("-")


def grid(axes: list[Axis]) -> list[Point]:
    """Every combination of the swept values; single-valued keys apply to every point and stay out of names.

    Names use the last part of each key (``lr-1e-4_max-steps-200``) unless two swept keys share it.
    """
    swept = [a for a in axes if len(a.values) > 1]
    fixed = [f"{a.key}={a.values[0]}" for a in axes if len(a.values) == 1]
    tails = [a.key.rsplit(".", 1)[-1] for a in swept]
    short = [tails.count(t) == 1 for t in tails]
    points = []
    for index, combo in enumerate(itertools.product(*[a.values for a in swept])):
        name = "_".join(_slug(a.key, v, s) for a, v, s in zip(swept, combo, short, strict=True)) or "point"
        points.append(Point(index, name, fixed + [f"{a.key}={v}" for a, v in zip(swept, combo, strict=True)]))
    return points


@dataclass(frozen=True)
class Sweep:
    points: list[Point]
    out: Path
    preset: str
    config: str | None = None
    suite: str | None = None
    launcher: str | None = None
    """Prefix that starts each train/eval in several processes, e.g. ``accelerate launch --num_processes 8``."""

    def argv(self, args: list[str]) -> list[str]:
        """The process to start for swapbench ``args``: through the launcher (``-m swapbench``) or plainly."""
        if self.launcher:
            return [*shlex.split(self.launcher), "-m", "swapbench", *args]
        return [sys.executable, "-m", "swapbench", *args]

    def shell_command(self, args: list[str]) -> str:
        return shlex.join([*shlex.split(self.launcher), "-m", "swapbench", *args] if self.launcher
                          else ["swapbench", *args])

    def run_dir(self, point: Point) -> RunDir:
        return RunDir(self.out / point.name)

    def train_args(self, point: Point) -> list[str]:
        args = ["train", "--preset", self.preset, "--out", str(self.out), "--name", point.name]
        args += ["--config", self.config] if self.config else []
        for override in point.overrides:
            args += ["--set", override]
        return args

    def resume_args(self, point: Point) -> list[str]:
        return ["train", "--resume", str(self.run_dir(point).root)]

    def eval_args(self, point: Point) -> list[str]:
        return ["eval", str(self.run_dir(point).root)] + (["--suite", self.suite] if self.suite else [])

    def expected_config(self, point: Point) -> dict:
        """What train will write to config.json; a UserError (exit 2) for a bad key before anything runs."""
        cfg = load_config(self.preset, self.config,
                          [*point.overrides, f"name={point.name}", f"output_dir={self.out}"])
        return cfg.to_dict()

    def state(self, point: Point) -> State:
        run = self.run_dir(point)
        if not run.config.is_file():
            return State.TRAIN
        changed = config_changes(read_json(run.config), self.expected_config(point))
        if changed:
            raise UserError(f"{run.root} holds a run with another config than sweep point {point.name!r} "
                            f"({'; '.join(changed[:3])}); pass a new --out or remove that folder")
        if not run.finished:
            return State.RESUME
        try:
            load_results(run.eval_dir / "results.json")
        except UserError:
            return State.EVALUATE
        return State.DONE

    def commands(self, point: Point) -> list[list[str]]:
        """The swapbench argument lists still needed for ``point`` (empty when it is done)."""
        state = self.state(point)
        steps = {State.TRAIN: [self.train_args(point), self.eval_args(point)],
                 State.RESUME: [self.resume_args(point), self.eval_args(point)],
                 State.EVALUATE: [self.eval_args(point)], State.DONE: []}
        return steps[state]


def config_changes(found: dict, expected: dict) -> list[str]:
    """``key: found -> expected`` for every setting that differs, ignoring where the run is placed."""
    a, b = dict(flatten(found)), dict(flatten(expected))
    return [f"{k}: {json.dumps(a.get(k))} -> {json.dumps(b.get(k))}" for k in sorted(set(a) | set(b))
            if k not in IGNORED_KEYS and a.get(k) != b.get(k)]


def run_point(sweep: Sweep, point: Point, echo: Callable[[str], None]) -> bool:
    """Run what ``point`` still needs; False if a step failed (its own output says why)."""
    for args in sweep.commands(point):
        echo(f"[{point.index + 1}/{len(sweep.points)}] {point.name}: {sweep.shell_command(args)}")
        if subprocess.run(sweep.argv(args), check=False).returncode != 0:
            return False
    return True
