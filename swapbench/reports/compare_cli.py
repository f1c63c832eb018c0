"""``swapbench compare``: evaluated runs side by side (metrics with CIs, settings that differ)."""

from __future__ import annotations

import argparse

from swapbench.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="table + HTML of several evaluated runs (e.g. a sweep)",
                       description="Print each run's metrics with 95% CIs and only the config keys that differ "
                       "between the runs; optionally write an HTML page (swap success vs preservation scatter, "
                       "links to each report) and a CSV.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories or results.json files")
    p.add_argument("--html", metavar="FILE", help="write the comparison as a self-contained HTML page")
    p.add_argument("--csv", metavar="FILE", help="write every metric (value, CI, n) of every run as CSV")
    p.add_argument("--sort", metavar="METRIC", help="order runs best first by this metric (e.g. preservation)")
    p.add_argument("--metrics", metavar="A,B", help="metrics to show (default: the headline metrics)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from swapbench.reports.compare import (
        differing_keys,
        load_runs,
        metric_names,
        print_table,
        sort_runs,
        write_csv,
        write_html,
    )

    runs = load_runs(args.runs)
    metrics = metric_names(runs, [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None)
    if args.sort:
        runs = sort_runs(runs, args.sort)
    keys = differing_keys(runs)
    print_table(runs, keys, metrics)
    for path, write in ((args.csv, lambda p: write_csv(runs, keys, p)),
                        (args.html, lambda p: write_html(runs, keys, metrics, p))):
        if path:
            try:
                print(write(path))
            except OSError as e:
                raise UserError(f"cannot write {path} ({e.strerror}); pass a writable path") from None
    return 0
