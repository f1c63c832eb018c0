"""Learning curves from ``RUN/eval_log.jsonl``: each edit's success (swap and remap directions, erased
concepts) and preservation against the step, each with its 95% interval as a band, for report.html (one
run) and compare.html (several runs overlaid)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from pathlib import Path

from swapbench.reports.svg import Frame, _svg

PALETTE = ("#2563eb", "#dc2626", "#059669", "#9333ea", "#ea580c", "#0891b2", "#4d7c0f", "#be185d")


@dataclass(frozen=True)
class Curve:
    """One metric against the step: (step, value, lo, hi) points, drawn as a line over its interval band."""

    label: str
    points: list[tuple[float, float, float, float]]
    colour: str = PALETTE[0]
    dashed: bool = False


def read_curve(rows: list[dict], metric: str, label: str, colour: str = PALETTE[0], dashed: bool = False) -> Curve:
    points = []
    for row in rows:
        m = row.get("metrics", {}).get(metric)
        if m and all(isinstance(v, (int, float)) and math.isfinite(v) for v in (m["value"], *m["ci95"])):
            points.append((row["step"], m["value"], m["ci95"][0], m["ci95"][1]))
    return Curve(label, points, colour, dashed)


def curve_chart(curves: list[Curve], y_label: str, target: float | None = None, mark_step: int | None = None,
                width: int = 370, height: int = 220, legend: bool = True) -> str:
    """Lines with interval bands on a 0..1 axis; a dashed red line marks the gate floor and a grey one the
    step whose weights were exported (``train.select``)."""
    curves = [c for c in curves if c.points]
    if not curves:
        return '<p class="muted">nothing evaluated</p>'
    steps = [p[0] for c in curves for p in c.points] + ([mark_step] if mark_step is not None else [])
    x0, x1 = min(steps), max(steps)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    frame = Frame(x0, x1, 0.0, 1.0, width, height, top=20)
    body = [frame.panel("step", y_label, x_text=lambda v: f"{v:.0f}")]
    if target is not None:
        body.append(f'<line x1="{frame.left}" y1="{frame.py(target):.1f}" x2="{width - frame.right}" '
                    f'y2="{frame.py(target):.1f}" stroke="#dc2626" stroke-dasharray="4 3"/>')
    if mark_step is not None:
        body.append(f'<line x1="{frame.px(mark_step):.1f}" y1="{frame.top}" x2="{frame.px(mark_step):.1f}" '
                    f'y2="{height - frame.bottom}" stroke="#64748b" stroke-dasharray="2 3">'
                    f'<title>exported weights: step {mark_step}</title></line>')
    for c in curves:
        upper = [f"{frame.px(s):.1f},{frame.py(hi):.1f}" for s, _, _, hi in c.points]
        lower = [f"{frame.px(s):.1f},{frame.py(lo):.1f}" for s, _, lo, _ in reversed(c.points)]
        body.append(f'<polygon points="{" ".join(upper + lower)}" fill="{c.colour}" '
                    'fill-opacity="0.13" stroke="none"/>')
        line = " ".join(f"{frame.px(s):.1f},{frame.py(v):.1f}" for s, v, _, _ in c.points)
        dash = ' stroke-dasharray="5 3"' if c.dashed else ""
        body.append(f'<polyline fill="none" stroke="{c.colour}" stroke-width="1.6"{dash} points="{line}"/>')
        for s, v, lo, hi in c.points:
            body.append(f'<circle cx="{frame.px(s):.1f}" cy="{frame.py(v):.1f}" r="2.5" fill="{c.colour}">'
                        f'<title>{escape(c.label)} step {s:.0f}: {v:.3f} [{lo:.3f}, {hi:.3f}]</title></circle>')
    x = frame.left + 4
    for c in curves if legend else []:  # along the top edge
        body.append(f'<text x="{x}" y="13" class="ax" fill="{c.colour}">{escape(c.label)}</text>')
        x += 7 * len(c.label) + 14
    return _svg(width, height, "".join(body), f"{y_label} vs step")


EDIT_CURVES = ("swap_success", "remap_success", "erase_success")
"""The families drawn as one curve per edit: a swap or remap direction, an erased concept."""


def gate_floor(*prefixes: str) -> float | None:
    """The default gate's strictest floor on ``prefix`` or ``prefix/...`` of any of ``prefixes`` (drawn as
    the dashed target)."""
    from swapbench.reports.gate import load_rules

    floors = [r["min"] for r in load_rules() if "min" in r and any(
        r.get("metric") == p or str(r.get("metric", "")).startswith(p + "/") for p in prefixes)]
    return max(floors) if floors else None


def edit_curves(rows: list[dict]) -> list[tuple[str, str]]:
    """(metric, label) of every edit the log scored, in table order (by name within a family):
    ``swap_success/A->B`` labelled ``A->B``, ``remap_success/A->B`` the same, ``erase_success/A`` ``erase A``."""
    from swapbench import catalog

    names = catalog.ordered(sorted({n for row in rows for n in row.get("metrics", {})
                                    if n.partition("/")[0] in EDIT_CURVES and "/" in n}))
    return [(n, f"erase {n.split('/', 1)[1]}" if n.startswith("erase_success/") else n.split("/", 1)[1])
            for n in names]


def learning_curves(run_dir: str | Path) -> dict | None:
    """report.html's curves of one run: each edit's success and preservation, with the exported step."""
    from swapbench.io import read_json
    from swapbench.rundir import RunDir

    rows = RunDir(Path(run_dir)).eval_rows()
    if not rows:
        return None
    summary_file = Path(run_dir) / "train_summary.json"
    selected = (read_json(summary_file).get("selected") if summary_file.is_file() else None) or {}
    mark = selected.get("step") if selected.get("policy", "last") != "last" else None
    edits = [read_curve(rows, name, label, PALETTE[i % len(PALETTE)])
             for i, (name, label) in enumerate(edit_curves(rows))]
    passed = [r["step"] for r in rows if r.get("gate", {}).get("passed")]
    return {"edits": curve_chart(edits, "edit success", gate_floor(*EDIT_CURVES), mark),
            "preservation": curve_chart([read_curve(rows, "preservation", "preservation", PALETTE[2])],
                                        "preservation", gate_floor("preservation"), mark),
            "suite": rows[-1].get("suite"), "steps": [r["step"] for r in rows],
            "first_pass": passed[0] if passed else None, "selected": selected or None,
            "seconds": round(sum(r.get("wall_s", 0) for r in rows), 1)}


def overlay_curves(runs: list[tuple[str, str | Path, str]]) -> dict | None:
    """compare.html: every run's curves on shared axes (``runs``: label, run folder, colour); the edits of
    one run share its colour, every second one dashed."""
    from swapbench.rundir import RunDir

    edits, keep = [], []
    for label, folder, colour in runs:
        rows = RunDir(Path(folder)).eval_rows() if folder else []
        if not rows:
            continue
        for k, (name, edit) in enumerate(edit_curves(rows)):
            edits.append(read_curve(rows, name, f"{label} {edit}", colour, dashed=k % 2 == 1))
        keep.append(read_curve(rows, "preservation", label, colour))
    if not keep:
        return None
    return {"edits": curve_chart(edits, "edit success", gate_floor(*EDIT_CURVES), width=560, height=300,
                                 legend=False),
            "preservation": curve_chart(keep, "preservation", gate_floor("preservation"), width=560, height=300,
                                        legend=False)}
