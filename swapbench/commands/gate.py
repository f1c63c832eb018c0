"""``swapbench gate``: pass/fail a run against rules and a baseline (exit 0 pass, 1 regression, 2 error)."""

from __future__ import annotations

import argparse
import json

from swapbench.errors import GateFailure, UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gate", help="check a run against gate rules and a baseline (exit 1 on regression)",
                       description="Exit 0 when every rule passes, 1 on a regression, 2 on bad input. A missing, "
                       "truncated or schema-incompatible results file never passes.")
    p.add_argument("run", help="run directory or results.json")
    p.add_argument("--baseline", metavar="RUN_OR_RESULTS",
                   help="baseline run directory or results.json (enables the 'no worse than baseline' rules)")
    p.add_argument("--rules", metavar="FILE", help="gate rules YAML (default: the shipped eval/gates/default.yaml)")
    p.add_argument("--json", action="store_true", help="print verdicts as JSON on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from swapbench.reports.gate import check_comparable, evaluate, load_results, load_rules, missing_metrics

    results = load_results(args.run)
    baseline = load_results(args.baseline) if args.baseline else None
    if baseline is not None:
        check_comparable(results, baseline)
    verdicts = evaluate(results, baseline, load_rules(args.rules))
    problem = missing_metrics(verdicts, results)
    if problem:
        raise UserError(problem)
    failed = [v for v in verdicts if not v.passed]
    if args.json:
        print(json.dumps({"passed": not failed, "run": results.get("run"),
                          "baseline": baseline.get("run") if baseline else None,
                          "verdicts": [v.to_dict() for v in verdicts]}, indent=2))
    else:
        _print_table(results, baseline, verdicts)
    if failed:
        raise GateFailure(f"{len(failed)} of {len(verdicts)} rules failed: "
                          f"{', '.join(f'{v.metric} ({v.rule})' for v in failed[:5])}"
                          f"{' ...' if len(failed) > 5 else ''}")
    return 0


def _print_table(results: dict, baseline: dict | None, verdicts: list) -> None:
    from rich.console import Console
    from rich.table import Table

    from swapbench.reports.svg import fmt

    title = f"gate: {results.get('run')}" + (f" vs baseline {baseline.get('run')}" if baseline else " (no baseline)")
    table = Table(title=title, title_justify="left")
    for col, justify in (("rule", "left"), ("metric", "left"), ("value", "right"), ("reference", "left"),
                         ("verdict", "left")):
        table.add_column(col, justify=justify)
    for v in verdicts:
        table.add_row(v.rule, v.metric, fmt(v.value), v.reference,
                      "[green]pass[/]" if v.passed else "[bold red]FAIL[/]")
    Console(width=max(Console().width, 110)).print(table)
