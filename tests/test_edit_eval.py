"""Edits beyond the swap, evaluated: suites templated over them, each kind's success rule, its metrics."""

import pytest
import torch

from swapbench import catalog, schema
from swapbench.edits import parse_edits
from swapbench.errors import UserError
from swapbench.eval.evaluate import edit_fields, row_success
from swapbench.eval.scoring import score_rows
from swapbench.eval.suite import load_suite

THREE = [{"swap": ["giraffe", "zebra"]}, {"erase": "lion", "anchor": "cow"}, {"remap": "horse", "to": "deer"}]


def _groups(suite):
    return {(i.group, i.concept) for i in suite.items}


def test_suite_is_a_template_over_every_kind_of_edit():
    erase = load_suite("default", None, parse_edits([{"erase": "giraffe"}], []))
    assert erase.labels[-1] == "empty landscape" and erase.nothing  # "none of these" joins an erasing run only
    assert "empty landscape" not in load_suite("default").labels  # swap runs keep their label set and numbers
    assert {c for g, c in _groups(erase) if g == "erase"} == {"giraffe"}
    assert {c for g, c in _groups(erase) if g == "control"} == {"zebra", "elephant", "horse", "lion", "cow"}
    assert not [i for i in erase.items if i.kind == "compositions"]  # the scene's other animal would decide
    remap = load_suite("default", None, parse_edits([{"remap": "giraffe", "to": "zebra"}], []))
    assert ("control", "zebra") in _groups(remap)  # a one-way remap must leave the target's own prompts alone
    assert "a giraffe next to an elephant" in {i.prompt for i in remap.items if i.kind == "compositions"}
    three = load_suite("default", None, parse_edits(THREE, []))
    assert {g for g, _ in _groups(three)} >= {"swap", "erase", "remap", "control", "generality"}
    assert {c for g, c in _groups(three) if g == "control"} == {"elephant", "cow"}  # sources left out, anchor kept


def test_suite_refuses_edits_it_cannot_judge(tmp_path):
    with pytest.raises(UserError, match="no label for the edited concept.*unicorn"):
        load_suite("default", None, parse_edits([{"remap": "giraffe", "to": "unicorn"}], []))
    with pytest.raises(UserError, match="is one of its nothing labels"):
        load_suite("default", None, parse_edits([{"erase": "empty landscape"}], []))
    bare = tmp_path / "bare.yaml"
    bare.write_text("labels: [giraffe, zebra]\ngroups: {swap: {concepts: swapped, prompts: ['a {a}'], seeds: 1}}\n")
    with pytest.raises(UserError, match="no nothing: labels"):
        load_suite(str(bare), None, parse_edits([{"erase": "giraffe"}], []))


def _item(suite, group, concept, kind=None):
    return next(i for i in suite.items
                if i.group == group and i.concept == concept and (kind is None or i.kind == kind))


def test_each_kind_says_which_label_shows_it():
    suite = load_suite("default", None, parse_edits(THREE, []))
    scores = dict.fromkeys(suite.labels, 0.0)
    lion, horse = _item(suite, "erase", "lion"), _item(suite, "remap", "horse")
    giraffe = _item(suite, "swap", "giraffe")
    assert edit_fields(suite, lion) == {"target": None, "erased": True, "anchor": "cow"}
    assert edit_fields(suite, horse) == {"target": "deer", "erased": None, "anchor": None}
    assert edit_fields(suite, _item(suite, "control", "elephant")) == {}
    assert row_success(suite, lion, "lion", "cow", scores)
    assert row_success(suite, lion, "lion", "empty landscape", scores)
    assert not row_success(suite, lion, "lion", "lion", scores)
    assert row_success(suite, horse, "horse", "deer", scores)
    assert not row_success(suite, horse, "horse", "horse", scores)
    assert row_success(suite, giraffe, "giraffe", "zebra", scores)
    comp = _item(suite, "generality", "horse", "compositions")
    assert row_success(suite, comp, "elephant", "elephant", {**scores, "deer": 0.3, "horse": 0.2})
    assert not row_success(suite, comp, "elephant", "elephant", {**scores, "deer": 0.1, "horse": 0.2})


def _row(group, concept, prompt, seed, base, tuned, success, **extra):
    return {"group": group, "kind": group, "concept": concept, "prompt": prompt, "seed": seed,
            "base_label": base, "tuned_label": tuned, "success": success, **extra}


