"""report.html: one self-contained file (images as data URIs, plots as inline SVG, no network)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from swapbench import catalog, schema
from swapbench.assets import asset_path
from swapbench.eval.paired import what_moved
from swapbench.io import atomic_write_text, read_json, read_jsonl
from swapbench.reports.curves import learning_curves
from swapbench.reports.gate import Verdict, evaluate, load_results, load_rules
from swapbench.reports.robust import PROBE_GROUPS, robust_sections
from swapbench.reports.summary import erased_became, further_judges, ordered
from swapbench.reports.svg import ci_bar, fmt, fmt_p, line_chart

GROUP_TITLES = {"swap": "Swap: prompts naming a swapped concept", "remap": "Remap: prompts naming a remapped concept",
                "erase": "Erase: prompts naming an erased concept", "control": "Controls: must not change",
                "generality": "Generality: plurals, contexts, paraphrases, compositions",
                "specificity": "Specificity: near neighbours must not change", "custom": "Custom prompts"}
# The pooled metric that summarises each prompt group.
GROUP_METRIC = {"swap": "swap_success", "remap": "remap_success", "erase": "erase_success", "control": "preservation",
                "generality": "generality", "specificity": "specificity", "custom": "custom"}


def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(asset_path("reports/templates")), undefined=StrictUndefined,
                      autoescape=select_autoescape(["html", "j2"]))
    env.filters["fmt"] = fmt
    env.filters["fmt_p"] = fmt_p
    env.globals["ci_bar"] = ci_bar
    return env


def data_uri(path: Path) -> str | None:
    """The PNG inlined as a data URI, or None if the sample was not kept."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode() if path.is_file() else None


def write_report(eval_dir: str | Path, run_dir: str | Path | None = None) -> Path:
    """Write ``eval_dir/report.html`` from results.json (+ the run's log, audit and config if ``run_dir``)."""
    eval_dir = Path(eval_dir)
    run_dir = Path(run_dir) if run_dir else None
    results = load_results(eval_dir / "results.json")
    metrics = results["metrics"]
    verdicts = evaluate(results, None, load_rules())
    html = environment().get_template("report.html.j2").render(
        title=f"swapbench report: {results.get('run', eval_dir.name)}",
        r=results,
        headline=catalog.headline(metrics),
        judges=further_judges(results),
        moved=what_moved(results),
        validity=catalog.validity_warnings(results),
        definitions={n: catalog.definition(n, metrics[n]) for n in metrics},
        directions={n: catalog.higher_is_better(n, metrics[n]) for n in metrics},
        edits=edits_line(results),
        edit_rows=_edit_rows(results),
        became=erased_became(results),
        names=ordered(metrics),
        verdicts=verdicts,
        gate_passed=all(v.passed for v in verdicts),
        gate_by_metric=_gate_by_metric(verdicts),
        groups=_groups(results, eval_dir),
        robust=robust_sections(results, eval_dir, data_uri),
        confusions=_confusions(results),
        training=_training(run_dir),
        audit=_read_optional(run_dir / "data_audit.json") if run_dir else None,
        config=_flat_rows(_read_optional(run_dir / "config.json")) if run_dir else [],
        provenance=_flat_rows(results.get("provenance", {})),
    )
    return atomic_write_text(eval_dir / "report.html", html)


def _read_optional(path: Path) -> Any:
    return read_json(path) if path.is_file() else None


def _gate_by_metric(verdicts: list[Verdict]) -> dict[str, list[Verdict]]:
    by_metric: dict[str, list[Verdict]] = {}
    for v in verdicts:
        by_metric.setdefault(v.metric, []).append(v)
    return by_metric


