"""``swapbench gate``: pass/fail a run against rules and a baseline (exit 0 pass, 1 regression, 2 error)."""

from __future__ import annotations

import argparse
import json

from swapbench.errors import GateFailure


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gate", help="check a run against gate rules and a baseline (exit 1 on regression)",
                       description="Exit 0 when every rule passes, 1 on a regression, 2 on bad input. A missing, "
                       "truncated or schema-incompatible results file never passes.")
    p.add_argument("run", help="run directory or results.json")
    p.add_argument("--baseline", help="baseline run directory or results.json")
    p.add_argument("--rules", help="gate rules YAML (default: the shipped eval/gates/default.yaml)")
    p.add_argument("--json", action="store_true", help="print verdicts as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from swapbench.reports.gate import evaluate, load_results, load_rules

    results = load_results(args.run)
    baseline = load_results(args.baseline) if args.baseline else None
    verdicts = evaluate(results, baseline, load_rules(args.rules))
    passed = all(v.passed for v in verdicts)
    if args.json:
        print(json.dumps({"passed": passed, "verdicts": [v.to_dict() for v in verdicts]}, indent=2))
    else:
        table = Table(title=f"gate: {results.get('run')}" + (f" vs {baseline.get('run')}" if baseline else ""))
        for col in ("rule", "metric", "value", "reference", "verdict"):
            table.add_column(col)
        for v in verdicts:
            table.add_row(v.rule, v.metric, "missing" if v.value is None else f"{v.value:.3f}", v.reference,
                          "[green]pass[/]" if v.passed else "[bold red]FAIL[/]")
        Console().print(table)
    if not passed:
        raise GateFailure(f"{sum(not v.passed for v in verdicts)} of {len(verdicts)} rules failed")
    return 0
