"""False-alarm and detection rates of the gate's paired baseline rule, measured on real re-runs.

K runs of one recipe (default: the savanna preset) that differ only in the training seed: the first
is the baseline, each other one is gated against it with the baseline rules of the rules file
(``eval/gates/default.yaml``; thresholds are left out, they judge a run, not a difference). A gate
that fails one of them is a false alarm. Then runs with a known regression, each with its own
training seed, gated the same way: a gate that fails them is a detection. Regressions:

- ``quarter-steps``: ``train.max_steps`` a quarter of the recipe's;
- ``lr-div10``: ``train.lr`` ten times lower.

Both the paired non-inferiority test (``test: paired``) and the old disjoint-intervals rule
(``test: ci-overlap``) are applied to the same pairs, so one run measures both. Each run is one
``swapbench train`` + ``swapbench eval`` (base samples are cached after the first evaluation).
On 2 CPU cores a savanna run is about 1.5-2 min idle; K = 5 and 2 runs per regression take ~20 min:

    python benchmarks/gate_calibration.py --k 5 --per-regression 2 --suite default --work /tmp/calib

It prints a Markdown table (the one in docs/ci.md) and a JSON line with every verdict.

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

from swapbench.assets import asset_path
from swapbench.config import load_config
from swapbench.eval.paired import check_pairable
from swapbench.reports.gate import evaluate, load_results, load_rules

REGRESSIONS = {"quarter-steps": lambda cfg: [f"train.max_steps={max(1, cfg.train.max_steps // 4)}"],
               "lr-div10": lambda cfg: [f"train.lr={cfg.train.lr / 10:g}"]}


def train_and_eval(work: Path, name: str, seed: int, overrides: list[str], preset: str, suite: str) -> Path:
    run = work / name
    if not (run / "eval" / "results.json").is_file():
        sets = [x for o in overrides for x in ("--set", o)]
        cmd = [sys.executable, "-m", "swapbench"]
        subprocess.run([*cmd, "train", "--preset", preset, "--out", str(work), "--name", name, "--seed", str(seed),
                        *sets], check=True, stdout=subprocess.DEVNULL)
        subprocess.run([*cmd, "eval", str(run), "--suite", suite], check=True, stdout=subprocess.DEVNULL)
    return run / "eval" / "results.json"


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
    parser.add_argument("--suite", default="default")
    parser.add_argument("--work", help="folder for the runs (kept, so a second call reuses them)")
    parser.add_argument("--train-only", choices=["seeds", "regressions"],
                        help="only train and evaluate that half, without gating (two calls can share a --work "
                        "folder; a last call without this flag gates everything)")
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
    cfg = load_config(args.preset, None, [])
    seeds = list(range(args.k))
    runs = {} if args.train_only == "regressions" else {
        f"seed{s}": train_and_eval(work, f"seed{s}", s, [], args.preset, args.suite) for s in seeds}
    regressions = [r for r in args.regressions.split(",") if r] if args.train_only != "seeds" else []
    for reg in regressions:
        for i in range(args.per_regression):
            seed = 100 + i
            runs[f"{reg}-seed{seed}"] = train_and_eval(work, f"{reg}-seed{seed}", seed, REGRESSIONS[reg](cfg),
                                                       args.preset, args.suite)
    if args.train_only:
        return {"work": str(work), "trained": sorted(runs)}
    baseline = load_results(runs["seed0"])
    rows, verdicts = [], {}
    groups = {"same recipe, other seed (false alarms)": [f"seed{s}" for s in seeds[1:]]}
    groups.update({f"{reg} (detections)": [n for n in runs if n.startswith(reg + "-")] for reg in regressions})
    for label, names in groups.items():
        counts = {}
        for test in ("paired", "ci-overlap"):
            fails = 0
            for name in names:
                passed, failed = gate(load_results(runs[name]), baseline, test)
                verdicts[f"{name}/{test}"] = failed
                fails += not passed
            counts[test] = fails
        values = {n: load_results(runs[n])["metrics"] for n in names}
        swap = [values[n]["swap_success"]["value"] for n in names]
        pres = [values[n]["preservation"]["value"] for n in names]
        rows.append((label, len(names), counts["paired"], counts["ci-overlap"],
                     f"{min(swap):.3f}-{max(swap):.3f}", f"{min(pres):.3f}-{max(pres):.3f}"))
    base_m = baseline["metrics"]
    print(f"baseline seed0: swap_success {base_m['swap_success']['value']:.3f}, preservation "
          f"{base_m['preservation']['value']:.3f}; suite {args.suite}; preset {args.preset}")
    print("| runs gated against seed0 | n | failed, paired rule | failed, ci-overlap rule | swap_success | preservation |")
    print("| --- | ---: | ---: | ---: | --- | --- |")
    for label, n, paired, overlap, swap, pres in rows:
        print(f"| {label} | {n} | {paired}/{n} | {overlap}/{n} | {swap} | {pres} |")
    summary = {"work": str(work), "k": args.k, "suite": args.suite, "rules": yaml.safe_dump(baseline_rules("paired")),
               "verdicts": verdicts}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
