"""False-alarm and detection rates of the gate's paired baseline rule, measured on real re-runs.

K runs of one recipe (default: the savanna preset) that differ only in the training seed: the first
is the baseline, each other one is gated against it with the baseline rules of the rules file
(``eval/gates/default.yaml``; thresholds are left out, they judge a run, not a difference). A gate
that fails one of them is a false alarm. Then runs with a known regression, each with its own
training seed, gated the same way: a gate that fails them is a detection. Regressions:

- ``quarter-steps``: ``train.max_steps`` a quarter of the recipe's;
- ``lr-div10``: ``train.lr`` ten times lower.

Both the paired rule (``test: paired``) and the old disjoint-intervals rule (``test: ci-overlap``)
are applied to the same pairs, so one run measures both. Each run is trained once and evaluated on
every suite of ``--suites``; ``--subsets`` gates a smaller suite on the rows it shares with the last
one (the default suite is the gate suite's prompts with fewer seeds), and ``--inject DROP`` measures
the power for a drop of DROP placed in one endpoint of the real seed re-runs. Run it with one
thread per process: three 2-thread torch processes on 2 cores slowed each other to 5 img/s, against
~95 with one thread each. Measured on a 2-core machine shared with 3-4 other jobs: 2-3.5 min per
training, 2.5-5 min per gate-suite evaluation; K = 8 with 4 runs per regression took ~95 minutes:

    OMP_NUM_THREADS=1 python benchmarks/gate_calibration.py --k 8 --per-regression 4 --suites gate \
        --subsets default --inject 0.1 --work /tmp/calib

It prints Markdown tables (those in docs/ci.md) and a JSON line with every verdict.

``--simulate N`` checks the same gate code on N synthetic pairs of evaluations in seconds, with
no training: the default suite's groups, prompts and seeds, and each row's outcome from a probit
model with a prompt effect (prompts differ in difficulty), a (prompt, seed) effect shared by both
runs (the same noise makes a similar image) and run noise. Null pairs draw both runs from the same
model; regressed pairs shift one group down. It measures the test's level and power under the
clustering the intervals assume, not the training recipe's own seed-to-seed spread.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from swapbench import schema
from swapbench.assets import asset_path
from swapbench.config import load_config
from swapbench.eval.paired import check_pairable
from swapbench.reports.gate import evaluate, load_results, load_rules

REGRESSIONS = {"quarter-steps": lambda cfg: [f"train.max_steps={max(1, cfg.train.max_steps // 4)}"],
               "lr-div10": lambda cfg: [f"train.lr={cfg.train.lr / 10:g}"]}


def train(work: Path, name: str, seed: int, overrides: list[str], preset: str) -> Path:
    run = work / name
    if not (run / "train_summary.json").is_file():
        sets = [x for o in overrides for x in ("--set", o)]
        subprocess.run([sys.executable, "-m", "swapbench", "train", "--preset", preset, "--out", str(work),
                        "--name", name, "--seed", str(seed), *sets], check=True, stdout=subprocess.DEVNULL)
    return run


def subset(results: dict, suite: str) -> dict:
    """The rows of ``results`` that ``suite`` scores (the same prompts with fewer seeds), re-scored: what
    an evaluation on ``suite`` would have written, since an image depends only on its model, prompt, seed
    and sampler. KID/FID need image features that results.json does not keep, so they are left out."""
    from swapbench.eval.scoring import score_rows
    from swapbench.eval.suite import load_suite

    spec = load_suite(suite, None, schema.edits(results))
    keys = {(item.group, item.prompt, seed) for item in spec.items for seed in item.seeds}
    rows = [r for r in results["per_prompt"] if (r["group"], r["prompt"], r["seed"]) in keys]
    missing = len(keys) - len(rows)
    if missing:
        raise SystemExit(f"{missing} rows of suite {suite} are not in the evaluation of {results['run']}")
    return {**results, "suite": suite, "per_prompt": rows, "provenance": {},
            "metrics": score_rows(rows, schema.edits(results), 2000, 0)}


def evaluate_run(run: Path, suite: str) -> Path:
    """The run's evaluation on ``suite``: RUN/eval for the default suite (what `swapbench eval` writes),
    RUN/eval-SUITE for the others, so one set of trained runs is measured on several suites."""
    out = run / ("eval" if suite == "default" else f"eval-{suite}")
    if not (out / "results.json").is_file():
        subprocess.run([sys.executable, "-m", "swapbench", "eval", str(run), "--suite", suite, "--out", str(out)],
                       check=True, stdout=subprocess.DEVNULL)
    return out / "results.json"


def baseline_rules(test: str) -> list[dict]:
    rules = [dict(r) for r in load_rules(asset_path("eval/gates/default.yaml")) if "baseline" in r]
    for r in rules:
        r["test"] = test
    return rules


def gate(results: dict, baseline: dict, test: str) -> tuple[bool, list[str]]:
    check_pairable(results, baseline)
    verdicts = evaluate(results, baseline, baseline_rules(test))
    failed = [v.metric for v in verdicts if not v.passed]
    return not failed, failed


SIM_GROUPS = {  # group: (prompts, seeds, mean probit of success, prompt spread)
    "swap": (8, 10, 1.8, 0.6), "control": (8, 6, 2.3, 0.5), "generality": (16, 2, 1.2, 0.7),
    "specificity": (8, 3, 1.8, 0.6)}
SIM_REGRESSIONS = {"swap -0.8 probit": ("swap", 0.8), "swap -1.5 probit": ("swap", 1.5),
                   "control -1.5 probit": ("control", 1.5)}


def _sim_rows(rng, prompt_effects: dict, shared: dict, shift: tuple[str, float] | None, rho: float = 0.6) -> list[dict]:
    import numpy as np

    concepts = {"swap": ["giraffe", "zebra"], "control": ["elephant", "horse", "lion", "cow"],
                "generality": ["giraffe", "zebra"], "specificity": ["horse", "donkey", "deer", "okapi"]}
    rows = []
    for group, (prompts, seeds, _, _) in SIM_GROUPS.items():
        cs = concepts[group]
        for k in range(prompts):
            concept = cs[k % len(cs)]
            partner = {"giraffe": "zebra", "zebra": "giraffe"}.get(concept)
            a = prompt_effects[group][k] - (shift[1] if shift and shift[0] == group else 0.0)
            for seed in range(seeds):
                z = a + rho * shared[group][k, seed] + np.sqrt(1 - rho * rho) * rng.standard_normal()
                ok = bool(z > 0)
                base = concept
                tuned = (partner if ok else concept) if partner and group != "control" else (concept if ok else "cow")
                rows.append({"group": group, "kind": f"kind{k % 4}" if group == "generality" else group,
                             "concept": concept, "prompt": f"{group} prompt {k} {concept}", "seed": seed,
                             "base_label": base, "tuned_label": tuned, "success": ok})
    return rows


def simulate(n: int, seed: int = 0) -> list[tuple]:
    """Share of simulated pairs the paired and ci-overlap rules fail: null pairs and each regression."""
    import numpy as np

    from swapbench.eval.scoring import score_rows

    rng = np.random.default_rng(seed)
    out = []
    for label, shift in [("null: same model twice (false alarms)", None), *SIM_REGRESSIONS.items()]:
        fails = {"paired": 0, "ci-overlap": 0}
        for _ in range(n):
            effects = {g: rng.normal(mu, sd, prompts) for g, (prompts, _, mu, sd) in SIM_GROUPS.items()}
            shared = {g: rng.standard_normal((prompts, seeds)) for g, (prompts, seeds, _, _) in SIM_GROUPS.items()}
            pair = []
            for which in ("baseline", "run"):
                rows = _sim_rows(rng, effects, shared, shift if which == "run" else None)
                pair.append({"schema_version": 1, "run": which, "suite": "sim", "swap_pairs": [["giraffe", "zebra"]],
                             "metrics": score_rows(rows, [["giraffe", "zebra"]], 500, 0), "per_prompt": rows})
            for test in fails:
                fails[test] += not gate(pair[1], pair[0], test)[0]
        out.append((label, n, fails["paired"], fails["ci-overlap"]))
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=5, help="seed re-runs of the recipe, the first is the baseline")
    parser.add_argument("--per-regression", type=int, default=2, help="runs per known regression")
    parser.add_argument("--regressions", default=",".join(REGRESSIONS), help="which: " + ", ".join(REGRESSIONS))
    parser.add_argument("--preset", default="savanna")
    parser.add_argument("--suites", default="default", help="comma-separated suites to evaluate every run on")
    parser.add_argument("--subsets", help="comma-separated suites whose rows are a subset of the last of --suites "
                        "(the same prompts, fewer seeds): gated on those rows, re-scored, without sampling again")
    parser.add_argument("--work", help="folder for the runs and their evaluations (kept: a second call reuses them)")
    parser.add_argument("--train-only", choices=["seeds", "regressions"],
                        help="only train and evaluate that half, without gating (two calls can share a --work "
                        "folder; a last call without this flag gates everything)")
    parser.add_argument("--inject", type=float, metavar="DROP",
                        help="also gate the seed re-runs with DROP injected into each headline endpoint (power)")
    parser.add_argument("--simulate", type=int, metavar="N", help="N synthetic pairs per case instead of training")
    args = parser.parse_args(argv)
    if args.simulate:
        rows = simulate(args.simulate)
        print("| simulated pairs (default-suite shape) | n | failed, paired rule | failed, ci-overlap rule |")
        print("| --- | ---: | ---: | ---: |")
        for label, n, paired, overlap in rows:
            print(f"| {label} | {n} | {paired}/{n} | {overlap}/{n} |")
        return {"simulated": rows}
    work = Path(args.work or tempfile.mkdtemp(prefix="gate-calibration-"))
    work.mkdir(parents=True, exist_ok=True)
    runs = train_runs(work, args)
    if args.train_only:
        return {"work": str(work), "trained": sorted(runs)}
    summary = {"work": str(work), "k": args.k, "rules": yaml.safe_dump(baseline_rules("paired")), "suites": {}}
    suites = args.suites.split(",")
    for suite in suites:
        results = {name: load_results(evaluate_run(run, suite)) for name, run in runs.items()}
        summary["suites"][suite] = measure(results, suite, args)
    for suite in filter(None, (args.subsets or "").split(",")):  # rows of the last suite's evaluations
        label = f"{suite} (rows of {suites[-1]})"
        summary["suites"][label] = measure({name: subset(r, suite) for name, r in results.items()}, label, args)
    print(json.dumps(summary))
    return summary


def measure(results: dict[str, dict], label: str, args: argparse.Namespace) -> dict:
    """The calibration table of one suite's evaluations, and the injected power table when asked."""
    table = calibration_table(results, label, args)
    if args.inject:
        table["injected"] = power_table(results, label, args.inject, args)
    return table


