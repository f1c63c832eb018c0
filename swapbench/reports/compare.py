"""Compare evaluated runs: metrics with CIs side by side, each run's method, and the settings that differ.

A run is a run directory (RUN/eval/results.json + RUN/config.json) or a results.json path (its
run's config.json is found when the file sits in RUN/eval/).
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swapbench import catalog
from swapbench.config import flatten
from swapbench.errors import UserError
from swapbench.io import atomic_write_text, read_json
from swapbench.reports.gate import Verdict, evaluate, load_results, load_rules, results_path
from swapbench.reports.summary import ordered
from swapbench.reports.svg import ScatterPoint, fmt, fmt_p, scatter

# Keys that differ between any two runs by construction and say nothing about the recipe.
IGNORED_KEYS = {"name", "output_dir"}
METHOD_KEY = "train.method"  # always its own column: a run without its method is not a reference point
# What the evaluation actually used (results.json), which can differ from the run's config (eval --suite).
RESULT_SETTINGS = {"eval.suite": ("suite",), "eval.sampler": ("sampler", "sampler"),
                   "eval.steps": ("sampler", "steps"), "eval.guidance_scale": ("sampler", "guidance_scale")}
PALETTE = ("#2563eb", "#dc2626", "#059669", "#9333ea", "#ea580c", "#0891b2", "#4d7c0f", "#be185d")


@dataclass
class RunRecord:
    label: str
    results_file: Path
    results: dict[str, Any]
    settings: dict[str, Any]
    """Flattened config keys (``train.lr``) plus the eval settings recorded in results.json."""
    report: Path | None
    summary: dict[str, Any] | None
    run_root: Path | None = None
    """The run directory (where eval_log.jsonl lives)."""

    def metric(self, name: str) -> dict | None:
        return self.results["metrics"].get(name)

    @property
    def method(self) -> str:
        """``train.method``; a run without config.json shows ``?``, one from before methods existed ``finetune``."""
        if not self.settings:
            return "?"
        return str(self.settings.get(METHOD_KEY) or "finetune")


def load_run(path_or_run: str | Path) -> RunRecord:
    results_file = results_path(path_or_run)
    results = load_results(results_file)
    run_root = results_file.parent.parent if results_file.parent.name == "eval" else results_file.parent
    config = read_json(run_root / "config.json") if (run_root / "config.json").is_file() else {}
    settings = dict(flatten(config))
    for key, path in RESULT_SETTINGS.items():
        value: Any = results
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None:
            settings[key] = value
    report = results_file.parent / "report.html"
    summary_file = run_root / "train_summary.json"
    return RunRecord(str(results.get("run") or run_root.name), results_file, results, settings,
                     report if report.is_file() else None, read_json(summary_file) if summary_file.is_file() else None,
                     run_root)


def load_runs(paths: list[str | Path]) -> list[RunRecord]:
    runs = [load_run(p) for p in paths]
    seen: dict[str, int] = {}
    for run in runs:  # two runs of the same name from different folders stay apart in tables and plots
        seen[run.label] = seen.get(run.label, 0) + 1
        if seen[run.label] > 1:
            run.label = f"{run.label} ({seen[run.label]})"
    return runs


def differing_keys(runs: list[RunRecord]) -> list[str]:
    """Settings whose values are not the same in every run (a missing key counts as a difference); the method
    has its own column."""
    keys = sorted({k for run in runs for k in run.settings} - IGNORED_KEYS - {METHOD_KEY})
    return [k for k in keys if len({json.dumps(run.settings.get(k), sort_keys=True) for run in runs}) > 1]


def metric_names(runs: list[RunRecord], requested: list[str] | None = None) -> list[str]:
    available = ordered(list({name: None for run in runs for name in run.results["metrics"]}))
    if not requested:
        return catalog.headline(dict.fromkeys(available), pooled=True)
    for name in requested:
        if name not in available:
            raise UserError(f"no run has metric {name!r}{_suggest(name, available)}; pick from: {', '.join(available)}")
    return requested


def sort_runs(runs: list[RunRecord], metric: str) -> list[RunRecord]:
    """Best first by the metric's own direction; runs without the metric go last."""
    metric_names(runs, [metric])
    direction = next(r.metric(metric)["higher_is_better"] for r in runs if r.metric(metric))
    sign = -1 if direction is not False else 1

    def key(run: RunRecord) -> tuple[int, float]:
        m = run.metric(metric)
        return (0, sign * m["value"]) if m else (1, 0.0)

    return sorted(runs, key=key)


