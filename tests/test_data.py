import datasets
import pytest

from swapbench.config import DataConfig
from swapbench.data.prepare import prepare
from swapbench.data.sources import load_records
from swapbench.edits.words import ConceptSwapper
from swapbench.errors import UserError

SWAP = ConceptSwapper([["giraffe", "zebra"]])


@pytest.mark.parametrize("before, after", [
    ("Two Zebras near a giraffe.", "Two Giraffes near a zebra."),
    ("A GIRAFFE and zebras", "A ZEBRA and giraffes"),
    ("a giraffe-like animal", "a zebra-like animal"),
    ("zebrafish and giraffes", "zebrafish and zebras"),
    ("The giraffe's neck.", "The zebra's neck."),
    ("no animals here", "no animals here"),
])
def test_swap_keeps_plurals_case_and_whole_words(before, after):
    assert SWAP.swap_text(before) == after
    assert SWAP.swap_text(SWAP.swap_text(before)) == before


def test_swap_tokens_and_mentions():
    assert SWAP.swap_tokens(["two", "Zebras", "giraffe"]) == ["two", "Giraffes", "zebra"]
    assert SWAP.mentioned("Giraffes and a zebra") == {"giraffe", "zebra"}
    assert SWAP.mentioned("a zebrafish") == set()


def _records(n_g: int, n_z: int, n_both: int, n_other: int) -> datasets.Dataset:
    rows = ([{"image": f"g{i}.png", "captions": ["A giraffe eating.", "giraffe"], "tokens": []} for i in range(n_g)]
            + [{"image": f"z{i}.png", "captions": ["Two zebras.", "zebra"], "tokens": []} for i in range(n_z)]
            + [{"image": f"b{i}.png", "captions": ["A zebra.", "A giraffe too."], "tokens": []} for i in range(n_both)]
            + [{"image": f"o{i}.png", "captions": ["An elephant."], "tokens": []} for i in range(n_other)])
    return datasets.Dataset.from_list(rows)


def test_filter_balance_and_audit_follow_the_recipe_exactly():
    cfg = DataConfig(source="test", subset_size=0, keep_other=0.5)
    # after swapping, the 10 zebra images are captioned "giraffe" (g=10) and the 20 giraffe images "zebra" (z=20)
    out = prepare(_records(20, 10, 3, 8), cfg, seed=0)
    bal = out.audit["balance"]
    assert (bal["giraffe"], bal["zebra"], bal["n"]) == (10, 20, 5)  # n = min(10 // 1.7, 20) = 5
    assert (bal["kept_giraffe"], bal["kept_zebra"]) == (8, 5)  # floor(1.7 * 5) = 8
    assert len(out.target) == 13 and len(out.other) == 4
    stage = {s["stage"]: s for s in out.audit["stages"]}
    assert stage["swap+filter"]["dropped_both_words"] == 3
    assert all("giraffe" in r["captions"][0].lower() for r in out.target if r["image"].startswith("z"))
    assert out.audit["examples"][0]["before"] != out.audit["examples"][0]["after"]


def test_balance_is_seeded():
    cfg = DataConfig(source="test", subset_size=0)
    a = [r["image"] for r in prepare(_records(20, 10, 0, 4), cfg, seed=1).target]
    b = [r["image"] for r in prepare(_records(20, 10, 0, 4), cfg, seed=1).target]
    c = [r["image"] for r in prepare(_records(20, 10, 0, 4), cfg, seed=2).target]
    assert a == b and sorted(a) != sorted(c)


def test_absent_swap_word_is_a_user_error():
    with pytest.raises(UserError, match="'zebra' never appears"):
        prepare(_records(5, 0, 0, 3), DataConfig(source="test", subset_size=0), seed=0)


def test_hf_sentences_layout_swaps_tokens_and_raw(tmp_path, coco_root):
    coco = load_records(str(coco_root), "train")
    rows = [{"filepath": r["image"], "sentences": [{"raw": c, "tokens": c.rstrip(".").split()} for c in r["captions"]]}
            for r in coco.to_list()]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "hf"))
    loaded = load_records(str(tmp_path / "hf"), "train")
    assert loaded.layout == "row per image, sentences list"
    assert len(loaded) == 90 and loaded.read([0])[0]["tokens"]
    out = prepare(loaded, DataConfig(source="hf", subset_size=0, balance_ratio=None), seed=0)
    for record in out.target:
        joined = " ".join(t for toks in record["tokens"] for t in toks).lower()
        raw = " ".join(record["captions"]).lower()
        assert ("giraffe" in joined) == ("giraffe" in raw)


def test_coco_reader_groups_five_captions(coco_root):
    ds = load_records(str(coco_root), "train")
    assert len(ds) == 90 and all(len(r["captions"]) == 5 for r in ds.to_list())
    with pytest.raises(UserError, match="not found"):
        load_records(str(coco_root), "test")
