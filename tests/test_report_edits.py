"""report.html of a run that erases and remaps: its edits named, a section per edited group, the confusion
tables with the 'none of these' column, and what the erased concept became."""

import json

import pytest
from _fixtures_reports import CHROMIUM, chromium, table_rows
from PIL import Image

from swapbench.edits import parse_edits
from swapbench.eval import metrics as M
from swapbench.eval import scoring, summaries
from swapbench.io import atomic_write_json
from swapbench.reports.html import write_report
from swapbench.world.generator import make_single

LABELS = ["giraffe", "zebra", "elephant", "horse", "lion", "cow", "donkey", "deer", "okapi", "empty landscape"]
EDITS = parse_edits([{"erase": "giraffe"}, {"remap": "lion", "to": "cow"}], [])
ERASED_AS = ("zebra", "horse", "empty landscape", "empty landscape", "giraffe")
"""What the tuned model draws for a giraffe prompt at seeds 0-4 (seed 4: the erasure failed)."""


def _row(group, concept, prompt, seed, base, tuned, **edit):
    success = EDITS.succeeds(concept, tuned) if edit else tuned == base
    return {"group": group, "kind": group if group != "generality" else "paraphrases", "concept": concept, **edit,
            "prompt": prompt, "seed": seed, "base_label": base, "tuned_label": tuned, "success": success,
            "scores": {label: 0.9 if label == tuned else 0.1 / (len(LABELS) - 1) for label in LABELS}}


def _rows():
    rows = []
    for template in ("a photo of a {}", "a {} in a field", "there is a {}"):
        rows += [_row("erase", "giraffe", template.format("giraffe"), s, "giraffe", ERASED_AS[s], erased=True)
                 for s in range(5)]
        rows += [_row("remap", "lion", template.format("lion"), s, "lion", "cow" if s else "lion", target="cow")
                 for s in range(5)]
    for concept in ("zebra", "elephant", "horse", "cow"):
        rows += [_row("control", concept, f"a photo of a {concept}", s, concept, concept) for s in range(5)]
    for concept in ("donkey", "deer", "okapi"):
        rows += [_row("specificity", concept, f"a photo of a {concept}", s, concept, concept) for s in range(5)]
    for prompt in ("two giraffes", "a giraffe at dusk", "an image of a lone giraffe"):
        rows += [_row("generality", "giraffe", prompt, s, "giraffe", ERASED_AS[s], erased=True) for s in range(5)]
    return rows


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    eval_dir = tmp_path_factory.mktemp("erase") / "eval"
    rows = _rows()
    for i, row in enumerate(rows):
        if row["seed"] < 2:  # images of the first two seeds, as eval.keep_samples keeps them
            folder = f"samples/{row['group']}/{row['prompt'].replace(' ', '-')}"
            row["images"] = {which: f"{folder}/seed{row['seed']}-{which}.png" for which in ("base", "tuned")}
            for which in ("base", "tuned"):
                path = eval_dir / row["images"][which]
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(make_single(row[f"{which}_label"], seed=row["seed"], index=i)).save(path)
    single = [r for r in rows if r["group"] != "generality"]
    results = {
        "schema_version": 1, "run": "erase-run", "suite": "quick", "swap_pairs": [], "edits": EDITS.to_config(),
        "created": "2026-12-04T00:00:00+00:00", "labels": LABELS, "per_prompt": rows,
        "metrics": {**scoring.score_rows(rows, EDITS, 200, 0), **summaries.score(rows, EDITS, 200, 0)},
        "confusion": M.confusion([(r["concept"], r["tuned_label"]) for r in single], LABELS),
        "confusion_base": M.confusion([(r["concept"], r["base_label"]) for r in single], LABELS),
        "provenance": {"judge": "world:savanna"}}
    atomic_write_json(eval_dir / "results.json", results)
    return write_report(eval_dir)


def test_report_names_the_edits_and_shows_each_edited_group(report):
    html = report.read_text()
    assert '<div id="edits">edits: <b>erase giraffe; lion -&gt; cow</b></div>' in html
    erase = html.index('id="group-erase"')
    assert html.index('id="group-remap"') < erase < html.index('id="group-control"')
    assert 'Erase: prompts naming an erased concept <span class="muted">· erase_success 0.800' in html[erase:]
    assert "Remap: prompts naming a remapped concept" in html
    assert ("After a perfect edit, giraffe leaves its own column; lion moves to the cow column; every other row is "
            "unchanged") in html
    rows = table_rows(html, "data-metric")
    assert rows["erase_success/giraffe"][1] == "0.800" and rows["remap_success/lion->cow"][1] == "0.800"
    assert rows["mace_h"][1] == "0.857"  # 3 / (1/(1 - 0.2) + 1/1 + 1/(1 - 0.2))


def test_confusion_has_the_nothing_column_and_the_erased_concept_shows_what_it_became(report):
    html = report.read_text()
    tuned = html[html.index('id="confusion-tuned"'):]
    tuned = tuned[:tuned.index("</table>")]
    assert '<th title="empty landscape">empty</th>' in tuned
    assert 'title="giraffe → empty landscape: 6"' in tuned and 'title="giraffe → giraffe: 3"' in tuned
    became = table_rows(html, "data-label")
    assert list(became) == ["giraffe", "empty landscape", "horse", "zebra"]  # its own label, then by the tuned count
    assert [became["empty landscape"][i] for i in (1, 3)] == ["0", "6"]
    assert [became["giraffe"][i] for i in (1, 3)] == ["15", "3"]
    assert [became["zebra"][i] for i in (1, 3)] == ["0", "3"]


@pytest.mark.skipif(not CHROMIUM.is_file(), reason="/usr/bin/chromium absent")
def test_erase_report_renders_in_chromium(report, tmp_path):
    dom = chromium(report, tmp_path / "profile", "--dump-dom")
    became = table_rows(dom, "data-label")
    assert became["giraffe"][0] == "giraffe" and became["empty landscape"][3] == "6"
    assert json.loads((report.parent / "results.json").read_text())["metrics"]["mace_h"]["n_clusters"] == 3 + 7 + 3
