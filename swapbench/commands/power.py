"""``swapbench power``: how small a difference a suite can detect, and how many seeds a claim needs."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("power",
                       help="smallest detectable difference per headline metric; seeds needed for a difference",
                       description="From an evaluated run (its values, prompts, seeds and measured clustering): the "
                       "smallest paired difference in each headline share that a comparison on the same suite "
                       "detects at 80% power (two-sided 5%), and with --diff the seeds per prompt needed to detect "
                       "that difference ('more prompts' when no number of seeds can).")
    p.add_argument("run", help="run directory or results.json")
    p.add_argument("--diff", type=float, help="a difference to detect (e.g. 0.05), in the metric's units")
    p.add_argument("--seeds", type=int, help="seeds per prompt to size for (default: those the run was evaluated with)")
    p.add_argument("--power", type=float, default=0.8, help="target power (default 0.8)")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from swapbench.errors import UserError
    from swapbench.eval.power import power_table
    from swapbench.reports.gate import load_results

    if args.diff is not None and not 0 < args.diff < 1:
        raise UserError(f"--diff {args.diff} must be a difference in a share, between 0 and 1 (e.g. 0.05)")
    if args.seeds is not None and args.seeds < 1:
        raise UserError("--seeds must be at least 1")
    if not 0.5 <= args.power < 1:
        raise UserError(f"--power {args.power} must be in [0.5, 1)")
    results = load_results(args.run)
    rows = power_table(results, args.diff, args.seeds, args.power)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"power of a paired comparison on suite {results.get('suite')} ({args.power:.0%} power, "
                  "two-sided 5%)", title_justify="left")
    cols = ["metric", "value", "prompts", "seeds/prompt", "icc", "detectable diff"]
    if args.diff is not None:
        cols.append(f"seeds/prompt for {args.diff:g}")
    for col in cols:
        table.add_column(col, justify="left" if col == "metric" else "right")
    for r in rows:
        cells = [r["metric"], f"{r['value']:.3f}", str(r["prompts"]), str(r["seeds_per_prompt"]), f"{r['icc']:.2f}",
                 f"{r['detectable_diff']:.3f}"]
        if args.diff is not None:
            cells.append("more prompts" if r["seeds_for_diff"] is None else str(r["seeds_for_diff"]))
        table.add_row(*cells)
    Console(width=max(Console().width, 120)).print(table)
    return 0
