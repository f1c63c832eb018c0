"""`swapbench eval --prompts FILE.csv`: the field's prompt-file layout (ESD/UCE: case_number, prompt,
evaluation_seed, class), each row drawn with its own seed, its concepts mapped to the judge's labels."""

import csv
import json

import numpy as np
import pytest
from _cli import assert_one_line_error
from PIL import Image

from swapbench.cli import main
from swapbench.errors import UserError
from swapbench.eval.prompt_files import custom_items, parse_concept_map

LABELS = ["giraffe", "zebra", "elephant", "horse", "lion", "cow", "donkey", "deer", "okapi"]
# ESD's column layout, with the header's case and spacing varied and an extra column the reader ignores.
HEADER = [" Case_Number", "prompt ", "Evaluation_Seed", " CLASS ", "evaluation_guidance"]
ROWS = [  # case_number, prompt, seed, concept as the file names it
    (10, "a giraffe by a river", 3, "giraffe"),
    (11, "a giraffe by a river", 11, "giraffe"),
    (12, "a zebra at dawn", 5, "Zebra"),
    (13, "a horse in a field", 7, "wild horse"),
    (14, "a horse in a field", 2, "wild horse"),
    (15, "a horse in a field", 9, "wild horse"),
    (16, "a lion resting, eyes closed", 4, "lion"),
    (17, "an elephant near the water", 0, "elephant"),
]
MAPPING = ["--prompt-concepts", "wild horse=horse"]
TINY_EVAL = ["--suite", "quick", "--set", "eval.steps=2", "--set", "eval.seeds=1", "--set", "eval.keep_samples=4"]


