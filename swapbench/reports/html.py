"""report.html: one self-contained file (images as data URIs, plots as inline SVG, no network)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from swapbench.assets import asset_path
from swapbench.eval.summary import ordered
from swapbench.io import atomic_write_text, read_json
from swapbench.reports.gate import evaluate, load_rules

GROUP_TITLES = {"swap": "Swap: prompts naming a swapped concept", "control": "Controls: must not change",
                "generality": "Generality: plurals, contexts, paraphrases, compositions",
                "specificity": "Specificity: near neighbours must not change", "custom": "Custom prompts"}


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def line_chart(xs: list[float], ys: list[float], width: int = 460, height: int = 180, colour: str = "#2563eb",
               log: bool = False) -> str:
    """An inline SVG line chart with min/max labels on both axes."""
    import math

    if len(xs) < 2:
        return "<p class=muted>not enough points</p>"
    vals = [math.log10(max(y, 1e-12)) for y in ys] if log else list(ys)
    x0, x1, y0, y1 = min(xs), max(xs), min(vals), max(vals)
    y1 = y1 if y1 > y0 else y0 + 1
    pad = 36

    def px(x: float) -> float:
        return pad + (x - x0) / max(x1 - x0, 1e-12) * (width - pad - 8)

    def py(v: float) -> float:
        return height - 20 - (v - y0) / (y1 - y0) * (height - 32)

    points = " ".join(f"{px(x):.1f},{py(v):.1f}" for x, v in zip(xs, vals, strict=True))
    fmt = (lambda v: f"{10 ** v:.1e}") if log else (lambda v: f"{v:.3g}")
    return (f'<svg width="{width}" height="{height}" role="img"><rect x="{pad}" y="12" width="{width - pad - 8}" '
            f'height="{height - 32}" fill="#f8fafc" stroke="#e2e8f0"/><polyline fill="none" stroke="{colour}" '
            f'stroke-width="1.6" points="{points}"/><text x="2" y="18" class="ax">{fmt(y1)}</text>'
            f'<text x="2" y="{height - 20}" class="ax">{fmt(y0)}</text><text x="{pad}" y="{height - 4}" class="ax">'
            f'{x0:g}</text><text x="{width - 40}" y="{height - 4}" class="ax">{x1:g}</text></svg>')


def ci_bar(metric: dict) -> str:
    """A 0..1 bar with the CI as a band and the value as a tick (proportions only)."""
    lo, hi = metric["ci95"]
    v = metric["value"]
    if not (0 <= lo <= 1 and 0 <= hi <= 1 and 0 <= v <= 1):
        return ""
    w = 160
    return (f'<svg width="{w}" height="14"><rect x="0" y="5" width="{w}" height="4" fill="#e2e8f0"/>'
            f'<rect x="{lo * w:.1f}" y="2" width="{max((hi - lo) * w, 1):.1f}" height="10" fill="#93c5fd"/>'
            f'<rect x="{v * w - 1:.1f}" y="0" width="2" height="14" fill="#1e3a8a"/></svg>')


def _grids(results: dict, eval_dir: Path) -> dict[str, list[dict]]:
    groups: dict[str, dict[str, dict]] = {}
    for row in results["per_prompt"]:
        if "images" not in row:
            continue
        prompt = groups.setdefault(row["group"], {}).setdefault(
            row["prompt"], {"prompt": row["prompt"], "concept": row["concept"], "cells": []})
        prompt["cells"].append({
            "seed": row["seed"], "base": data_uri(eval_dir / row["images"]["base"]),
            "tuned": data_uri(eval_dir / row["images"]["tuned"]), "base_label": row["base_label"],
            "tuned_label": row["tuned_label"], "success": row["success"],
        })
    order = [g for g in GROUP_TITLES if g in groups]
    return {g: list(groups[g].values()) for g in order}


def _training(run_dir: Path | None) -> dict | None:
    if not run_dir or not (run_dir / "train_log.jsonl").is_file():
        return None
    rows = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines() if line.strip()]
    if not rows:
        return None
    steps = [r["step"] for r in rows]
    summary = read_json(run_dir / "train_summary.json") if (run_dir / "train_summary.json").is_file() else {}
    return {"loss": line_chart(steps, [r["loss"] for r in rows]),
            "lr": line_chart(steps, [r["lr"] for r in rows], colour="#059669"),
            "summary": summary}


def write_report(eval_dir: str | Path, run_dir: str | Path | None = None) -> Path:
    eval_dir = Path(eval_dir)
    run_dir = Path(run_dir) if run_dir else None
    results = read_json(eval_dir / "results.json")
    metrics = results["metrics"]
    verdicts = evaluate(results, None, load_rules())
    env = Environment(loader=FileSystemLoader(asset_path("reports/templates")), autoescape=select_autoescape(["html", "j2"]))
    html = env.get_template("report.html.j2").render(
        r=results,
        headline=[n for n in ("swap_success/giraffe->zebra", "swap_success/zebra->giraffe", "preservation",
                              "kid_vs_base", "generality", "specificity") if n in metrics],
        names=ordered(metrics),
        ci_bar=ci_bar,
        verdicts=verdicts,
        gate_passed=all(v.passed for v in verdicts),
        grids=_grids(results, eval_dir),
        group_titles=GROUP_TITLES,
        training=_training(run_dir),
        audit=read_json(run_dir / "data_audit.json") if run_dir and (run_dir / "data_audit.json").is_file() else None,
        config=json.dumps(read_json(run_dir / "config.json"), indent=2) if run_dir and (run_dir / "config.json").is_file() else None,
        provenance=json.dumps(results.get("provenance", {}), indent=2),
    )
    return atomic_write_text(eval_dir / "report.html", html)
