"""The metric table: one definition per family, read by the scorer, summary, report, compare and gate."""

import io
import json

import pytest
from _fixtures_reports import make_run, table_rows
from rich.console import Console

from swapbench import catalog, schema
from swapbench.edits import parse_edits
from swapbench.eval import stats
from swapbench.eval.scoring import score_rows
from swapbench.reports.html import write_report
from swapbench.reports.summary import print_summary

PAIRS = [["giraffe", "zebra"]]
EDITS = parse_edits([], PAIRS)


def _row(group, concept, prompt, seed, base, tuned, success, kind=None, **extra):
    return {"group": group, "kind": kind or group, "concept": concept, "prompt": prompt, "seed": seed,
            "base_label": base, "tuned_label": tuned, "success": success, **extra}


def _rows(base_giraffe_ok=8, clip_drop=0.0):
    """Swap rows (2 prompts x 5 seeds per concept), controls (4 prompts x 4 seeds) with CLIP scores."""
    rows = []
    for concept, partner in (("giraffe", "zebra"), ("zebra", "giraffe")):
        for p, template in enumerate(("a {}", "a photo of a {}")):
            for seed in range(5):
                i = p * 5 + seed
                base = concept if concept == "zebra" or i < base_giraffe_ok else "horse"
                rows.append(_row("swap", concept, template.format(concept), seed, base, partner, True, target=partner))
    for concept in ("elephant", "lion"):
        for template in ("a {}", "a photo of a {}"):
            for seed in range(4):
                rows.append(_row("control", concept, template.format(concept), seed, concept, concept, True,
                                 clip=70.0 + seed - clip_drop, clip_base=70.0 + seed))
    return rows


def test_every_scored_metric_is_in_the_table_with_its_direction():
    metrics = score_rows(_rows(), EDITS, 200, 0)
    assert list(metrics) == catalog.ordered(metrics)  # the scorer writes in the table's order
    for name, entry in metrics.items():
        fam = catalog.family(name)
        assert fam is not None, name
        assert entry["higher_is_better"] is fam.higher_is_better and entry["description"] == fam.definition
        assert 1 <= entry["n_clusters"] <= entry["n"]
        honest = entry["n_clusters"] >= stats.MIN_PROMPTS
        assert entry["interval"] == (fam.interval if honest else stats.TOO_FEW_PROMPTS)
    assert {"swap_success", "swap_success/giraffe->zebra", "swap_success_valid/giraffe->zebra", "preservation",
            "clip_score/control", "base_fidelity/giraffe", "source_retained/zebra"} <= set(metrics)


def test_swap_success_valid_counts_only_pairs_whose_base_drew_the_source():
    metrics = score_rows(_rows(base_giraffe_ok=6), EDITS, 200, 0)
    assert metrics["swap_success_valid/giraffe->zebra"]["n"] == 6
    assert metrics["swap_success_valid/zebra->giraffe"]["n"] == 10
    assert metrics["swap_success/giraffe->zebra"]["n"] == 10
    assert metrics["base_fidelity/giraffe"]["value"] == pytest.approx(0.6)


def _results(rows, run="r"):
    return {"schema_version": 1, "run": run, "suite": "default", "swap_pairs": PAIRS,
            "metrics": score_rows(rows, EDITS, 200, 0), "per_prompt": rows}


