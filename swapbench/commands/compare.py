"""``swapbench compare``: evaluated runs side by side (metrics with CIs, settings that differ)."""

from __future__ import annotations

import argparse

from swapbench.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="table + HTML of several evaluated runs (e.g. a sweep)",
                       description="Print each run's metrics with 95% CIs and only the config keys that differ "
                       "between the runs; optionally write an HTML page (swap success vs preservation scatter, "
                       "links to each report) and a CSV. Each later run is also compared with the first row by row "
                       "on (prompt, seed): the paired difference, its cluster-bootstrap 95% CI, an exact McNemar p "
                       "(binary metrics) and Holm-adjusted p across the metrics compared. Runs evaluated with "
                       "different suites, seeds or sampler settings cannot be compared (exit 2).")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories or results.json files")
    p.add_argument("--html", metavar="FILE", help="write the comparison as a self-contained HTML page")
    p.add_argument("--csv", metavar="FILE", help="write every metric (value, CI, n) of every run as CSV")
    p.add_argument("--sort", metavar="METRIC", help="order runs best first by this metric (e.g. preservation)")
    p.add_argument("--metrics", metavar="A,B", help="metrics to show and compare (default: the headline metrics)")
    p.add_argument("--json", action="store_true", help="print {\"runs\", \"paired\"} as JSON instead of the tables; "
                   "stdout then holds only that JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from swapbench.reports.compare import (
        check_pairable,
        differing_keys,
        load_runs,
        metric_names,
        paired_against_first,
        print_paired,
        print_table,
        sort_runs,
        to_json,
        write_csv,
        write_html,
    )

    runs = load_runs(args.runs)
    metrics = metric_names(runs, [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None)
    if args.sort:
        runs = sort_runs(runs, args.sort)
    check_pairable(runs)
    keys = differing_keys(runs)
    paired = paired_against_first(runs, metrics)
    if args.json:
        print(json.dumps(to_json(runs, keys, paired), indent=2))
    else:
        print_table(runs, keys, metrics)
        print_paired(runs, metrics, paired)
    for path, write in ((args.csv, lambda p: write_csv(runs, keys, p)),
                        (args.html, lambda p: write_html(runs, keys, metrics, p, paired))):
        if path:
            try:
                written = write(path)
                if not args.json:
                    print(written)
            except OSError as e:
                raise UserError(f"cannot write {path} ({e.strerror}); pass a writable path") from None
    return 0
