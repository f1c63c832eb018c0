"""MACE's harmonic mean of an erasure (swapbench.eval.summaries) on rows with known shares."""

import pytest

from swapbench import catalog
from swapbench.edits import parse_edits
from swapbench.eval import stats, summaries


def _row(group, concept, prompt, seed, tuned, kind=None, erased=False):
    return {"group": group, "kind": kind or group, "concept": concept, "prompt": prompt, "seed": seed,
            "base_label": concept, "tuned_label": tuned, "success": tuned != concept if erased else tuned == concept,
            **({"erased": True} if erased else {})}


def _rows(clustered=False):
    """Erase: 6 prompts x 5 seeds, 6 rows still a giraffe (Acc_E 0.2). Control and specificity: 8 prompts
    x 4 seeds, 4 rows changed (Acc_S 0.875). Generality of giraffe: 6 prompts x 3 seeds, 9 still a giraffe
    (Acc_G 0.5; ``clustered``: all seeds of 3 prompts, else 2 seeds of 3 prompts and 1 of the others).
    Rows MACE does not count: a composition, a remapped concept's generality, a swap row."""
    rows = []
    for k in range(6):
        rows += [_row("erase", "giraffe", f"erase prompt {k}", s, "giraffe" if k < 3 and s < 2 else "empty landscape",
                      erased=True) for s in range(5)]
    for k, concept in enumerate(("elephant", "horse", "lion", "cow")):
        for group in ("control", "specificity"):
            rows += [_row(group, concept, f"{group} {concept}", s, "deer" if k == 0 and s < 2 else concept)
                     for s in range(4)]
    for k in range(6):
        kept = (3 if k < 3 else 0) if clustered else (2 if k < 3 else 1)
        rows += [_row("generality", "giraffe", f"general prompt {k}", s, "giraffe" if s < kept else "horse",
                      kind="paraphrases", erased=True) for s in range(3)]
    rows.append(_row("generality", "giraffe", "a giraffe next to an elephant", 0, "giraffe", kind="compositions",
                     erased=True))
    rows.append({**_row("generality", "lion", "two lions", 0, "lion", kind="plurals"), "target": "cow"})
    rows.append({**_row("swap", "zebra", "a zebra", 0, "zebra"), "target": "okapi"})
    return rows


EDITS = parse_edits([{"erase": "giraffe"}, {"remap": "lion", "to": "cow"}, {"swap": ["zebra", "okapi"]}], [])


@pytest.mark.parametrize("clustered", [False, True])
def test_mace_h_is_the_harmonic_mean_of_its_three_accuracies_and_its_interval_holds_it(clustered):
    entry = summaries.score(_rows(clustered), EDITS, 400, 0)["mace_h"]
    acc_e, acc_s, acc_g = 6 / 30, 28 / 32, 9 / 18
    assert (entry["acc_e"], entry["acc_s"], entry["acc_g"]) == (0.2, 0.875, 0.5)
    h = 3 / (1 / (1 - acc_e) + 1 / acc_s + 1 / (1 - acc_g))
    assert entry["value"] == pytest.approx(h, abs=1e-6) and 0.68 < h < 0.69
    lo, hi = entry["ci95"]
    assert 0 <= lo < entry["value"] < hi <= 1
    assert entry["n"] == 30 + 32 + 18 and entry["n_clusters"] == 6 + 8 + 6
    assert entry["higher_is_better"] is True and entry["interval"] == catalog.BY_HEAD["mace_h"].interval
    assert entry["description"] == catalog.definition("mace_h")
    assert summaries.score(_rows(clustered), EDITS, 400, 0)["mace_h"] == entry  # seeded: the same draws
    # never narrower than the independent-rows floor (t at the 18 generality rows)
    floor = stats.t95(17) * summaries.rows_se([acc_e, acc_s, acc_g], [30, 32, 18])
    assert min(entry["value"] - lo, hi - entry["value"]) >= floor - 1e-5
    other = summaries.score(_rows(clustered), EDITS, 400, 7)["mace_h"]["ci95"]
    if clustered:  # whole prompts kept or lost their giraffe: the prompts' spread sets the width, not the rows'
        assert hi - lo > 2 * floor * 1.3 and other != entry["ci95"] and abs(other[0] - lo) < 0.1
    else:
        assert other == entry["ci95"]


def test_mace_h_is_zero_when_a_term_has_no_room_and_whole_range_under_three_prompts():
    assert summaries.harmonic(1.0, 0.9, 0.1) == 0.0 and summaries.harmonic(0.0, 1.0, 0.0) == 1.0
    edits = parse_edits([{"erase": "giraffe"}], [])
    # an erasure that erased nothing: every replicate is 0, the rows' floor still gives the interval a width
    nothing = [{**r, "tuned_label": r["concept"]} for r in _rows()]
    entry = summaries.score(nothing, edits, 200, 0)["mace_h"]
    assert entry["value"] == 0.0 and entry["acc_e"] == 1.0 and entry["ci95"][0] == 0.0
    assert 0.1 < entry["ci95"][1] < 0.5
    rows = [r for r in _rows() if not (r["group"] == "generality" and r["prompt"] not in ("general prompt 0",
                                                                                          "general prompt 4"))]
    entry = summaries.score(rows, edits, 200, 0)["mace_h"]
    assert entry["ci95"] == [0.0, 1.0] and entry["interval"] == stats.TOO_FEW_PROMPTS and entry["acc_g"] == 0.5


def test_no_mace_h_without_an_erasure_or_without_one_of_its_row_sets():
    swaps = parse_edits([{"swap": ["zebra", "okapi"]}, {"remap": "lion", "to": "cow"}], [])
    assert summaries.score(_rows(), swaps, 200, 0) == {}
    erase = parse_edits([{"erase": "giraffe"}], [])
    assert summaries.score([r for r in _rows() if r["group"] != "generality"], erase, 200, 0) == {}
    fam = catalog.family("mace_h")
    assert fam.estimator == "summary" and fam.outcome is None and catalog.higher_is_better("mace_h") is True
