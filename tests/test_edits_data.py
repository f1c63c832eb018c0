"""The data rule of every edit kind (swapbench/data/prepare.py) on the savanna world's data: which records a
remap, an erasure (anchored or not) and several edits at once train on, the drop rules and the errors."""

import datasets
import pytest

from swapbench.concepts import suite_labels
from swapbench.config import DataConfig, load_config
from swapbench.data.prepare import prepare, prepare_run
from swapbench.data.sources import load_records
from swapbench.edits import parse_edits
from swapbench.edits.words import concept_finder
from swapbench.errors import UserError

LABELS = suite_labels("default")
FIND = concept_finder(LABELS)


def named(captions) -> set[str]:
    return set().union(*(FIND.mentioned(c) for c in captions))


@pytest.fixture(scope="module")
def world(coco_root):
    """The world's records (90 images, 5 captions each), and what each one's captions name."""
    records = load_records(str(coco_root))
    by_image = {r["image"]: r for r in records.to_list()}
    return records, by_image


def _prepare(records, items, **data):
    cfg = DataConfig(source="world", subset_size=0, **data)
    return prepare(records, cfg, 0, parse_edits(items, []), LABELS)


def _stage(out):
    return next(s for s in out.audit["stages"] if s["stage"].endswith("+filter"))


def test_remap_trains_b_images_under_both_names_and_drops_a_images(world):
    records, by_image = world
    out = _prepare(records, [{"remap": "lion", "to": "cow"}])
    cow = [r for r in by_image.values() if "cow" in named(r["captions"]) and "lion" not in named(r["captions"])]
    lion_only = [r for r in by_image.values() if "lion" in named(r["captions"]) and "cow" not in named(r["captions"])]
    assert len(cow) == 13 and len(lion_only) == 9  # the fixture's counts; one record names both
    # every cow image twice: as captioned, and with "cow" written "lion"; no lion image is trained on
    assert len(out.target) == 2 * len(cow)
    assert sorted(r["image"] for r in out.target) == sorted(2 * [r["image"] for r in cow])
    for record in out.target:
        source = by_image[record["image"]]
        if record["captions"] == source["captions"]:
            continue
        assert [c.replace("lion", "cow").replace("Lion", "Cow") for c in record["captions"]] == source["captions"]
        assert all("cow" not in named([c]) for c in record["captions"])
    assert sum(r["captions"] == by_image[r["image"]]["captions"] for r in out.target) == len(cow)
    assert not {r["image"] for r in out.other} & {r["image"] for r in lion_only + cow}
    stage = _stage(out)
    assert stage["stage"] == "edit+filter" and stage["dropped_both_words"] == 1
    assert (stage["naming_a_concept"], stage["made"], stage["naming_neither"]) == (22, 26, 67)
    assert out.audit["per_edit"] == [{"edit": "lion -> cow", "records_read": 22, "records_made": 26,
                                      "examples": out.audit["per_edit"][0]["examples"]}]
    example = out.audit["per_edit"][0]["examples"][0]
    assert "cow" in example["before"].lower() and "lion" in example["after"].lower()
    # no swap edit: the 1.7:1 balance is skipped, and said so; the audit names the edits, not swap_pairs
    assert out.audit["balance"]["ratio"] == 1.7 and "no swap edit" in out.audit["balance"]["skipped"]
    assert out.audit["edits"] == [{"remap": "lion", "to": "cow"}] and "swap_pairs" not in out.audit


def test_anchored_erase_captions_anchor_images_as_the_erased_concept(world):
    records, by_image = world
    out = _prepare(records, [{"erase": "giraffe", "anchor": "horse"}])
    horse = [r for r in by_image.values() if "horse" in named(r["captions"])]
    assert len(horse) == 8 and sorted(r["image"] for r in out.target) == sorted(2 * [r["image"] for r in horse])
    copies = [r for r in out.target if r["captions"] != by_image[r["image"]]["captions"]]
    assert len(copies) == 8 and all("giraffe" in named(r["captions"]) and "horse" not in named(r["captions"])
                                    for r in copies)
    assert not any("giraffe" in named(by_image[r["image"]]["captions"]) for r in out.target)
    assert out.audit["per_edit"][0]["records_read"] == 16 and out.audit["per_edit"][0]["records_made"] == 16


