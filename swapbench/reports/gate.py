"""Gate rules as data: absolute thresholds and "no metric worse than the baseline beyond its CI".

Rules live in YAML (``eval/gates/default.yaml``)::

    rules:
      - metric: swap_success/{a}->{b}         # threshold on the metric's value; {a}->{b} stands
        min: 0.9                              # for every swap direction of the results' edits
      - metric: erase_success/{a}             # {a}: every erased concept (skipped without an erasure)
        min: 0.9
      - metric: preservation                  # and/or max:
        min: 0.95
      - baseline: all                         # or a list of metric name patterns (fnmatch)
        exclude: ["base_fidelity/*"]          # optional patterns to leave out
        test: paired                          # the default; ci-overlap: the old disjoint-intervals rule
        adjust: none                          # or holm (the default): across the metrics compared
        margins: {"preservation*": 0.05}      # largest tolerated drop per pattern (first match; else 0)

A template expands over the edits the results record (``rule_metrics``): ``swap_success/{a}->{b}`` over
swap directions, ``remap_success/{a}->{b}`` over remaps, ``erase_success/{a}`` over erased concepts,
``erase_anchor/{a}->{b}`` over anchored erasures. A template that no edit of the run binds is skipped,
not missing, so one file gates every kind of run; rules that gate nothing at all are an input error.

A metric's direction comes from the metric table (``swapbench.catalog``; a metric outside it
keeps its results.json ``higher_is_better``; ``null``: no direction, not compared).

``test: paired`` compares the (prompt, seed) rows both evaluations share: a metric fails when its
point drop exceeds its margin and the run is significantly worse on those rows (one-sided 5%,
``paired.worse_p``: exact McNemar for shares, a paired t-test for means), with ``adjust: holm`` (the
default for a rule file) or ``none`` (the shipped file: each headline metric a primary endpoint).
Metrics without per-prompt rows (KID, FID) or results files without rows fall back to
``ci-overlap``: a regression needs the two 95% intervals to be disjoint on the worse side.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from swapbench import schema
from swapbench.assets import asset_path
from swapbench.errors import UserError

RULE_KEYS = {"metric", "min", "max", "baseline", "exclude", "description", "test", "margins", "adjust"}
TESTS = ("paired", "ci-overlap")
ADJUSTMENTS = ("holm", "none")
ALPHA = 0.05


@dataclass
class Verdict:
    """One rule applied to one metric. ``value`` is None when the metric is absent (never a pass)."""

    rule: str
    metric: str
    value: float | None
    reference: str
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def results_path(path_or_run: str | Path) -> Path:
    """A results.json path from itself, a run directory (RUN/eval/results.json) or an eval directory."""
    path = Path(path_or_run)
    if path.is_dir():
        for candidate in (path / "eval" / "results.json", path / "results.json"):
            if candidate.is_file():
                return candidate
        return path / "eval" / "results.json"
    return path


def load_results(path_or_run: str | Path) -> dict[str, Any]:
    """Read and check results.json; anything missing, truncated or of another schema is a UserError."""
    path = results_path(path_or_run)
    if not path.is_file():
        raise UserError(f"results file {path} not found; run `swapbench eval` first or pass a results.json path")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise UserError(f"results file {path} is truncated or not JSON ({e}); re-run `swapbench eval`") from None
    if not isinstance(results, dict) or results.get("schema_version") != schema.SCHEMA_VERSION:
        found = results.get("schema_version") if isinstance(results, dict) else None
        raise UserError(f"results file {path} has schema_version {found!r}, this swapbench reads "
                        f"{schema.SCHEMA_VERSION}; re-run `swapbench eval` with this version")
    pairs = results.get("swap_pairs")
    if pairs is not None and not (isinstance(pairs, list) and all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(c, str) for c in p) for p in pairs)):
        raise UserError(f"results file {path}: swap_pairs must be a list of [A, B] concept pairs; "
                        "re-run `swapbench eval`")
    metrics = results.get("metrics")
    if not isinstance(metrics, dict) or not metrics:
        raise UserError(f"results file {path} holds no metrics; re-run `swapbench eval`")
    for name, metric in metrics.items():
        problem = _metric_problem(metric)
        if problem:
            raise UserError(f"results file {path}: metric {name!r} {problem}; it does not follow schema "
                            f"{schema.SCHEMA_VERSION}, re-run `swapbench eval`")
    return results


def _metric_problem(metric: Any) -> str | None:
    if not isinstance(metric, dict):
        return "is not an object"
    missing = [k for k in ("value", "ci95", "n", "higher_is_better") if k not in metric]
    if missing:
        return f"lacks {', '.join(missing)}"
    ci = metric["ci95"]
    if (not (isinstance(ci, list) and len(ci) == 2 and all(_is_number(v) for v in ci))
            or not _is_number(metric["value"])):
        return "needs a numeric value and ci95 [lo, hi]"
    if metric["higher_is_better"] not in (True, False, None):
        return "needs higher_is_better true, false or null"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def load_rules(path: str | Path | None = None) -> list[dict[str, Any]]:
    """Rules from YAML (default: the shipped eval/gates/default.yaml), each checked for shape."""
    path = Path(path) if path else asset_path("eval/gates/default.yaml")
    if not path.is_file():
        raise UserError(f"gate rules file {path} not found; pass an existing YAML file to --rules")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise UserError(f"gate rules file {path} does not parse ({str(e).splitlines()[0]}); fix its YAML") from None
    rules = data.get("rules") if isinstance(data, dict) else None
    if not isinstance(rules, list) or not rules:
        raise UserError(f"gate rules file {path} needs a non-empty list under 'rules'")
    for rule in rules:
        problem = _rule_problem(rule)
        if problem:
            raise UserError(f"gate rule {rule!r} in {path} {problem}; write metric: NAME with min:/max:, "
                            "or baseline: all")
    return rules


def _rule_problem(rule: Any) -> str | None:
    if not isinstance(rule, dict):
        return "is not a mapping"
    unknown = set(rule) - RULE_KEYS
    if unknown:
        return f"has unknown keys {sorted(unknown)}"
    if "baseline" in rule:
        patterns = rule["baseline"]
        if patterns != "all" and not (isinstance(patterns, list) and all(isinstance(p, str) for p in patterns)):
            return "needs baseline: all or a list of metric patterns"
        if rule.get("test", "paired") not in TESTS:
            return f"has test {rule.get('test')!r}; use one of {', '.join(TESTS)}"
        if rule.get("adjust", "holm") not in ADJUSTMENTS:
            return f"has adjust {rule.get('adjust')!r}; use one of {', '.join(ADJUSTMENTS)}"
        margins = rule.get("margins", {})
        if not isinstance(margins, dict) or not all(isinstance(k, str) and _is_number(v) and v >= 0
                                                    for k, v in margins.items()):
            return "needs margins as a mapping of metric pattern -> non-negative number"
        return None
    if not isinstance(rule.get("metric"), str):
        return "names no metric"
    bounds = [rule[k] for k in ("min", "max") if k in rule]
    if not bounds or not all(_is_number(b) for b in bounds):
        return "needs a numeric min: or max:"
    return None


def evaluate(results: dict, baseline: dict | None = None, rules: list | None = None) -> list[Verdict]:
    """Apply ``rules`` (default rules if None) to ``results``; baseline rules are skipped without a baseline."""
    rules = rules if rules is not None else load_rules()
    verdicts: list[Verdict] = []
    for rule in rules:
        if "baseline" in rule:
            if baseline is not None:
                verdicts += _versus_baseline(results, baseline, rule)
        else:
            verdicts += [_threshold(results["metrics"], rule, name) for name in rule_metrics(rule["metric"], results)]
    return verdicts


def rule_metrics(name: str, results: dict) -> list[str]:
    """The metrics a rule names in these results. A template (``{a}``, ``{b}``) expands over the run's
    edits: each metric an edit is scored by (``Edit.metrics``: ``swap_success/A->B``, ``remap_success/A->B``,
    ``erase_success/A``, ``erase_anchor/A->C``) binds ``{a}`` to its concept and ``{b}`` to its target or
    anchor, for the edits whose kind the template's family counts (``swap_success/{a}->{b}``: the swap
    directions; ``erase_success/{a}``: the erased concepts). So one rule file gates a giraffe<->zebra
    run, a remap and an erasure; a template no edit of the run binds names no metric (the rule is skipped)."""
    if "{a}" not in name and "{b}" not in name:
        return [name]
    from swapbench import catalog

    fam = catalog.family(name)
    out: list[str] = []
    for edit in run_edits(results):
        if fam is not None and edit.kind not in fam.groups:
            continue
        for metric in edit.metrics():
            a, arrow, b = metric.partition("/")[2].partition("->")
            if "{b}" in name and not arrow:
                continue
            out.append(name.replace("{a}", a).replace("{b}", b))
    return list(dict.fromkeys(out))


def run_edits(results: dict) -> list:
    """The edits the results record (none for a file that records neither edits nor swaps)."""
    return list(schema.edits(results)) if schema.edit_config(results) is not None else []


def _threshold(metrics: dict, rule: dict, name: str) -> Verdict:
    reference = " and ".join(f"{op} {rule[k]}" for k, op in (("min", ">="), ("max", "<=")) if k in rule)
    metric = metrics.get(name)
    if metric is None:
        return Verdict("threshold", name, None, f"{reference} (metric missing)", False)
    value = metric["value"]
    ok = not math.isnan(value) and rule.get("min", -math.inf) <= value <= rule.get("max", math.inf)
    return Verdict("threshold", name, value, reference, ok)


def _versus_baseline(results: dict, baseline: dict, rule: dict) -> list[Verdict]:
    from swapbench import catalog
    from swapbench.eval import paired, stats

    metrics, base = results["metrics"], baseline["metrics"]
    use_paired = rule.get("test", "paired") == "paired"
    verdicts: list[Verdict] = []
    tests: list[tuple[int, float, bool]] = []  # (verdict index, one-sided p, point drop beyond the margin)
    for name, b in base.items():
        up = catalog.higher_is_better(name, b)
        if not _selected(name, rule) or up is None:
            continue
        m = metrics.get(name)
        if m is None:
            verdicts.append(Verdict("vs baseline", name, None, f"baseline {b['value']:.4g} (metric missing)", False))
            continue
        x, y, _ = paired.matched(name, baseline, results) if use_paired and paired.pairable(name) else ([], [], [])
        if not x:
            verdicts.append(_ci_overlap(name, m, b, bool(up)))
            continue
        binary, margin = catalog.family(name).binary, margin_for(name, rule)
        diff = (sum(y) - sum(x)) / len(x)
        drop = -diff if up else diff
        tests.append((len(verdicts), paired.worse_p(x, y, binary, bool(up)), drop > margin))
        counted = " (rows worse {}, better {})".format(*paired.changed_rows(x, y, bool(up))) if binary else ""
        verdicts.append(Verdict("vs baseline (paired)", name, m["value"],
                                f"diff {diff:+.4g}{counted} vs baseline {b['value']:.4g}, margin {margin:g}", True))
    holm = rule.get("adjust", "holm") == "holm"
    ps = [p for _, p, _ in tests]
    for (i, _, beyond), p in zip(tests, stats.holm(ps) if holm else ps, strict=True):
        verdicts[i].passed = not (beyond and p < ALPHA)
        verdicts[i].reference += f", p_worse {p:.3g}" + (" (Holm)" if holm else "")
    return verdicts


def _selected(name: str, rule: dict) -> bool:
    patterns = ["*"] if rule["baseline"] == "all" else rule["baseline"]
    return any(fnmatch.fnmatchcase(name, p) for p in patterns) and not any(
        fnmatch.fnmatchcase(name, p) for p in rule.get("exclude", []))


def _ci_overlap(name: str, metric: dict, base: dict, up: bool) -> Verdict:
    """Without rows to pair: a regression only when the two 95% intervals are disjoint on the worse side."""
    (lo, hi), (blo, bhi) = metric["ci95"], base["ci95"]
    worse = hi < blo if up else lo > bhi
    return Verdict("vs baseline", name, metric["value"], f"baseline {base['value']:.4g} [{blo:.4g}, {bhi:.4g}]",
                   not worse)


def margin_for(name: str, rule: dict) -> float:
    """The first ``margins`` pattern that matches ``name``; 0 when none does."""
    for pattern, margin in (rule.get("margins") or {}).items():
        if fnmatch.fnmatchcase(name, pattern):
            return float(margin)
    return 0.0


def missing_metrics(verdicts: list[Verdict], results: dict) -> str | None:
    """A one-line message when a rule needs a metric the results lack, or when the rules gate nothing in
    these results (their templates name no edit of the run and no other rule applies): an input error,
    never a pass."""
    if not verdicts:
        edits = "; ".join(edit.describe() for edit in run_edits(results)) or "none recorded"
        return (f"the rules gate none of the metrics of run {results.get('run')!r} (its edits: {edits}); add a rule "
                "for them (e.g. metric: erase_success/{a} with min:) or one every run has (metric: preservation)")
    missing = [v.metric for v in verdicts if v.value is None]
    if not missing:
        return None
    close = difflib.get_close_matches(missing[0], list(results["metrics"]), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (f"results of run {results.get('run')!r} lack metric(s) {', '.join(missing)} that the rules need{hint}; "
            "evaluate with a suite that measures them (e.g. --suite default) or pass --rules without them")


def check_comparable(results: dict, baseline: dict) -> None:
    """Runs evaluated on different suites, seeds, samplers or prompts cannot be compared metric by metric."""
    from swapbench.eval.paired import check_pairable

    check_pairable(results, baseline)