def train_runs(work: Path, args: argparse.Namespace) -> dict[str, Path]:
    """seed0..seed{K-1} of the recipe, then per regression R runs with training seeds 100.."""
    cfg = load_config(args.preset, None, [])
    runs = {} if args.train_only == "regressions" else {
        f"seed{s}": train(work, f"seed{s}", s, [], args.preset) for s in range(args.k)}
    for reg in regressions(args):
        for seed in range(100, 100 + args.per_regression):
            runs[f"{reg}-seed{seed}"] = train(work, f"{reg}-seed{seed}", seed, REGRESSIONS[reg](cfg), args.preset)
    if args.train_only:
        for run in runs.values():
            evaluate_run(run, args.suites.split(",")[0])
    return runs


def regressions(args: argparse.Namespace) -> list[str]:
    return [r for r in args.regressions.split(",") if r] if args.train_only != "seeds" else []


def calibration_table(results: dict[str, dict], suite: str, args: argparse.Namespace) -> dict:
    """Print and return the false alarms (seed re-runs) and detections (each regression) of both tests."""
    baseline = results["seed0"]
    groups = {"same recipe, other seed (false alarms)": [f"seed{s}" for s in range(1, args.k)]}
    groups.update({f"{reg} (detections)": [n for n in results if n.startswith(reg + "-")] for reg in regressions(args)})
    verdicts, rows = {}, []
    for label, names in groups.items():
        counts = {}
        for test in ("paired", "ci-overlap"):
            failed = {name: gate(results[name], baseline, test)[1] for name in names}
            verdicts.update({f"{name}/{test}": f for name, f in failed.items()})
            counts[test] = sum(bool(f) for f in failed.values())
        rows.append((label, len(names), counts["paired"], counts["ci-overlap"],
                     *(_span([results[n]["metrics"][m]["value"] for n in names]) for m in HEADLINE)))
    base_m = baseline["metrics"]
    print(f"\nsuite {suite}, preset {args.preset}; baseline seed0: "
          + ", ".join(f"{m} {base_m[m]['value']:.3f} (n = {base_m[m]['n']})" for m in HEADLINE))
    print("| runs gated against seed0 | n | failed, paired rule | failed, ci-overlap rule | "
          + " | ".join(HEADLINE) + " |")
    print("| --- | ---: | ---: | ---: |" + " --- |" * len(HEADLINE))
    for label, n, paired, overlap, *spans in rows:
        print(f"| {label} | {n} | {paired}/{n} | {overlap}/{n} | " + " | ".join(spans) + " |")
    return {"rows": rows, "verdicts": verdicts}