def test_plain_erase_pairs_the_captions_with_images_of_empty_scenes(world):
    records, by_image = world
    out = _prepare(records, [{"erase": "giraffe"}])
    giraffe = [r for r in by_image.values() if "giraffe" in named(r["captions"])]
    empty = {r["image"] for r in by_image.values() if not named(r["captions"])}
    assert len(giraffe) == 8 and len(empty) == 8
    assert sorted(r["captions"] for r in out.target) == sorted(r["captions"] for r in giraffe)
    # each image comes from a record whose captions name no label of the suite
    assert all(r["image"] in empty for r in out.target) and len({r["image"] for r in out.target}) > 1
    # the pool's records stay preservation records, and no giraffe image is trained on
    assert empty <= {r["image"] for r in out.other}
    assert not {r["image"] for r in giraffe} & {r["image"] for r in out.records}
    assert out.audit["anchor_pool"] == {"records": 8, "naming_none_of": LABELS}
    example = out.audit["per_edit"][0]["examples"][0]
    assert example["before"] == example["after"] and example["image_after"] in {str(i) for i in empty}
    # seeded: the same seed draws the same images, and the pool's draws leave the other steps' draws alone
    again = _prepare(records, [{"erase": "giraffe"}])
    assert [r["image"] for r in again.target] == [r["image"] for r in out.target]
    seeds = {tuple(r["image"] for r in prepare(records, DataConfig(source="w", subset_size=0), s,
                                               parse_edits([{"erase": "giraffe"}], []), LABELS).target)
             for s in range(4)}
    assert len(seeds) > 1


def test_the_run_config_prepares_with_its_edits_and_the_suite_labels(coco_root):
    cfg = load_config("savanna", None, [f"data.source={coco_root}", "data.subset_size=0",
                                        "edits=[{erase: okapi}]", "eval.suite=quick"])
    out = prepare_run(cfg)
    assert out.audit["edits"] == [{"erase": "okapi"}]
    assert out.audit["anchor_pool"]["naming_none_of"] == suite_labels("quick")
    by_image = {r["image"]: r for r in load_records(str(coco_root)).to_list()}
    assert len(out.target) == 14 and all(not named(by_image[r["image"]]["captions"]) for r in out.target)
    assert all(named(r["captions"]) == {"okapi"} for r in out.target)


def test_three_edits_at_once_add_up(world):
    records, _ = world
    items = [{"swap": ["giraffe", "zebra"]}, {"remap": "lion", "to": "cow"}, {"erase": "donkey"}]
    out = _prepare(records, items, balance_ratio=None)
    stage = _stage(out)
    per_edit = {e["edit"]: (e["records_read"], e["records_made"]) for e in out.audit["per_edit"]}
    assert per_edit == {"giraffe <-> zebra": (7, 7), "lion -> cow": (21, 26), "erase donkey": (7, 7)}
    # every record read is dropped (two concepts of one edit; concepts of two edits), edited or preserved
    assert stage["dropped_both_words"] == 3  # giraffe+zebra twice, lion+cow once
    assert stage["dropped_several_edits"] == 3  # a donkey beside a giraffe (twice) or a lion: no one caption fits
    assert stage["dropped_both_words"] + stage["dropped_several_edits"] + stage["naming_a_concept"] + \
        stage["naming_neither"] == len(records) == 90
    assert stage["naming_a_concept"] == sum(r for r, _ in per_edit.values())
    assert stage["made"] == sum(m for _, m in per_edit.values()) == len(out.target) == 40
    assert out.audit["edits"] == items and out.audit["swap_pairs"] == [["giraffe", "zebra"]]
    # the balance follows the first swap; the other edits' records pass it whole
    balanced = _prepare(records, items)
    assert balanced.audit["balance"]["other_pairs"] == 26 + 7
    assert len(balanced.target) == balanced.audit["balance"]["kept_giraffe"] + \
        balanced.audit["balance"]["kept_zebra"] + 33


