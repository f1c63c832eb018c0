"""The terminal summary of an evaluation."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

HEADLINE_ORDER = ("swap_success", "source_retained", "preservation", "generality", "specificity",
                  "kid_vs_base", "fid_vs_base", "clip_score", "base_fidelity", "custom")


def ordered(metrics: dict) -> list[str]:
    def rank(name: str) -> tuple[int, str]:
        head = name.split("/")[0]
        head = "clip_score" if head.startswith("clip_score") else head
        head = "preservation" if head.startswith("preservation") else head
        return (HEADLINE_ORDER.index(head) if head in HEADLINE_ORDER else len(HEADLINE_ORDER), name)

    return sorted(metrics, key=rank)


def print_summary(results: dict, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"{results['run']} — suite {results['suite']}", title_justify="left")
    for col, justify in (("metric", "left"), ("value", "right"), ("95% CI", "right"), ("n", "right")):
        table.add_column(col, justify=justify)
    for name in ordered(results["metrics"]):
        m = results["metrics"][name]
        style = "bold" if "/" not in name else ""
        lo, hi = m["ci95"]
        table.add_row(name, f"{m['value']:.3f}", f"[{lo:.3f}, {hi:.3f}]", str(m["n"]), style=style)
    console.print(table)
    t = results["timing"]
    console.print(f"sampled {t['base_sampled']} base (+{t['base_cached']} cached) and {t['tuned_sampled']} tuned images "
                  f"in {t['sampling_s']:.0f} s; total {t['total_s']:.0f} s")