def injected(results: dict, metric: str, drop: float, concentrated: bool, rng) -> dict:
    """``results`` with a known drop in ``metric``: ``round(drop * n)`` of its successful rows made to
    fail, either spread at random over its rows or whole prompts at a time (a regression that breaks a
    few prompts). A swap row that fails keeps the prompted concept; a control row is drawn as another
    label. The real seed-to-seed spread of the re-runs stays in every row left alone."""
    import copy

    from swapbench import catalog
    from swapbench.eval.scoring import score_rows

    out = copy.deepcopy(results)
    rows = [r for r in catalog.rows_for(metric, out["per_prompt"]) if r["success"]]
    if concentrated:
        prompts = list(dict.fromkeys(r["prompt"] for r in rows))
        order = {p: i for i, p in enumerate(rng.permutation(prompts))}
        rows.sort(key=lambda r: order[r["prompt"]])
    else:
        rows = [rows[i] for i in rng.permutation(len(rows))]
    n = len(catalog.rows_for(metric, out["per_prompt"]))
    for row in rows[:round(drop * n)]:
        row["success"] = False
        row["tuned_label"] = row["concept"] if row["group"] == "swap" else next(
            label for label in out["labels"] if label != row["base_label"])
    out["metrics"] = {**out["metrics"], **score_rows(out["per_prompt"], schema.edits(out), 2000, 0)}
    return out


