"""Robustness probes (suite ``robust``): forms, trajectory and unnamed prompts."""

import json
import math
import shutil

import pytest
import yaml

from swapbench.assets import asset_path
from swapbench.cli import main
from swapbench.edits import parse_edits
from swapbench.world import SHIPPED_WORLD

shipped = pytest.mark.skipif(not (SHIPPED_WORLD / "manifest.json").is_file(), reason="world not built yet")

FAMILIES = ("capitalisation", "plural", "possessive", "misspelling", "split", "hyphenated")


def _results(path):
    return json.loads((path / "results.json").read_text())


def test_spellings_are_kept_only_where_the_tokenizer_reads_other_tokens():
    from transformers import CLIPTokenizer

    from swapbench.eval.probes import misspellings, read_forms, split_spellings
    from swapbench.eval.suite import PromptItem, load_suite

    assert misspellings("giraffe")[:2] == ["girafe", "girraffe"] and misspellings("zebra")[:2] == ["zebbra", "zebr"]
    assert split_spellings("zebra")[0] == "ze bra" and split_spellings("giraffe")[0] == "gir affe"
    tokenizer = CLIPTokenizer.from_pretrained(SHIPPED_WORLD / "pipeline/tokenizer")
    suite = load_suite("robust")
    items, records = read_forms(suite.items, [tokenizer])
    forms = [i for i in items if i.group == "forms"]
    for family in ("misspelling", "split"):
        for concept in ("giraffe", "zebra"):
            # two templates x `variants: 2` spellings, none of them containing the word's own token
            assert len({i.prompt for i in forms if i.kind == family and i.concept == concept}) == 4
    word = {c: tokenizer(c, add_special_tokens=False).input_ids for c in ("giraffe", "zebra")}
    for item in forms:
        if item.kind in ("misspelling", "split"):
            ids = tokenizer(item.form, add_special_tokens=False).input_ids
            assert word[item.concept][0] not in ids, item.form
    by_form = {r["form"]: r for r in records}
    assert by_form["ze bra"]["tokens"] == ["ze</w>", "bra</w>"] and not by_form["ze bra"]["reads_word"]
    # CLIP lower-cases: capitals read as the word itself and stay in (the family is the control)
    assert (by_form["GIRAFFE"]["tokens"] == ["giraffe</w>"] and by_form["GIRAFFE"]["reads_word"]
            and by_form["GIRAFFE"]["used"])
    # a "misspelling" that the tokenizer reads as the word is dropped, and the next candidate takes its place
    odd = [PromptItem("forms", "misspelling", "zebra", f"a {w}", (0,), form=w, variant=("a {misspelled}", r, 1))
           for r, w in enumerate(["ZEBRA", "zebbra"])]
    kept, records = read_forms(odd, [tokenizer])
    assert [i.form for i in kept] == ["zebbra"] and records[0]["reads_word"] and not records[0]["used"]


def test_robust_suite_is_a_template_over_the_pairs_and_refuses_named_unnamed_prompts(tmp_path):
    from swapbench.errors import UserError
    from swapbench.eval.suite import load_suite

    suite = load_suite("robust", edits=parse_edits([], [["horse", "cow"]]))
    assert {i.concept for i in suite.items if i.group == "forms"} == {"horse", "cow"}
    assert {i.kind for i in suite.items if i.group == "forms"} == set(FAMILIES)
    assert "the horses' herd in a field" in {i.prompt for i in suite.items}
    assert suite.trajectory.strengths == (0.25, 0.5, 0.75, 1.0) and suite.trajectory.handover == (0.25, 0.5, 0.75)
    assert load_suite("robust", seeds_override=2).trajectory.seeds == 2
    raw = yaml.safe_load(asset_path("eval/suites/robust.yaml").read_text())
    raw["probes"]["unnamed"]["prompts"].append("two Zebras in the sand")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError, match="unnamed prompt 'two Zebras in the sand' names the label 'zebra'"):
        load_suite(str(bad))
    raw["probes"]["unnamed"]["prompts"].pop()
    raw["probes"]["forms"]["families"]["plural"].append("two {plurals}")
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError, match="must use exactly one of the fields"):
        load_suite(str(bad))


def _row(group, kind, concept, base, tuned, partner=None, seed=0, prompt="p", level=None):
    row = {"group": group, "kind": kind, "concept": concept, "prompt": prompt, "seed": seed, "base_label": base,
           "tuned_label": tuned, "success": tuned == partner if partner else tuned == base}
    return row | ({"kind": f"{kind}/{level:g}", "probe": kind, "level": level} if level is not None else {})