def test_summary_leads_with_headline_and_gate_and_names_what_moved():
    results = _results(_rows(clip_drop=1.5))
    out = io.StringIO()
    print_summary(results, Console(file=out, width=80))
    text = out.getvalue()
    shown = [line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│")]
    assert shown == [*catalog.headline(results["metrics"])]
    assert shown[:2] == ["swap_success/giraffe->zebra", "swap_success/zebra->giraffe"]
    assert f"{len(results['metrics']) - len(shown)} more with --all" in text
    assert "gate (default rules): PASS" in text
    # a drop of 1.5 CLIP points on every control pair is a paired move, even though preservation stays 1.0
    moved = next(line for line in text.splitlines() if line.startswith("moved from the base"))
    assert "clip_score/control -1.500" in moved and "preservation" not in moved
    # not a terminal: long lines are not wrapped mid-phrase at 80 columns
    assert any(len(line) > 80 for line in text.splitlines())
    everything = io.StringIO()
    print_summary(results, Console(file=everything, width=80), show_all=True)
    rows = [line.split("│")[1].strip() for line in everything.getvalue().splitlines() if line.startswith("│")]
    assert rows == catalog.ordered(results["metrics"])


def test_report_has_what_moved_and_a_validity_banner(tmp_path):
    run = make_run(tmp_path, "weak-base")
    results = _results(_rows(base_giraffe_ok=5, clip_drop=1.5), "weak-base")
    full = json.loads((run / "eval" / "results.json").read_text())
    full.update(metrics=results["metrics"], per_prompt=results["per_prompt"])
    (run / "eval" / "results.json").write_text(json.dumps(full))
    html = write_report(run / "eval", run).read_text()
    moved = table_rows(html, "data-moved")
    assert "clip_score/control" in moved and moved["clip_score/control"][1] == "-1.500"
    # every one of the 16 pairs dropped: p rounds to 0 in the numbers, and reads as a bound in the page
    from swapbench.eval.paired import what_moved

    assert next(m for m in what_moved(results) if m["metric"] == "clip_score/control")["p_holm"] == 0.0
    assert moved["clip_score/control"][3] == "< 1e-6"
    # the intended move is listed too, pooled over both directions' 4 prompts; one direction's 2
    # prompts have no interval and show no move
    assert "swap_success" in moved and "swap_success/giraffe->zebra" not in moved
    assert 'id="validity"' in html and "base fidelity on giraffe is 0.50" in html
    assert catalog.validity_warnings(results) and not catalog.validity_warnings(_results(_rows()))


def test_power_command_sizes_the_suite(tmp_path, capsys):
    from swapbench.cli import main

    rows = _rows()
    for r in rows[:5]:  # one giraffe prompt fails for every seed: clustered outcomes
        r.update(success=False, tuned_label="giraffe")
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_results(rows)))
    assert main(["power", str(path), "--diff", "0.3", "--json"]) == 0
    table = {r["metric"]: r for r in json.loads(capsys.readouterr().out)}
    g2z = table["swap_success/giraffe->zebra"]
    assert (g2z["prompts"], g2z["seeds_per_prompt"]) == (2, 5) and g2z["icc"] > 0.5
    assert main(["power", str(path), "--seeds", "50", "--json"]) == 0
    more = {r["metric"]: r for r in json.loads(capsys.readouterr().out)}
    z2g = table["swap_success/zebra->giraffe"]  # no spread between prompts: seeds help all the way
    assert more["swap_success/zebra->giraffe"]["detectable_diff"] < z2g["detectable_diff"] / 3
    assert z2g["seeds_for_diff"] is not None and z2g["icc"] == 0
    # a prompt that decides its seeds' outcomes (icc 1): more seeds buy nothing
    assert more["swap_success/giraffe->zebra"]["detectable_diff"] == g2z["detectable_diff"]
    assert g2z["seeds_for_diff"] is None  # two prompts that disagree this much: no number of seeds is enough
    assert main(["power", str(path), "--diff", "3"]) == 2


def test_compare_and_the_model_card_show_the_headline_of_the_table(tmp_path):
    from huggingface_hub import ModelCard, ModelCardData

    from swapbench.reports.compare import RunRecord, metric_names
    from swapbench.train.model_card import add_eval_results

    results = _results(_rows())
    metrics = results["metrics"]
    pooled = catalog.headline(metrics, pooled=True)
    assert pooled == ["swap_success", "swap_success/giraffe->zebra", "swap_success/zebra->giraffe", "preservation"]
    assert catalog.headline(metrics) == ["swap_success/giraffe->zebra", "swap_success/zebra->giraffe",
                                         "swap_success_valid/giraffe->zebra", "swap_success_valid/zebra->giraffe",
                                         "preservation"]
    run = RunRecord("r", tmp_path / "results.json", results, {}, None, None)
    assert metric_names([run]) == pooled
    (tmp_path / "model").mkdir()
    (tmp_path / "model/README.md").write_text(str(ModelCard(f"---\n{ModelCardData().to_yaml()}\n---\n")))
    card = ModelCard.load(add_eval_results(tmp_path / "model", results))
    assert [r.metric_type for r in card.data.eval_results] == pooled


def test_one_partner_map_for_scoring_suites_results_and_gate_rules():
    from swapbench.eval.suite import load_suite
    from swapbench.reports.gate import rule_metrics

    pairs = [["giraffe", "zebra"], ["horse", "cow"]]
    both = [("giraffe", "zebra"), ("zebra", "giraffe"), ("horse", "cow"), ("cow", "horse")]
    assert schema.directions(pairs) == both and schema.partners(pairs) == dict(both)
    results = {"swap_pairs": pairs, "metrics": {}}
    assert schema.edits(results).metrics() == [f"swap_success/{a}->{b}" for a, b in both]
    assert rule_metrics("swap_success/{a}->{b}", results) == [f"swap_success/{a}->{b}" for a, b in both]
    suite = load_suite("quick", edits=parse_edits([], pairs))
    assert {c: suite.target(c) for c, _ in both} == dict(both) and suite.target("lion") is None
