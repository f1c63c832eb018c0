"""``swapbench sweep``: train + evaluate a grid of settings, then compare the runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from swapbench.errors import UserError
from swapbench.reports.sweep import Point, Sweep


def register(sub: argparse._SubParsersAction) -> None:
    from swapbench.config import preset_names

    p = sub.add_parser("sweep", help="train + eval every point of a grid, then write the comparison",
                       description="Each --set KEY=V1,V2,... is an axis of the grid; every combination becomes an "
                       "ordinary run directory under --out, trained with `swapbench train` and evaluated with "
                       "`swapbench eval`. Re-running the same command skips finished points and resumes "
                       "interrupted ones. Ends with compare.html and compare.csv in --out.",
                       epilog="Example: swapbench sweep --set train.lr=1e-4,3e-4 --set train.max_steps=200,400")
    p.add_argument("--set", dest="axes", action="append", default=[], metavar="KEY=V1,V2",
                   help="a grid axis (repeatable); a single value applies to every point")
    p.add_argument("--preset", default="savanna", help=f"recipe preset ({', '.join(preset_names())})")
    p.add_argument("--config", metavar="FILE", help="YAML/TOML/JSON config applied on top of the preset")
    p.add_argument("--suite", help="evaluation suite for every point (default: each run's eval.suite)")
    p.add_argument("--out", default="runs/sweep", help="folder of the point run directories (default: runs/sweep)")
    p.add_argument("--list", action="store_true",
                   help="print the commands each unfinished point still needs, one point per line, and exit")
    p.add_argument("--launcher", metavar="CMD",
                   help="start each point's train and eval through CMD, e.g. 'accelerate launch --num_processes 8' "
                   "or 'torchrun --standalone --nproc_per_node 8' (every point then uses all those GPUs in turn)")
    p.add_argument("--point", type=int, metavar="I",
                   help="run only point I (0-based, in --list order), e.g. $SLURM_ARRAY_TASK_ID")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from swapbench.progress import console
    from swapbench.reports.sweep import State, grid, parse_axes, run_point

    if not args.axes:
        raise UserError("sweep needs at least one --set KEY=V1,V2; e.g. --set train.lr=1e-4,3e-4")
    points = grid(parse_axes(args.axes))
    sweep = Sweep(points, Path(args.out), args.preset, args.config, args.suite, args.launcher)
    for point in points:  # bad keys or values fail here, before hours of training
        sweep.expected_config(point)
    if args.point is not None:
        if not 0 <= args.point < len(points):
            raise UserError(f"--point {args.point} is outside the grid of {len(points)} points (0..{len(points) - 1})")
        points = [points[args.point]]

    if args.list:
        for point in points:
            print(" && ".join(sweep.shell_command(c) for c in sweep.commands(point)) or f"# {point.name}: done")
        return 0

    failed = []
    for point in points:
        if sweep.state(point) is State.DONE:
            console.print(f"[{point.index + 1}/{len(sweep.points)}] {point.name}: done, skipped")
        elif not run_point(sweep, point, lambda line: console.print(line, markup=False)):
            failed.append(point.name)
    finished = [p for p in sweep.points if sweep.state(p) is State.DONE]
    if args.point is None and finished:  # compare what finished even when a point failed
        print(_compare(sweep, finished))
    if failed:
        raise UserError(f"{len(failed)} of {len(points)} sweep points failed ({', '.join(failed)}; their errors are "
                        "above); fix the cause and re-run the same command to retry only those")
    return 0


def _compare(sweep: Sweep, points: list[Point]) -> Path:
    """compare.csv + compare.html in the sweep folder; the table on stdout."""
    from swapbench.reports.compare import (
        differing_keys,
        load_runs,
        metric_names,
        print_table,
        write_csv,
        write_html,
    )

    runs = load_runs([sweep.run_dir(p).root for p in points])
    keys = differing_keys(runs)
    metrics = metric_names(runs)
    print_table(runs, keys, metrics)
    write_csv(runs, keys, sweep.out / "compare.csv")
    return write_html(runs, keys, metrics, sweep.out / "compare.html")