def _suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def cell(metric: dict | None) -> str:
    if metric is None:
        return "—"
    lo, hi = metric["ci95"]
    return f"{fmt(metric['value'])} [{fmt(lo)}, {fmt(hi)}]"


def setting_text(value: Any) -> str:
    return "—" if value is None else value if isinstance(value, str) else json.dumps(value)


def gate_verdicts(run: RunRecord) -> list[Verdict]:
    """The default threshold rules (no baseline): the same pass/fail a run's report shows."""
    return evaluate(run.results, None, load_rules())


def to_csv(runs: list[RunRecord], keys: list[str]) -> str:
    """One row per run: its differing settings, then value, CI and n of every metric any run has."""
    names = ordered(list({n: None for run in runs for n in run.results["metrics"]}))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["run", "method", "results", *keys,
                     *[f"{n}{s}" for n in names for s in ("", ".ci_lo", ".ci_hi", ".n")]])
    for run in runs:
        row: list[Any] = [run.label, run.method, str(run.results_file),
                          *[setting_text(run.settings.get(k)) for k in keys]]
        for name in names:
            m = run.metric(name)
            row += [m["value"], m["ci95"][0], m["ci95"][1], m["n"]] if m else ["", "", "", ""]
        writer.writerow(row)
    return out.getvalue()


def write_csv(runs: list[RunRecord], keys: list[str], path: str | Path) -> Path:
    return atomic_write_text(path, to_csv(runs, keys))


def print_table(runs: list[RunRecord], keys: list[str], metrics: list[str], console: Any = None) -> None:
    """Runs as rows; each metric cell holds the value over its 95% CI so columns stay narrow."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    if not console.is_terminal:  # logs and pipes are read later, in full: do not squeeze them to 80 columns
        console.width = max(console.width, 200)
    table = Table(title=f"{len(runs)} runs; {settings_title(runs, keys)}", title_justify="left")
    table.add_column("run", overflow="fold")
    table.add_column("method")
    for key in keys:
        table.add_column(key, justify="right", overflow="fold")
    for name in metrics:
        table.add_column(name, justify="right", overflow="fold")
    table.add_column("gate")
    for run in runs:
        passed = all(v.passed for v in gate_verdicts(run))
        table.add_row(run.label, run.method, *[setting_text(run.settings.get(k)) for k in keys],
                      *[_two_line(run.metric(n)) for n in metrics], "[green]pass[/]" if passed else "[red]fail[/]")
    console.print(table)


def settings_title(runs: list[RunRecord], keys: list[str]) -> str:
    """What differs between the runs: the method (its own column) counts as a setting here too."""
    differ = ([METHOD_KEY] if len({run.method for run in runs}) > 1 else []) + keys
    if differ:
        return f"settings that differ: {', '.join(differ)}"
    return "all settings equal"


def check_pairable(runs: list[RunRecord]) -> None:
    """Every run against the first: same suite, seeds, sampler and prompts, or one line (exit 2)."""
    from swapbench.eval.paired import check_pairable as check

    for run in runs[1:]:
        check(runs[0].results, run.results)


def paired_against_first(runs: list[RunRecord], metrics: list[str]) -> dict[str, dict[str, dict]]:
    """``{run: {metric: {diff, ci95, p, p_holm, n_pairs, discordant}}}``: each later run minus the first,
    row by row on (prompt, seed), Holm across ``metrics`` (those with per-prompt rows)."""
    from swapbench.eval import paired

    return {run.label: paired.compare(runs[0].results, run.results, metrics) for run in runs[1:]}


def print_paired(runs: list[RunRecord], metrics: list[str], table_data: dict[str, dict[str, dict]],
                 console: Any = None) -> None:
    """Differences against the first run: diff, 95% interval, Holm p; significant ones in bold."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    if not console.is_terminal:
        console.width = max(console.width, 200)
    shown = [m for m in metrics if any(m in row for row in table_data.values())]
    if not shown:
        return
    table = Table(title=f"paired vs {runs[0].label}: difference [95% CI], Holm p (bold: p_holm < 0.05)",
                  title_justify="left")
    table.add_column("run", overflow="fold")
    for name in shown:
        table.add_column(name, justify="right", overflow="fold")
    for label, row in table_data.items():
        cells = []
        for name in shown:
            d = row.get(name)
            if d is None:
                cells.append("—")
                continue
            ci = f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"
            text = f"{d['diff']:+.3f}\n[dim]{ci}[/]\np {fmt_p(d['p_holm'])}"
            cells.append(f"[bold]{text}[/]" if d["p_holm"] < 0.05 else text)
        table.add_row(label, *cells)
    console.print(table)
    for label, row in table_data.items():
        moved = [f"{name} {d['diff']:+.3f}" for name, d in row.items() if d["p_holm"] < 0.05 and d["diff"] != 0]
        console.print(f"{label} vs {runs[0].label}: " + ("; ".join(moved) if moved else "no significant difference"),
                      soft_wrap=True)