def test_scores_count_only_pairs_the_base_draws_and_tv_is_the_label_distance():
    from swapbench.eval.probes import score, total_variation

    rows = [
        # split: the base never draws a giraffe for it -> n = 0 and no value, not a failure
        _row("forms", "split", "giraffe", "horse", "zebra", "zebra"),
        _row("forms", "split", "giraffe", "deer", "deer", "zebra"),
        # plural: two valid pairs (one success); the invalid one would have been a success
        _row("forms", "plural", "giraffe", "giraffe", "zebra", "zebra"),
        _row("forms", "plural", "giraffe", "giraffe", "giraffe", "zebra"),
        _row("forms", "plural", "giraffe", "horse", "zebra", "zebra"),
        _row("trajectory", "img2img", "zebra", "zebra", "giraffe", "giraffe", level=0.5),
        _row("trajectory", "img2img", "zebra", "lion", "lion", "giraffe", level=0.5),
        _row("trajectory", "handover", "zebra", "zebra", "zebra", "giraffe", level=0.25),
    ]
    unnamed = [("horse", "horse"), ("horse", "zebra"), ("deer", "horse"), ("deer", "deer")]
    rows += [_row("unnamed", "unnamed", "", b, t, prompt=f"u{i % 2}", seed=i) for i, (b, t) in enumerate(unnamed)]
    m = score(rows, None, 200, 0)
    assert m["robust/forms/split"]["n"] == 0 and math.isnan(m["robust/forms/split"]["value"])
    assert "no value" in m["robust/forms/split"]["description"]
    assert (m["robust/forms/plural"]["n"], m["robust/forms/plural"]["value"]) == (2, 0.5)
    assert (m["robust/trajectory/0.5"]["n"], m["robust/trajectory/0.5"]["value"]) == (1, 1.0)
    assert (m["robust/trajectory/handover/0.25"]["n"], m["robust/trajectory/handover/0.25"]["value"]) == (1, 0.0)
    # base {horse 2, deer 2} vs tuned {horse 2, zebra 1, deer 1}: TV = (1 + 1) / 2 / 4
    assert m["robust/unnamed/tv"]["value"] == 0.25 and m["robust/unnamed/tv"]["n_clusters"] == 2
    assert m["robust/unnamed/changed"]["value"] == 0.5 and m["robust/unnamed/changed"]["higher_is_better"] is False
    assert total_variation([("a", "a"), ("b", "b")]) == 0
    same = score([_row("unnamed", "unnamed", "", b, b, prompt=f"u{i}") for i, (b, _) in enumerate(unnamed)],
                 None, 200, 0)
    assert same["robust/unnamed/tv"]["value"] == 0 and same["robust/unnamed/tv"]["ci95"] == [0, 0]


def test_every_probe_runs_on_the_mini_world_and_a_second_run_samples_only_its_tuned_half(mini_world, tmp_path,
                                                                                        monkeypatch, capsys):
    from swapbench.eval.probes import score
    from swapbench.reports.html import write_report

    monkeypatch.setenv("SWAPBENCH_WORLD", str(mini_world))
    tuned = tmp_path / "tuned"  # same weights as the base, another folder: sampled as a tuned model
    shutil.copytree(mini_world / "pipeline", tuned)
    # The shipped robust suite, every probe and family, with fewer templates (test time)
    raw = yaml.safe_load(asset_path("eval/suites/robust.yaml").read_text())
    raw["groups"] = {"swap": raw["groups"]["swap"] | {"prompts": raw["groups"]["swap"]["prompts"][:2]}}
    forms = raw["probes"]["forms"]
    forms["families"] = {f: templates[:1] for f, templates in forms["families"].items()}
    raw["probes"]["unnamed"]["prompts"] = raw["probes"]["unnamed"]["prompts"][:3]
    suite = tmp_path / "robust-small.yaml"
    suite.write_text(yaml.safe_dump(raw))
    args = ["eval", str(tuned), "--base", str(mini_world / "pipeline"), "--suite", str(suite),
            "--set", "eval.seeds=1", "--set", "eval.steps=4"]
    assert main([*args, "--out", str(tmp_path / "first")]) == 0
    first = _results(tmp_path / "first")
    m = first["metrics"]
    names = {f"robust/forms/{f}" for f in FAMILIES} | {f"robust/trajectory/{s}" for s in ("0.25", "0.5", "0.75", "1")}
    names |= {f"robust/trajectory/handover/{s}" for s in ("0.25", "0.5", "0.75")} | {"robust/unnamed/tv",
                                                                                       "robust/unnamed/changed"}
    assert names <= set(m)
    for name in names:
        assert len(m[name]["ci95"]) == 2 and m[name]["n"] >= 0
    # identical weights: prompts naming nothing draw the same images, so nothing moved
    assert m["robust/unnamed/tv"]["value"] == 0 and m["robust/unnamed/tv"]["ci95"] == [0, 0]
    assert m["robust/unnamed/changed"]["value"] == 0 and m["robust/unnamed/changed"]["n"] == 3
    robust = first["robust"]
    assert (robust["trajectory"]["starts"] == 4
            and robust["trajectory"]["handover_steps"] == {"0.25": 1, "0.5": 2, "0.75": 3})
    assert robust["trajectory"]["timing"]["base_latents_computed"] == 4
    assert all(not f["reads_word"] for f in robust["forms"] if f["family"] in ("misspelling", "split") and f["used"])

    assert main([*args, "--out", str(tmp_path / "second")]) == 0
    second = _results(tmp_path / "second")
    assert second["timing"]["base_sampled"] == 0 and second["timing"]["tuned_sampled"] > 0
    timing = second["robust"]["trajectory"]["timing"]
    assert timing["base_latents_computed"] == 0 and timing["base_latents_cached"] == 4 and timing["tuned_images"] == 28
    assert second["metrics"] == m  # the cached base half changes nothing

    # the gate reads robust metrics like any other
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - metric: robust/unnamed/tv\n    max: 0.0\n  - metric: robust/trajectory/handover/0.5\n"
                     "    min: 1.01\n")
    capsys.readouterr()
    assert main(["gate", str(tmp_path / "first/results.json"), "--rules", str(rules), "--json"]) == 1
    verdicts = {v["metric"]: v["passed"] for v in json.loads(capsys.readouterr().out)["verdicts"]}
    assert verdicts == {"robust/unnamed/tv": True, "robust/trajectory/handover/0.5": False}

    html = (tmp_path / "first/report.html").read_text()
    for section in ("robust-forms", "robust-trajectory", "robust-unnamed"):
        assert f'id="{section}"' in html
    assert 'data-metric="robust/trajectory/handover/0.5"' in html and 'alt="start"' in html
    # a family the base draws for no item: n = 0, no value, and the report says so
    for row in first["per_prompt"]:
        if row["group"] == "forms" and row["kind"] == "split":
            row["base_label"] = "okapi"
    first["metrics"].update(score(first["per_prompt"], None, 50, 0))
    (tmp_path / "first/results.json").write_text(json.dumps(first))
    assert first["metrics"]["robust/forms/split"]["n"] == 0
    assert "drew the prompted concept for none of these prompts" in write_report(tmp_path / "first").read_text()