DRAWS = 5  # injected drops per seed re-run: which rows or prompts break is drawn anew each time


def power_table(results: dict[str, dict], suite: str, drop: float, args: argparse.Namespace) -> list[tuple]:
    """Share of seed re-runs with ``drop`` injected into one headline endpoint that the paired rule fails
    (``DRAWS`` draws of the broken rows per re-run)."""
    import numpy as np

    rng = np.random.default_rng(0)
    baseline, reruns = results["seed0"], [results[f"seed{s}"] for s in range(1, args.k)]
    rows = []
    for metric in HEADLINE:
        for concentrated in (False, True):
            caught = [not gate(injected(r, metric, drop, concentrated, rng), baseline, "paired")[0]
                      for r in reruns for _ in range(DRAWS)]
            rows.append((metric, "whole prompts" if concentrated else "spread", sum(caught), len(caught)))
    print(f"\nsuite {suite}: {len(reruns)} seed re-runs x {DRAWS} draws with a drop of {drop:g} injected into one "
          "endpoint, paired rule")
    print("| endpoint | drop placed | caught |")
    print("| --- | --- | ---: |")
    for metric, how, caught, n in rows:
        print(f"| {metric} | {how} | {caught}/{n} |")
    return rows


HEADLINE = ("swap_success/giraffe->zebra", "swap_success/zebra->giraffe", "preservation")


def _span(values: list[float]) -> str:
    return f"{min(values):.3f}-{max(values):.3f}" if values else "-"


if __name__ == "__main__":
    main()