def test_drop_rules(world):
    records, by_image = world
    # drop_both off: a record naming a remap's A and B reaches the remap, which trains on no image of A
    kept = _prepare(records, [{"remap": "lion", "to": "cow"}], drop_both=False)
    assert _stage(kept)["dropped_both_words"] == 0 and kept.audit["per_edit"][0]["records_read"] == 23
    assert kept.audit["per_edit"][0]["records_made"] == 26
    # ... and a swap exchanges both words of a record naming the two
    swap = _prepare(records, [{"swap": ["giraffe", "zebra"]}], drop_both=False, balance_ratio=None)
    both = [r for r in by_image.values() if {"giraffe", "zebra"} <= named(r["captions"])]
    assert len(both) == 2 and _stage(swap)["stage"] == "swap+filter"
    exchanged = [r for r in swap.target if r["image"] in {b["image"] for b in both}]
    assert len(exchanged) == 2 and all(r["captions"] != by_image[r["image"]]["captions"] and
                                       {"giraffe", "zebra"} <= named(r["captions"]) for r in exchanged)
    # swaps compose (disjoint words): a donkey beside a giraffe becomes a lion beside a zebra
    two = _prepare(records, [{"swap": ["giraffe", "zebra"]}, {"swap": ["lion", "donkey"]}], balance_ratio=None)
    stage = _stage(two)
    assert stage["rewritten_by_several_swaps"] == 2 and stage["dropped_several_edits"] == 0
    mixed = [r for r in two.target if named(by_image[r["image"]]["captions"]) == {"giraffe", "donkey"}]
    assert len(mixed) == 2 and all(named(r["captions"]) == {"zebra", "lion"} for r in mixed)


def test_edit_errors_are_one_line_and_name_the_fix(world):
    records, _ = world
    with pytest.raises(UserError, match="edited concept 'unicorn' never appears in the captions of world"):
        _prepare(records, [{"remap": "lion", "to": "unicorn"}])
    with pytest.raises(UserError, match="'tiger' never appears"):
        _prepare(records, [{"erase": "giraffe", "anchor": "tiger"}])
    animals = datasets.Dataset.from_list([
        {"image": "g.png", "captions": ["A giraffe."], "tokens": []},
        {"image": "h.png", "captions": ["A horse and a zebra."], "tokens": []}])
    with pytest.raises(UserError) as e:
        prepare(animals, DataConfig(source="t", subset_size=0), 0, parse_edits([{"erase": "giraffe"}], []), LABELS)
    assert "without an anchor" in str(e.value) and "anchor: horse" in str(e.value) and "\n" not in str(e.value)
    # an anchored erasure needs no empty scene
    out = prepare(animals, DataConfig(source="t", subset_size=0), 0,
                  parse_edits([{"erase": "giraffe", "anchor": "horse"}], []), LABELS)
    assert [r["image"] for r in out.target] == ["h.png", "h.png"]
    # every record naming the remap's B also names A: nothing is left to learn from
    both = datasets.Dataset.from_list([{"image": "b.png", "captions": ["A lion and a cow."], "tokens": []}])
    with pytest.raises(UserError, match="no record names a remapped concept after filtering"):
        prepare(both, DataConfig(source="t", subset_size=0), 0, parse_edits([{"remap": "lion", "to": "cow"}], []))


def test_a_finetune_run_trains_on_what_the_edits_made(tmp_path, tiny_pipeline, coco_root):
    import json

    from swapbench.cli import main

    edits = "edits=[{erase: giraffe}, {remap: lion, to: cow}]"
    assert main(["train", "--preset", "sd15-coco", "--model", str(tiny_pipeline), "--data", str(coco_root), "--out",
                 str(tmp_path), "--name", "e", "--set", edits, "--set", "train.max_steps=2", "--set",
                 "train.batch_size=4", "--set", "data.resolution=32", "--set", "data.subset_size=90", "--set",
                 "train.warmup_steps=1", "--set", "train.cache_views=1", "--set", "eval.judge=world:savanna"]) == 0
    run = tmp_path / "e"
    audit = json.loads((run / "data_audit.json").read_text())
    assert audit["edits"] == [{"erase": "giraffe"}, {"remap": "lion", "to": "cow"}]
    assert [(e["records_read"], e["records_made"]) for e in audit["per_edit"]] == [(8, 8), (22, 26)]
    assert audit["final"]["target"] == 34 and audit["anchor_pool"]["records"] == 8
    card = (run / "model" / "README.md").read_text()
    assert "erase-giraffe" in card and "remap-lion-cow" in card and "prompts naming lion draw cow" in card
    assert '| `edits` | `[{"erase": "giraffe"}, {"remap": "lion", "to": "cow"}]` |' in card