@shipped
def test_trajectory_ends_at_the_start_image_and_at_plain_sampling_and_forms_need_a_drawable_base(tmp_path):
    """On the shipped world with the token-embedding oracle (a real swap): strength 0 keeps the base
    image's label, strength 1 agrees with plain sampling, and a spelling the base cannot draw is not scored."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(SHIPPED_WORLD / "pipeline")
    g, z = (pipe.tokenizer(w, add_special_tokens=False).input_ids[0] for w in ("giraffe", "zebra"))
    emb = pipe.text_encoder.get_input_embeddings().weight.data
    emb[[g, z]] = emb[[z, g]].clone()
    pipe.save_pretrained(tmp_path / "oracle")
    raw = yaml.safe_load(asset_path("eval/suites/robust.yaml").read_text())
    raw["groups"] = {"swap": raw["groups"]["swap"] | {"seeds": 3, "prompts": raw["groups"]["swap"]["prompts"][:2]}}
    raw["probes"] = {"trajectory": {"seeds": 3, "strengths": [0.0, 1.0]},
                     "forms": raw["probes"]["forms"] | {
                         "seeds": 1, "families": {"split": raw["probes"]["forms"]["families"]["split"]}}}
    suite = tmp_path / "traj.yaml"
    suite.write_text(yaml.safe_dump(raw))
    assert main(["eval", str(tmp_path / "oracle"), "--base", "world:savanna", "--suite", str(suite),
                 "--out", str(tmp_path / "o")]) == 0
    results = _results(tmp_path / "o")
    m, rows = results["metrics"], results["per_prompt"]
    plain = {(r["prompt"], r["seed"]): r["tuned_label"] for r in rows if r["group"] == "swap"}
    at = {lvl: [r for r in rows if r["group"] == "trajectory" and r["kind"] == f"img2img/{lvl:g}"]
          for lvl in (0.0, 1.0)}
    assert len(at[0.0]) == len(at[1.0]) == 12
    assert sum(r["tuned_label"] == r["base_label"] for r in at[0.0]) >= 11  # strength 0: start image (VAE round trip)
    assert m["robust/trajectory/0"]["value"] <= 0.05
    swap, one = m["swap_success"], m["robust/trajectory/1"]
    assert swap["value"] >= 0.9 and swap["ci95"][0] <= one["value"] <= swap["ci95"][1]
    # same seed, same noise: strength 1 draws what plain sampling of that seed draws
    assert sum(r["tuned_label"] == plain[(r["prompt"], r["seed"])] for r in at[1.0]) >= 10
    split = [r for r in rows if r["group"] == "forms"]
    drawn = [r for r in split if r["base_label"] == r["concept"]]
    assert len(split) == 8 and len(drawn) < len(split)  # the base cannot draw every split spelling
    assert m["robust/forms/split"]["n"] == len(drawn)
    if drawn:
        assert m["robust/forms/split"]["value"] == pytest.approx(sum(r["success"] for r in drawn) / len(drawn),
                                                                 abs=1e-6)
    assert results["robust"]["valid_pairs"]["forms/split"] == {"valid": len(drawn), "total": 8}
