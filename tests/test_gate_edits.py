"""The gate over every kind of edit: rule templates bind the run's edits, the paired baseline test sees
an erasure regress."""

import json

from swapbench.cli import main
from swapbench.edits import parse_edits
from swapbench.eval.scoring import score_rows
from swapbench.reports.gate import evaluate, load_rules, rule_metrics

CONTROLS = [(c, t) for c in ("elephant", "horse", "lion", "cow") for t in ("a photo of a {}", "a {} in a field")]
ERASE_PROMPTS = ("a {}", "a photo of a {}", "there is a {}", "one {}", "a {} in the savanna", "a big {}",
                 "a {} at noon", "a {} near a tree")


def _erasure(run, erase_fail=(), seeds=10):
    """Results of ``{erase: giraffe}`` scored by the real scorer from rows: 8 erase prompts x ``seeds``
    seeds, 8 control prompts x 6; ``erase_fail``: the (prompt index, seed) rows still drawn as a giraffe."""
    edits = parse_edits([{"erase": "giraffe"}], [])
    rows = []
    for concept, template in CONTROLS:
        for seed in range(6):
            rows.append({"group": "control", "kind": "control", "concept": concept, "prompt": template.format(concept),
                         "seed": seed, "base_label": concept, "tuned_label": concept, "success": True})
    for k, template in enumerate(ERASE_PROMPTS):
        for seed in range(seeds):
            ok = (k, seed) not in erase_fail
            rows.append({"group": "erase", "kind": "erase", "concept": "giraffe", "erased": True,
                         "prompt": template.format("giraffe"), "seed": seed, "base_label": "giraffe",
                         "tuned_label": "empty landscape" if ok else "giraffe", "success": ok})
    return {"schema_version": 1, "run": run, "suite": "default", "swap_pairs": [], "edits": edits.to_config(),
            "metrics": score_rows(rows, edits, 500, 0), "per_prompt": rows, "sampler": {"steps": 20},
            "provenance": {"seeds": {"per_prompt": [6, 10]}}}


def test_paired_baseline_fails_a_run_whose_erasure_regressed_and_passes_an_equal_one(write, capsys):
    base = _erasure("base")
    assert base["metrics"]["erase_success/giraffe"]["value"] == 1.0
    baseline = write("base.json", base)
    assert main(["gate", write("same.json", _erasure("same")), "--baseline", baseline, "--json"]) == 0
    same = {v["metric"]: v for v in json.loads(capsys.readouterr().out)["verdicts"]}
    assert same["erase_success/giraffe"]["rule"] == "vs baseline (paired)" and same["erase_success/giraffe"]["passed"]
    assert "diff +0" in same["erase_success/giraffe"]["reference"]
    # 6 of the 8 prompts draw the giraffe again on half their seeds: 0.625, 30 rows worse, none better
    regressed = _erasure("regressed", erase_fail={(k, s) for k in range(6) for s in range(5)})
    assert regressed["metrics"]["erase_success/giraffe"]["value"] == 0.625
    assert main(["gate", write("regressed.json", regressed), "--baseline", baseline, "--json"]) == 1
    verdicts = json.loads(capsys.readouterr().out)["verdicts"]
    failed = {(v["rule"], v["metric"]) for v in verdicts if not v["passed"]}
    assert failed == {("threshold", "erase_success/giraffe"), ("vs baseline (paired)", "erase_success/giraffe")}
    paired = next(v for v in verdicts if v["rule"] == "vs baseline (paired)" and v["metric"] == "erase_success/giraffe")
    assert "diff -0.375 (rows worse 30, better 0)" in paired["reference"] and "margin 0.05" in paired["reference"]
    # two rows of noise: the threshold holds and the paired test does not call it worse
    noise = _erasure("noise", erase_fail={(0, 1), (5, 3)})
    assert main(["gate", write("noise.json", noise), "--baseline", baseline]) == 0


def test_templates_expand_over_three_edits_and_skip_the_kinds_a_run_lacks():
    edits = parse_edits([{"swap": ["giraffe", "zebra"]}, {"remap": "lion", "to": "cow"},
                         {"erase": "horse", "anchor": "donkey"}], [])
    results = {"edits": edits.to_config(), "swap_pairs": [list(p) for p in edits.swap_pairs], "metrics": {}}
    assert rule_metrics("swap_success/{a}->{b}", results) == ["swap_success/giraffe->zebra",
                                                              "swap_success/zebra->giraffe"]
    assert rule_metrics("remap_success/{a}->{b}", results) == ["remap_success/lion->cow"]
    assert rule_metrics("erase_success/{a}", results) == ["erase_success/horse"]
    assert rule_metrics("erase_anchor/{a}->{b}", results) == ["erase_anchor/horse->donkey"]
    # other families of the same kinds bind the same way
    assert rule_metrics("swap_success_valid/{a}->{b}", results) == ["swap_success_valid/giraffe->zebra",
                                                                    "swap_success_valid/zebra->giraffe"]
    assert rule_metrics("source_retained/{a}", results) == ["source_retained/giraffe", "source_retained/zebra",
                                                            "source_retained/lion"]
    assert rule_metrics("preservation", results) == ["preservation"]
    plain = {"edits": [{"erase": "horse"}], "metrics": {}}
    assert rule_metrics("erase_anchor/{a}->{b}", plain) == [] and rule_metrics("swap_success/{a}->{b}", plain) == []
    # the default rules: one threshold per edit direction, then the controls
    metrics = {name: {"value": 0.95, "ci95": [0.9, 1.0], "n": 40, "higher_is_better": True}
               for name in (*edits.metrics(), "preservation")}
    verdicts = evaluate({**results, "metrics": metrics}, None, load_rules())
    assert [v.metric for v in verdicts] == ["swap_success/giraffe->zebra", "swap_success/zebra->giraffe",
                                            "remap_success/lion->cow", "erase_success/horse", "preservation"]
    assert all(v.passed for v in verdicts)


def test_a_run_without_a_templated_edit_is_gated_on_the_rest_and_never_on_nothing(write, tmp_path, capsys):
    erasure = write("erase.json", _erasure("erase"))
    assert main(["gate", erasure, "--json"]) == 0  # no swap, no remap: skipped, not missing
    checked = [v["metric"] for v in json.loads(capsys.readouterr().out)["verdicts"]]
    assert checked == ["erase_success/giraffe", "preservation"]
    rules = tmp_path / "swaps-only.yaml"
    rules.write_text("rules:\n  - metric: swap_success/{a}->{b}\n    min: 0.9\n")
    assert main(["gate", erasure, "--rules", str(rules)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gate none of the metrics" in err[0] and "erase giraffe" in err[0]
