"""The terminal summary of an evaluation: headline metrics and the gate verdict first, the rest on request."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from swapbench import catalog, schema
from swapbench.eval import stats


def ordered(metrics: dict) -> list[str]:
    """Metric names in the metric table's order (``catalog.ordered``)."""
    return catalog.ordered(metrics)


def print_summary(results: dict, console: Console | None = None, show_all: bool = False) -> None:
    from swapbench.reports.gate import evaluate, load_rules

    console = console or Console()
    if not console.is_terminal:  # logs are read later, in full: do not wrap rows at 80 columns
        console.width = max(console.width, 160)
    metrics = results["metrics"]
    head = catalog.headline(metrics)
    names = ordered(metrics) if show_all else head
    table = Table(title=f"{results['run']} — suite {results['suite']}"
                  + ("" if show_all else f" (headline; {len(metrics) - len(head)} more with --all)"),
                  title_justify="left", caption="95% CI: prompts as clusters, t quantile (Wilson at the "
                  "cluster-bootstrap effective n for shares; cluster-bootstrap SE for means; prompt "
                  f"jackknife or re-splits for KID); under {stats.MIN_PROMPTS} prompts the whole range",
                  caption_justify="left")
    for col, justify in (("metric", "left"), ("value", "right"), ("95% CI", "right"), ("n", "right"),
                         ("prompts", "right")):
        table.add_column(col, justify=justify)
    for name in names:
        m = metrics[name]
        lo, hi = m["ci95"]
        table.add_row(name, f"{m['value']:.3f}", f"[{lo:.3f}, {hi:.3f}]", str(m["n"]), str(m.get("n_clusters", "")),
                      style="bold" if name in head else "")
    console.print(table)
    verdicts = evaluate(results, None, load_rules())
    failed = [v for v in verdicts if not v.passed]
    console.print(f"gate (default rules): {'[green]PASS[/]' if not failed else '[bold red]FAIL[/]'}"
                  + "".join(f"; {v.metric} {fmt_value(v.value)} not {v.reference}" for v in failed), soft_wrap=True)
    for line in judge_lines(results) + became_lines(results):
        console.print(line, soft_wrap=True, markup=False)
    from swapbench.eval.paired import what_moved

    moved = what_moved(results)
    if moved:
        console.print("moved from the base (paired, Holm p < 0.05): " + "; ".join(
            f"{m['metric']} {m['diff']:+.3f} [{m['ci95'][0]:+.3f}, {m['ci95'][1]:+.3f}]" for m in moved),
            soft_wrap=True)
    t = results.get("timing") or {}
    if "base_sampled" in t:
        console.print(f"sampled {t['base_sampled']} base (+{t['base_cached']} cached) and {t['tuned_sampled']} tuned "
                      f"images in {t['sampling_s']:.0f} s; total {t['total_s']:.0f} s", soft_wrap=True)


def became_lines(results: dict) -> list[str]:
    """One line per erased concept: the labels its images were judged as, tuned against base."""

    def counts(entry: dict, which: str) -> str:
        return ", ".join(f"{x['label']} {x[which]['count']}" for x in entry["labels"] if x[which]["count"])

    return [f"erased {e['concept']} became (n={e['n']}): {counts(e, 'tuned')}; base: {counts(e, 'base')}"
            for e in erased_became(results)]


def further_judges(results: dict) -> list[dict]:
    """Each further judge (``provenance.judges``): its name, spec and agreement entries with the primary."""
    metrics = results.get("metrics", {})
    return [{"name": name, "spec": about.get("spec", ""), "share": metrics.get(f"agreement/{name}/share"),
             "kappa": metrics.get(f"agreement/{name}/kappa")}
            for name, about in ((results.get("provenance") or {}).get("judges") or {}).items()]


def judge_lines(results: dict) -> list[str]:
    """One line per further judge: its agreement with the primary judge (its own metrics: ``--all``)."""
    primary = (results.get("provenance") or {}).get("judge", "")
    out = []
    for j in further_judges(results):
        parts = [f"{what} {m['value']:.3f} [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]"
                 for what, m in (("agreement", j["share"]), ("kappa", j["kappa"])) if m]
        n = f"n={j['share']['n']}, {j['share']['n_clusters']} prompts" if j["share"] else "no images"
        out.append(f"judge {j['name']} ({j['spec']}) vs {primary}: {', '.join(parts)} ({n}); "
                   f"its metrics: judge/{j['name']}/...")
    return out


def fmt_value(value: float | None) -> str:
    return "missing" if value is None else f"{value:.3f}"


def erased_became(results: dict) -> list[dict]:
    """For every erased concept: the labels the judge gave the base and the tuned images of its ``erase``
    rows, each with its count and share (the concept's own label first, then by the tuned count)."""
    rows = schema.rows(results)
    out = []
    for concept in dict.fromkeys(r["concept"] for r in rows if r.get("group") == "erase" and r.get("erased")):
        mine = [r for r in rows if r.get("group") == "erase" and r.get("concept") == concept]
        counts = {which: {} for which in ("base", "tuned")}
        for r in mine:
            for which in counts:
                label = r[f"{which}_label"]
                counts[which][label] = counts[which].get(label, 0) + 1
        labels = sorted(set(counts["base"]) | set(counts["tuned"]),
                        key=lambda label: (label != concept, -counts["tuned"].get(label, 0),
                                           -counts["base"].get(label, 0), label))
        n = len(mine)
        out.append({"concept": concept, "n": n, "anchor": mine[0].get("anchor"),
                    "labels": [{"label": label, "erased": label == concept,
                                **{which: {"count": c.get(label, 0), "share": c.get(label, 0) / n}
                                   for which, c in counts.items()}} for label in labels]})
    return out
