import json
import re

import pytest

from swapbench.cli import main


def _metric(value, lo, hi, n=64, hib=True):
    return {"value": value, "ci95": [lo, hi], "n": n, "higher_is_better": hib, "description": ""}


def _results(swap=0.95, pres=0.97, kid=(0.001, 0.0, 0.004), run="r"):
    return {
        "schema_version": 1, "run": run, "suite": "default", "created": "2026-11-25T00:00:00+00:00",
        "metrics": {
            "swap_success": _metric(swap, swap - 0.05, min(1, swap + 0.03)),
            "swap_success/giraffe->zebra": _metric(swap, swap - 0.06, min(1, swap + 0.03)),
            "swap_success/zebra->giraffe": _metric(swap, swap - 0.06, min(1, swap + 0.03)),
            "preservation": _metric(pres, pres - 0.04, min(1, pres + 0.02)),
            "kid_vs_base": _metric(kid[0], kid[1], kid[2], hib=False),
        },
        "per_prompt": [], "confusion": {}, "provenance": {},
    }


def test_pass(write, capsys):
    assert main(["gate", write("a.json", _results()), "--baseline", write("b.json", _results())]) == 0
    assert "FAIL" not in capsys.readouterr().out


def test_threshold_regression_exits_1(write, capsys):
    assert main(["gate", write("a.json", _results(pres=0.80))]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_baseline_regression_beyond_ci_exits_1(write):
    worse = _results(kid=(0.05, 0.03, 0.07))
    assert main(["gate", write("a.json", worse), "--baseline", write("b.json", _results())]) == 1
    within_noise = _results(kid=(0.003, 0.0, 0.006))
    assert main(["gate", write("c.json", within_noise), "--baseline", write("b.json", _results())]) == 0


def test_json_output(write, capsys):
    assert main(["gate", write("a.json", _results(swap=0.5)), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["passed"] is False
    failed = {v["metric"] for v in out["verdicts"] if not v["passed"]}
    assert failed == {"swap_success/giraffe->zebra", "swap_success/zebra->giraffe"}


@pytest.mark.parametrize("content, needle", [
    (None, "not found"),
    ('{"schema_version": 1, "metrics": {"swap', "truncated"),
    (json.dumps({**_results(), "schema_version": 2}), "schema_version 2"),
    (json.dumps({**_results(), "metrics": {}}), "no metrics"),
])
def test_bad_results_never_pass(write, tmp_path, capsys, content, needle):
    path = write("bad.json", content) if content is not None else str(tmp_path / "missing.json")
    assert main(["gate", path]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]


def test_custom_rules_file(write, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - metric: kid_vs_base\n    max: 0.0005\n")
    assert main(["gate", write("a.json", _results()), "--rules", str(rules)]) == 1
    rules.write_text("rules:\n  - metric: kid_vs_base\n    max: 0.01\n")
    assert main(["gate", write("a.json", _results()), "--rules", str(rules)]) == 0


def test_run_directories_and_baseline_drop_in_preservation(tmp_path, capsys):
    from _fixtures_reports import make_run

    good = make_run(tmp_path, "good", swap=1.0, preservation=1.0)
    assert main(["gate", str(good), "--baseline", str(good)]) == 0
    out = capsys.readouterr().out
    assert "vs baseline" in out and "FAIL" not in out
    # preservation 0.95 (CI [0.76, 0.99]) overlaps the baseline's 1.0 (CI [0.84, 1.0]): noise, not a regression
    noisy = make_run(tmp_path, "noisy", swap=1.0, preservation=0.95)
    assert main(["gate", str(noisy), "--baseline", str(good)]) == 0
    capsys.readouterr()
    worse = make_run(tmp_path, "worse", swap=1.0, preservation=0.5)
    rules = tmp_path / "baseline-only.yaml"
    # The old disjoint-intervals rule, kept as an option (one prompt per control here: too few for the paired test)
    rules.write_text("rules:\n  - baseline: all\n    test: ci-overlap\n")
    assert main(["gate", str(worse), "--baseline", str(good), "--rules", str(rules), "--json"]) == 1
    failed = {v["metric"] for v in json.loads(capsys.readouterr().out)["verdicts"] if not v["passed"]}
    assert failed == {"preservation", "preservation/lion", "preservation/cow"}  # elephant, horse kept


@pytest.mark.parametrize("change, needle", [
    (lambda r: r["metrics"].pop("preservation"), "lack metric(s) preservation"),
    (lambda r: r["metrics"]["kid_vs_base"].pop("ci95"), "lacks ci95"),
    (lambda r: r["metrics"]["kid_vs_base"].update(higher_is_better="yes"), "higher_is_better"),
])
def test_incomplete_results_are_input_errors(write, capsys, change, needle):
    results = _results()
    change(results)
    assert main(["gate", write("a.json", results)]) == 2
    assert needle in capsys.readouterr().err


def test_baseline_must_be_evaluated_the_same_way(write, capsys):
    other = {**_results(), "suite": "quick"}
    assert main(["gate", write("a.json", _results()), "--baseline", write("b.json", other)]) == 2
    assert "different suite" in capsys.readouterr().err


def test_pairing_ignores_the_bootstrap_seed_and_refuses_other_labels_or_templates(write, capsys):
    """The bootstrap seed follows the training seed: re-runs with other seeds must still pair. What
    changes a row's label (the label set, the judge's templates) or its seeds per prompt must not."""
    def results(bootstrap_seed, labels, templates=("a {}.",)):
        return {**_results(), "labels": labels,
                "provenance": {"seeds": {"per_prompt": [6, 10], "bootstrap_seed": bootstrap_seed},
                               "judge_templates": list(templates)}}

    three = ["giraffe", "zebra", "horse"]
    base = write("b.json", results(0, three))
    assert main(["gate", write("a.json", results(7, three)), "--baseline", base]) == 0
    capsys.readouterr()
    assert main(["gate", write("c.json", results(0, three[:2])), "--baseline", base]) == 2
    assert "different concept labels" in capsys.readouterr().err
    other = results(0, three, templates=["a photo of a {}."])
    assert main(["gate", write("d.json", other), "--baseline", base]) == 2
    assert "different judge templates" in capsys.readouterr().err


def test_metric_missing_from_run_but_in_baseline_never_passes(write, capsys):
    run = _results()
    run["metrics"].pop("kid_vs_base")
    assert main(["gate", write("a.json", run), "--baseline", write("b.json", _results())]) == 2
    assert "kid_vs_base" in capsys.readouterr().err


@pytest.mark.parametrize("text, needle", [
    ("rules: [", "does not parse"),
    ("rules: []\n", "non-empty list"),
    ("rules:\n  - metric: preservation\n", "min:/max:"),
    ("rules:\n  - metric: preservation\n    minimum: 0.9\n", "unknown keys"),
])
def test_malformed_rules_are_input_errors(write, tmp_path, capsys, text, needle):
    rules = tmp_path / "rules.yaml"
    rules.write_text(text)
    assert main(["gate", write("a.json", _results()), "--rules", str(rules)]) == 2
    assert needle in capsys.readouterr().err


def test_every_shipped_rule_file_loads():
    from swapbench.assets import asset_names, asset_path
    from swapbench.reports.gate import load_rules

    names = asset_names("eval/gates")
    assert "default" in names
    for name in names:
        assert load_rules(asset_path(f"eval/gates/{name}.yaml"))


def test_documented_ci_workflow_parses_and_gates():
    from pathlib import Path

    import yaml
    from _fixtures_reports import documented_commands

    from swapbench.cli import build_parser

    doc = Path(__file__).parents[1] / "docs" / "ci.md"
    commands = documented_commands(doc)
    assert {c[0] for c in commands} == {"train", "eval", "gate"}
    for command in commands:
        build_parser().parse_args(command)  # SystemExit(2) on a documented flag that does not exist
    workflow = yaml.safe_load(re.search(r"```yaml\n(name: swap-gate.*?)```", doc.read_text(), re.S).group(1))
    runs = " ".join(step.get("run", "") for step in workflow["jobs"]["gate"]["steps"])
    assert "swapbench train --preset savanna" in runs and "swapbench gate runs/ci --baseline" in runs


def test_default_rules_gate_every_direction_of_the_pairs_the_run_swapped(write, capsys):
    results = _results()
    for name in ("swap_success/giraffe->zebra", "swap_success/zebra->giraffe"):
        results["metrics"].pop(name)
    results["swap_pairs"] = [["horse", "cow"], ["lion", "elephant"]]
    for direction, value in (("horse->cow", 0.95), ("cow->horse", 0.5), ("lion->elephant", 0.95),
                             ("elephant->lion", 0.95)):
        results["metrics"][f"swap_success/{direction}"] = _metric(value, value - 0.06, min(1, value + 0.03))
    assert main(["gate", write("a.json", results), "--json"]) == 1
    verdicts = json.loads(capsys.readouterr().out)["verdicts"]
    assert [v["metric"] for v in verdicts if v["metric"].startswith("swap_success")] == [
        "swap_success/horse->cow", "swap_success/cow->horse", "swap_success/lion->elephant",
        "swap_success/elephant->lion"]
    assert {v["metric"] for v in verdicts if not v["passed"]} == {"swap_success/cow->horse"}
    results["metrics"].pop("swap_success/elephant->lion")  # a recorded direction without its metric: cannot judge
    assert main(["gate", write("b.json", results)]) == 2
    assert "swap_success/elephant->lion" in capsys.readouterr().err


def _scored(run, control_fail=(), swap_fail=(), seeds=6):
    """Results scored by the real scorer from rows: 8 control prompts x ``seeds`` seeds, 8 swap prompts
    x 10 seeds; ``control_fail``/``swap_fail``: (prompt index, seed) rows that fail."""
    from swapbench.eval.scoring import score_rows

    rows = []
    controls = [(c, t) for c in ("elephant", "horse", "lion", "cow") for t in ("a photo of a {}", "a {} in a field")]
    for k, (concept, template) in enumerate(controls):
        for seed in range(seeds):
            ok = (k, seed) not in control_fail
            rows.append({"group": "control", "kind": "control", "concept": concept, "prompt": template.format(concept),
                         "seed": seed, "base_label": concept, "tuned_label": concept if ok else "deer", "success": ok})
    swaps = [(c, t) for c in ("giraffe", "zebra") for t in ("a {}", "a photo of a {}", "there is a {}", "one {}")]
    for k, (concept, template) in enumerate(swaps):
        partner = "zebra" if concept == "giraffe" else "giraffe"
        for seed in range(10):
            ok = (k, seed) not in swap_fail
            rows.append({"group": "swap", "kind": "swap", "concept": concept, "prompt": template.format(concept),
                         "seed": seed, "base_label": concept, "tuned_label": partner if ok else concept, "success": ok})
    return {"schema_version": 1, "run": run, "suite": "default", "swap_pairs": [["giraffe", "zebra"]],
            "metrics": score_rows(rows, [["giraffe", "zebra"]], 500, 0), "per_prompt": rows,
            "sampler": {"steps": 20}, "provenance": {"seeds": {"per_prompt": [6, 10]}}}


def test_paired_noninferiority_gate_fails_a_real_drop_and_passes_noise(write, capsys):
    rules = "rules:\n  - baseline: all\n    margins: {'preservation*': 0.05}\n"
    base = write("base.json", _scored("base"))
    rule_file = write("rules.yaml", rules)
    # a few rows of noise, spread over prompts: not worse beyond the margin with 95% confidence
    noise = _scored("noise", control_fail={(0, 1), (5, 3)}, swap_fail={(2, 4), (6, 0)})
    assert main(["gate", write("noise.json", noise), "--baseline", base, "--rules", rule_file]) == 0
    capsys.readouterr()
    # preservation 1.0 -> 0.625: 6 of 8 control prompts lose half their seeds
    drop = _scored("drop", control_fail={(k, s) for k in range(6) for s in range(3)})
    assert main(["gate", write("drop.json", drop), "--baseline", base, "--rules", rule_file, "--json"]) == 1
    verdicts = {v["metric"]: v for v in json.loads(capsys.readouterr().out)["verdicts"]}
    assert not verdicts["preservation"]["passed"] and verdicts["preservation"]["rule"] == "vs baseline (paired)"
    assert ("diff -0.375" in verdicts["preservation"]["reference"]
            and "margin 0.05" in verdicts["preservation"]["reference"])
    assert verdicts["swap_success"]["passed"]
    # the same drop within a margin wider than it passes
    wide = write("wide.yaml", "rules:\n  - baseline: all\n    margins: {'preservation*': 0.5}\n")
    assert main(["gate", write("drop2.json", drop), "--baseline", base, "--rules", wide]) == 0
    # run against itself: differences of 0, nothing fails
    assert main(["gate", base, "--baseline", base, "--rules", rule_file]) == 0