def _write_csv(path, header, rows):
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])
    return path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A savanna run trained for two steps: what is measured here is which images are drawn, not the swap."""
    out = tmp_path_factory.mktemp("runs")
    assert main(["train", "--out", str(out), "--name", "tiny", "--set", "train.max_steps=2", "--set",
                 "train.batch_size=4", "--set", "data.subset_size=300", "--set", "train.warmup_steps=1",
                 "--set", "train.cache_views=1", "--set", "train.checkpoint_every=0"]) == 0
    return out / "tiny"


def test_each_csv_row_is_drawn_with_its_own_seed_and_scored_by_its_concept(tiny_run, tmp_path, capsys):
    from swapbench.config import load_config
    from swapbench.eval.evaluate import prepare_pipeline
    from swapbench.eval.samples import to_uint8
    from swapbench.eval.sampling import sample
    from swapbench.loading import load_pipeline, resolve_model

    prompts = _write_csv(tmp_path / "imagenette-style.csv", HEADER, [(*row, 7.5) for row in ROWS])
    out = tmp_path / "e"
    assert main(["eval", str(tiny_run), "--prompts", str(prompts), *MAPPING, *TINY_EVAL, "--out", str(out)]) == 0
    assert "draws each row with its own seed (column evaluation_seed); eval.seeds=1" in capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    custom = [row for row in results["per_prompt"] if row["group"] == "custom"]
    # One image per file row, with the row's seed and case number (eval.seeds=1 shaped only the suite).
    assert [(r["case_number"], r["prompt"], r["seed"]) for r in custom] == [row[:3] for row in ROWS]
    assert [r["concept"] for r in custom] == ["giraffe"] * 2 + ["zebra"] + ["horse"] * 3 + ["lion", "elephant"]
    assert all(r["seed"] == 0 for r in results["per_prompt"] if r["group"] != "custom")
    # A swapped concept succeeds when judged as its partner, any other when judged as itself.
    partner = {"giraffe": "zebra", "zebra": "giraffe"}
    assert all(r["success"] == (r["tuned_label"] == partner.get(r["concept"], r["concept"])) for r in custom)
    # The intervals cluster by prompt: 8 images of 5 prompts.
    m = results["metrics"]
    assert (m["custom"]["n"], m["custom"]["n_clusters"]) == (8, 5)
    assert m["custom"]["value"] == pytest.approx(np.mean([r["success"] for r in custom]), abs=1e-6)
    sizes = {c: (m[f"custom/{c}"]["n"], m[f"custom/{c}"]["n_clusters"]) for c in ("giraffe", "zebra", "horse")}
    assert sizes == {"giraffe": (2, 1), "zebra": (1, 1), "horse": (3, 1)}
    assert "custom/wild horse" not in m

    # The kept base image of each row is the base model's image for that row's seed, and not another seed's.
    cfg = load_config("savanna", None, ["eval.steps=2"])
    base = prepare_pipeline(load_pipeline(resolve_model(cfg.model.pretrained), safety_checker=False), cfg, "cpu")
    for row in (custom[0], custom[1], custom[5]):
        kept = np.asarray(Image.open(out / row["images"]["base"]).convert("RGB")).astype(int)
        redrawn = to_uint8(sample(base, [row["prompt"]] * 2, [row["seed"], row["seed"] + 1], cfg.eval.steps,
                                  cfg.eval.guidance_scale, resolution=cfg.eval.resolution)).astype(int)
        assert np.abs(kept - redrawn[0]).max() <= 1
        assert np.abs(kept - redrawn[1]).mean() > 5


def test_seedless_files_take_the_suite_seeds_and_concepts_map_in_either_format(tmp_path):
    csv_file = _write_csv(tmp_path / "p.csv", ["prompt", "categories", "notes"],
                          [("a cow grazing", "Cattle", "x"), ("a deer at dusk", "deer", "")])
    mapping = parse_concept_map(" cattle = cow , ", LABELS)
    items = custom_items(csv_file, LABELS, 3, mapping).items
    assert [(i.group, i.concept, i.prompt, i.seeds, i.case_numbers) for i in items] == [
        ("custom", "cow", "a cow grazing", (0, 1, 2), ()), ("custom", "deer", "a deer at dusk", (0, 1, 2), ())]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": "a cow grazing", "concept": "CATTLE"}\n')
    prompts = custom_items(jsonl, LABELS, 2, mapping)
    assert prompts.seed_column is None and [(i.concept, i.seeds) for i in prompts.items] == [("cow", (0, 1))]
    with pytest.raises(UserError, match="not a label of the suite's judge"):
        custom_items(jsonl, LABELS, 2, {})


BAD_FILES = {
    # name: (file text, what the one line must say)
    "empty.csv": ("", ["is empty", "prompt column"]),
    "header-only.csv": ("prompt,evaluation_seed,class\n", ["holds no prompts"]),
    "no-prompt.csv": ("text,evaluation_seed,class\na giraffe,1,giraffe\n", ["no prompt column", "text"]),
    "no-concept.csv": ("prompt,evaluation_seed\na giraffe,1\n", ["no concept column", "class"]),
    "bad-seed.csv": ("prompt,evaluation_seed,class\na giraffe,1,giraffe\na zebra,two,zebra\n",
                     [":3:", "seed 'two'", "evaluation_seed", "whole number"]),
    "fraction-seed.csv": ("prompt,seed,class\na giraffe,1.5,giraffe\n", [":2:", "seed '1.5'"]),
    "unquoted-comma.csv": ("prompt,seed,class\na giraffe, tall,1,giraffe\n", [":2:", "4 cells", "quote"]),
    "empty-concept.csv": ("prompt,seed,class\na giraffe,1,\n", [":2:", "class cell is empty"]),
    "same-seed-twice.csv": ("prompt,seed,class\na giraffe,1,giraffe\na zebra,1,zebra\na giraffe,1,giraffe\n",
                            [":4:", "seed 1 of line 2", "same image twice"]),
    "two-concepts.csv": ("prompt,seed,class\na giraffe,1,giraffe\na giraffe,2,zebra\n",
                         [":3:", "'zebra' here but 'giraffe' on line 2"]),
    "unknown-concept.csv": ("prompt,seed,class\na giraffe,1,giraffe\na church,1,church\n",
                            [":3:", "concept 'church'", "giraffe, zebra", "--prompt-concepts 'church=LABEL'"]),
    "not-json.jsonl": ('{"prompt": "a giraffe"}\n', [":1", "\"prompt\" and \"concept\""]),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_prompt_files_are_one_line_naming_the_file_row_and_fix(name, tmp_path, capsys):
    text, needles = BAD_FILES[name]
    path = tmp_path / name
    path.write_text(text)
    code = main(["eval", "--model", "base", "--suite", "quick", "--prompts", str(path)])
    assert_one_line_error(capsys, code, str(path), *needles)


@pytest.mark.parametrize("mapping, needles", [
    ("church=building", ["maps 'church' to 'building'", "not a label", "okapi"]),
    ("church", ["entry 'church' must be NAME=LABEL"]),
])
def test_bad_concept_mappings_are_one_line(mapping, needles, tmp_path, capsys):
    path = _write_csv(tmp_path / "p.csv", ["prompt", "class"], [("a church", "church")])
    code = main(["eval", "--model", "base", "--suite", "quick", "--prompts", str(path), "--prompt-concepts", mapping])
    assert_one_line_error(capsys, code, "--prompt-concepts", *needles)


def test_a_mapping_without_a_prompt_file_is_one_line(capsys):
    code = main(["eval", "--model", "base", "--suite", "quick", "--prompt-concepts", "church=horse"])
    assert_one_line_error(capsys, code, "pass the file with --prompts")