def to_json(runs: list[RunRecord], keys: list[str], table_data: dict[str, dict[str, dict]]) -> dict:
    return {"runs": [{"run": run.label, "method": run.method, "results": str(run.results_file),
                      "settings": {k: run.settings.get(k) for k in keys}, "metrics": run.results["metrics"]}
                     for run in runs],
            "paired": table_data}


def _two_line(metric: dict | None) -> str:
    if metric is None:
        return "—"
    lo, hi = metric["ci95"]
    return f"{fmt(metric['value'])}\n[dim][{fmt(lo)}, {fmt(hi)}][/]"


def _target(rules: list[dict], *prefixes: str) -> float | None:
    """The strictest gate floor on metrics named ``prefix`` or ``prefix/...`` of any of ``prefixes`` (drawn as a
    dashed line)."""
    floors = [r["min"] for r in rules if "min" in r and any(
        r.get("metric") == p or str(r.get("metric", "")).startswith(p + "/") for p in prefixes)]
    return max(floors) if floors else None


EDIT_SUCCESS = ("edit_success", "swap_success", "remap_success", "erase_success")
"""The pooled success a run's point in the scatter stands on: over several edits ``edit_success``, else its
one kind's."""


def edit_success(run: RunRecord) -> dict | None:
    """The share of the run's edited images that show their edit (``EDIT_SUCCESS``, the first it has)."""
    return next((m for m in map(run.metric, EDIT_SUCCESS) if m), None)


def write_html(runs: list[RunRecord], keys: list[str], metrics: list[str], path: str | Path,
               paired: dict[str, dict[str, dict]] | None = None) -> Path:
    """compare.html: the table, the paired differences against the first run, an edit-success vs
    preservation scatter, links to each run's report."""
    from swapbench.reports.html import environment

    path = Path(path)
    paired = paired if paired is not None else paired_against_first(runs, metrics)
    rules = load_rules()
    points, rows = [], []
    for i, run in enumerate(runs):
        link = os.path.relpath(run.report, path.parent.resolve()) if run.report else None
        colour = PALETTE[i % len(PALETTE)]
        x, y = run.metric("preservation"), edit_success(run)
        if x and y:
            points.append(ScatterPoint(run.label, x["value"], tuple(x["ci95"]), y["value"], tuple(y["ci95"]),
                                       link, colour))
        verdicts = gate_verdicts(run)
        rows.append({"label": run.label, "link": link, "colour": colour, "method": run.method,
                     "settings": [setting_text(run.settings.get(k)) for k in keys],
                     "metrics": [run.metric(n) for n in metrics], "gate_passed": all(v.passed for v in verdicts),
                     "gate_failed": [v.metric for v in verdicts if not v.passed],
                     "wall_s": (run.summary or {}).get("wall_s")})
    plot = scatter(points, "preservation (controls keep their base label)", "edit success (all edited directions)",
                   targets=(_target(rules, "preservation"), _target(rules, *EDIT_SUCCESS))) if points else None
    from swapbench.reports.curves import overlay_curves

    curves = overlay_curves([(run.label, run.run_root, PALETTE[i % len(PALETTE)]) for i, run in enumerate(runs)])
    html = environment().get_template("compare.html.j2").render(
        title=f"swapbench compare: {len(runs)} runs", keys=keys, metrics=metrics, rows=rows, plot=plot, curves=curves,
        settings_title=settings_title(runs, keys), first=runs[0].label,
        paired=paired, shown=[m for m in metrics if any(m in row for row in paired.values())],
        descriptions={n: next((r.metric(n)["description"] for r in runs if r.metric(n)), "") for n in metrics})
    return atomic_write_text(path, html)