def test_erasure_metrics_count_the_rows_by_their_rule():
    edits = parse_edits([{"erase": "lion", "anchor": "cow"}, {"remap": "horse", "to": "deer"}], [])
    rows = []
    for p in range(4):  # 4 prompts x 5 seeds of the erased lion: 12 now cow, 4 empty, 4 still lion
        for seed in range(5):
            tuned = ["cow", "cow", "cow", "empty landscape", "lion"][seed] if p < 4 else "lion"
            scores = {"lion": 0.6 if tuned == "lion" else 0.1, "cow": 0.7 if tuned == "cow" else 0.2}
            rows.append(_row("erase", "lion", f"lion prompt {p}", seed, "lion" if seed else "elephant", tuned,
                             tuned != "lion", erased=True, anchor="cow", scores=scores))
            rows.append(_row("remap", "horse", f"horse prompt {p}", seed, "horse", "deer" if seed < 3 else "horse",
                             seed < 3, target="deer"))
    m = score_rows(rows, edits, 200, 0)
    assert m["erase_success/lion"]["value"] == pytest.approx(16 / 20)
    assert m["erase_success_valid/lion"]["n"] == 16 and m["erase_success_valid/lion"]["value"] == pytest.approx(12 / 16)
    assert m["erase_anchor/lion->cow"]["value"] == pytest.approx(12 / 20)
    assert m["erased_accuracy/lion"]["value"] == pytest.approx(4 / 20)
    assert m["clip_accuracy/lion->cow"]["value"] == pytest.approx(16 / 20)  # scores cow over lion
    assert m["remap_success/horse->deer"]["value"] == pytest.approx(12 / 20)
    assert m["edit_success"]["value"] == pytest.approx(28 / 40) and m["edit_success"]["n_clusters"] == 8
    assert "edit_success" not in score_rows([r for r in rows if r["group"] == "erase"], edits[:1], 200, 0)
    assert catalog.headline(m) == ["remap_success/horse->deer", "remap_success_valid/horse->deer",
                                   "erase_success/lion", "erase_success_valid/lion", "edit_success"]
    for name, entry in m.items():
        lo, hi = entry["ci95"]
        assert lo <= entry["value"] <= hi and catalog.family(name) is not None, name


def test_old_results_files_get_their_swap_targets():
    old = {"swap_pairs": [["giraffe", "zebra"]], "per_prompt": [_row("swap", "zebra", "a zebra", 0, "zebra", "giraffe",
                                                                     True)]}
    assert schema.rows(old)[0]["target"] == "giraffe" and schema.edits(old).describe() == "giraffe <-> zebra"
    new = {"edits": [{"erase": "lion"}], "per_prompt": [_row("erase", "lion", "a lion", 0, "lion", "cow", True,
                                                              erased=True)]}
    assert schema.rows(new) == new["per_prompt"] and schema.edits(new).describe() == "erase lion"


def test_nothing_labels_are_read_from_their_own_texts():
    from swapbench.eval.judge import ZeroShotJudge

    labels = ["giraffe", "zebra"]
    texts = {"empty landscape": ["an empty grassy field.", "a quiet landscape in the savanna."]}
    plain = ZeroShotJudge.load("world:savanna", labels, ["a photo of a {}."])
    judge = ZeroShotJudge.load("world:savanna", [*labels, "empty landscape"], ["a photo of a {}."], texts=texts)
    assert torch.equal(judge.classifier[:, :2], plain.classifier)  # the concepts' columns keep their exact bits
    expected = torch.nn.functional.normalize(judge.text_features(texts["empty landscape"]).mean(0), dim=-1)
    assert torch.allclose(judge.classifier[:, 2], expected)
    assert judge.provenance()["nothing"] == texts


def test_terminal_summary_says_what_an_erased_concept_became():
    from swapbench.reports.summary import became_lines

    rows = [_row("erase", "giraffe", f"p{i}", 0, "giraffe", "empty landscape" if i < 3 else "giraffe", i < 3,
                 erased=True) for i in range(4)]
    results = {"edits": [{"erase": "giraffe"}], "per_prompt": rows}
    assert became_lines(results) == ["erased giraffe became (n=4): giraffe 1, empty landscape 3; base: giraffe 4"]
    assert became_lines({"edits": [{"swap": ["giraffe", "zebra"]}], "per_prompt": []}) == []


def test_a_composition_is_decided_at_full_precision_not_at_the_rows_four_decimals():
    from swapbench.eval.evaluate import probabilities
    from swapbench.eval.judge import Assessment

    suite = load_suite("default")
    comp = _item(suite, "generality", "giraffe", "compositions")
    p = torch.zeros(1, len(suite.labels), dtype=torch.float64)
    p[0, suite.labels.index("zebra")], p[0, suite.labels.index("giraffe")] = 0.40004, 0.40001  # both 0.4000 rounded
    full = probabilities(Assessment(p, None, ["zebra"]), 0, suite.labels)
    assert row_success(suite, comp, "giraffe", "zebra", full)


def test_train_refuses_edits_the_eval_suite_cannot_judge_before_editing(tmp_path, capsys):
    from _cli import assert_one_line_error

    from swapbench.cli import main

    bare = tmp_path / "bare.yaml"
    bare.write_text("labels: [giraffe, zebra]\nnothing: {empty landscape: ['an empty field.']}\n"
                    "groups: {swap: {concepts: swapped, prompts: ['a {a}'], seeds: 1}}\n")
    code = main(["train", "--method", "token-swap", "--out", str(tmp_path / "runs"), "--name", "r",
                 "--set", f"eval.suite={bare}", "--set", "edits=[{erase: lion}]"])
    assert_one_line_error(capsys, code, "no label for the edited concept(s) lion")
    assert not (tmp_path / "runs").exists()  # nothing was edited or written