def _groups(results: dict, eval_dir: Path) -> list[dict]:
    """Same-seed base/tuned pairs per prompt group, in the order of GROUP_TITLES, with the group's metric."""
    groups: dict[str, dict[str, dict]] = {}
    for row in results.get("per_prompt", []):
        if "images" not in row or row["group"] in PROBE_GROUPS:  # the robustness sections show these
            continue
        prompts = groups.setdefault(row["group"], {})
        prompt = prompts.setdefault(row["prompt"], {"prompt": row["prompt"], "concept": row["concept"], "cells": []})
        top = sorted(row.get("scores", {}).items(), key=lambda kv: -kv[1])[:3]
        prompt["cells"].append({
            "seed": row["seed"], "base": data_uri(eval_dir / row["images"]["base"]),
            "tuned": data_uri(eval_dir / row["images"]["tuned"]), "base_label": row["base_label"],
            "tuned_label": row["tuned_label"], "success": row["success"],
            "scores": ", ".join(f"{label} {p:.2f}" for label, p in top),
        })
    order = [g for g in GROUP_TITLES if g in groups] + sorted(set(groups) - set(GROUP_TITLES))
    return [{"name": g, "title": GROUP_TITLES.get(g, g), "metric_name": GROUP_METRIC.get(g),
             "metric": results["metrics"].get(GROUP_METRIC.get(g, "")), "prompts": list(groups[g].values())}
            for g in order]


def edits_line(results: dict) -> str | None:
    """What the run edited, in one line (``erase giraffe; lion -> cow``); None for a file that records no edit."""
    return schema.edits(results).describe() if schema.edit_config(results) is not None else None


def _edit_rows(results: dict) -> list[str]:
    """How the edited concepts' confusion rows read after a perfect edit, one phrase per edit direction
    (two concepts that are each other's target, a swap, in one)."""
    if schema.edit_config(results) is None:
        return []
    edits = schema.edits(results)
    out, said = [], set()
    for concept in edits.sources:
        target, anchor = edits.target(concept), getattr(edits.of(concept), "anchor", None)
        if concept in said:
            continue
        if target and edits.target(target) == concept:
            said.add(target)
            out.append(f"the rows of {concept} and {target} trade places")
        elif target:
            out.append(f"{concept} moves to the {target} column")
        elif anchor:
            out.append(f"{concept} moves to its anchor {anchor}'s column")
        else:
            out.append(f"{concept} leaves its own column")
    return out


def _confusions(results: dict) -> list[dict]:
    """Base and tuned confusion tables with every cell's share of its row (for the heat colour)."""
    tables = [(title, results.get(key)) for title, key in (("base", "confusion_base"), ("tuned", "confusion"))]
    out = []
    for title, table in tables:
        if not table:
            continue
        labels = results.get("labels") or sorted({label for row in table.values() for label in row})
        rows = []
        for concept, row in table.items():
            total = sum(row.values())
            rows.append({"concept": concept, "total": total,
                         "cells": [{"label": label, "count": row.get(label, 0),
                                    "share": row.get(label, 0) / total if total else 0.0} for label in labels]})
        out.append({"title": title, "labels": labels, "rows": rows})
    return out


def _training(run_dir: Path | None) -> dict | None:
    if not run_dir:
        return None
    # read_jsonl drops a partial last line (a run killed mid-write); the rest is still worth plotting.
    rows = [r for r in read_jsonl(run_dir / "train_log.jsonl") if isinstance(r, dict) and "step" in r]
    if not rows:
        return None
    steps = [r["step"] for r in rows]
    return {"loss": line_chart(steps, [r.get("loss") for r in rows], "step", "loss"),
            "lr": line_chart(steps, [r.get("lr") for r in rows], "step", "learning rate", colour="#059669"),
            "grad_norm": line_chart(steps, [r.get("grad_norm") for r in rows], "step", "grad norm",
                                    colour="#9333ea"),
            "summary": _read_optional(run_dir / "train_summary.json") or {},
            "curves": learning_curves(run_dir)}


def _flat_rows(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested dicts as dotted ``key = value`` rows (the names ``--set`` takes), lists kept compact."""
    if not isinstance(data, dict):
        return []
    rows: list[tuple[str, str]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            rows += _flat_rows(value, f"{prefix}{key}.")
        else:
            text = value if isinstance(value, str) else json.dumps(value)
            rows.append((prefix + key, text if len(text) <= 300 else text[:300] + " …"))
    return rows
