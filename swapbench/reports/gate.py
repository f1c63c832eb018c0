"""Gate rules as data: absolute thresholds and "no worse than the baseline beyond its CI".

A metric's direction comes from its ``higher_is_better`` field in results.json. A baseline
regression needs the two 95% intervals to be disjoint on the worse side, so noise alone does not
fail a build.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from swapbench.assets import asset_path
from swapbench.errors import UserError

SCHEMA_VERSION = 1


@dataclass
class Verdict:
    rule: str
    metric: str
    value: float | None
    reference: str
    passed: bool

    def to_dict(self) -> dict:
        return asdict(self)


def load_results(path_or_run: str | Path) -> dict:
    """results.json from a file or a run directory; anything incomplete is an input error (never a pass)."""
    path = Path(path_or_run)
    if path.is_dir():
        path = path / "eval" / "results.json" if (path / "eval" / "results.json").is_file() else path / "results.json"
    if not path.is_file():
        raise UserError(f"results file {path} not found; run `swapbench eval` first or pass a results.json path")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise UserError(f"results file {path} is truncated or not JSON ({e}); re-run `swapbench eval`") from None
    if not isinstance(results, dict) or results.get("schema_version") != SCHEMA_VERSION:
        found = results.get("schema_version") if isinstance(results, dict) else None
        raise UserError(f"results file {path} has schema_version {found!r}, this swapbench reads {SCHEMA_VERSION}; "
                        "re-run `swapbench eval` with this version")
    if not isinstance(results.get("metrics"), dict) or not results["metrics"]:
        raise UserError(f"results file {path} holds no metrics; re-run `swapbench eval`")
    return results


def load_rules(path: str | Path | None = None) -> list[dict]:
    path = Path(path) if path else asset_path("eval/gates/default.yaml")
    if not path.is_file():
        raise UserError(f"gate rules file {path} not found")
    try:
        rules = yaml.safe_load(path.read_text(encoding="utf-8"))["rules"]
    except (yaml.YAMLError, KeyError, TypeError) as e:
        raise UserError(f"gate rules file {path} is malformed ({type(e).__name__}); it needs a list under 'rules'") from None
    for rule in rules:
        if not isinstance(rule, dict) or not ({"metric"} <= set(rule) and ({"min", "max"} & set(rule)) or "baseline" in rule):
            raise UserError(f"gate rule {rule!r} in {path} needs metric + min/max, or baseline: all")
    return rules


def evaluate(results: dict, baseline: dict | None = None, rules: list[dict] | None = None) -> list[Verdict]:
    rules = rules if rules is not None else load_rules()
    metrics = results["metrics"]
    verdicts = []
    for rule in rules:
        if "baseline" in rule:
            if baseline is not None:
                verdicts += _versus_baseline(metrics, baseline["metrics"])
            continue
        name = rule["metric"]
        m = metrics.get(name)
        value = m["value"] if m else None
        if "min" in rule:
            ok, ref = value is not None and value >= rule["min"], f">= {rule['min']}"
        else:
            ok, ref = value is not None and value <= rule["max"], f"<= {rule['max']}"
        verdicts.append(Verdict("threshold", name, value, ref if m else f"{ref} (metric missing)", bool(ok)))
    return verdicts


def _versus_baseline(metrics: dict, base: dict) -> list[Verdict]:
    out = []
    for name, m in metrics.items():
        b = base.get(name)
        if b is None or m.get("higher_is_better") is None:
            continue
        lo, hi = m["ci95"]
        blo, bhi = b["ci95"]
        worse = hi < blo if m["higher_is_better"] else lo > bhi
        out.append(Verdict("vs baseline", name, m["value"], f"baseline {b['value']:.3f} [{blo:.3f}, {bhi:.3f}]", not worse))
    return out
