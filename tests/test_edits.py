"""The ``edits`` config list (swapbench/edits/): what parses, what each kind means, and the one-line errors."""

import pytest
from _cli import assert_one_line_error

from swapbench.cli import main
from swapbench.config import load_config
from swapbench.edits import parse_edits
from swapbench.errors import UserError


def test_edits_parse_through_set_and_say_what_they_mean():
    edits = load_config("savanna", None, ["edits=[{erase: giraffe}]"]).edit_set
    assert edits.to_config() == [{"erase": "giraffe"}] and edits.sources == ["giraffe"] and edits.erases
    assert edits.target("giraffe") is None and edits.replacement("giraffe") is None
    assert edits.metrics() == ["erase_success/giraffe"] and edits.verb == "erased"

    three = load_config("savanna", None, ["edits=[{swap: [Giraffe, zebra]}, {remap: lion, to: cow}, "
                                          "{erase: horse, anchor: deer}]"]).edit_set
    assert three.to_config() == [{"swap": ["giraffe", "zebra"]}, {"remap": "lion", "to": "cow"},
                                 {"erase": "horse", "anchor": "deer"}]
    assert three.sources == ["giraffe", "zebra", "lion", "horse"]
    assert three.concepts == ["giraffe", "zebra", "lion", "cow", "horse", "deer"]
    assert three.targets() == {"giraffe": "zebra", "zebra": "giraffe", "lion": "cow", "horse": None}
    # the stand-ins of text-space methods: a target, else the anchor
    assert [three.replacement(c) for c in three.sources] == ["zebra", "giraffe", "cow", "deer"]
    assert three.describe() == "giraffe <-> zebra; lion -> cow; erase horse (anchor deer)"
    assert three.swap_pairs == [("giraffe", "zebra")] and three.verb == "edited"
    assert three.succeeds("lion", "cow") and not three.succeeds("lion", "lion")
    assert three.succeeds("horse", "nothing") and not three.succeeds("horse", "horse")
    assert three.metrics() == ["swap_success/giraffe->zebra", "swap_success/zebra->giraffe", "remap_success/lion->cow",
                               "erase_success/horse", "erase_anchor/horse->deer"]


def test_no_edits_means_the_swaps_of_data_swap_pairs():
    cfg = load_config("savanna", None, ["data.swap_pairs=[[horse,cow],[lion,deer]]"])
    assert cfg.edits == [] and cfg.edit_set.to_config() == [{"swap": ["horse", "cow"]}, {"swap": ["lion", "deer"]}]
    assert cfg.edit_set == parse_edits([{"swap": ["horse", "cow"]}, {"swap": ["lion", "deer"]}], [])


@pytest.mark.parametrize(("item", "needles"), [
    ("{smudge: giraffe}", ["exactly one kind of swap, remap, erase", "edits=[{erase: giraffe}]"]),
    ("{swap: [a, b], erase: c}", ["exactly one kind"]),
    ("{erase: giraffe, to: zebra}", ["unknown key(s) to", "erase takes erase, anchor"]),
    ("{remap: lion, to: cow, anchor: deer}", ["unknown key(s) anchor", "remap takes remap, to"]),
    ("{erase: giraffe, anchor: giraffe}", ["names itself as its anchor"]),
    ("{remap: lion, to: lion}", ["maps a concept onto itself"]),
    ("{remap: lion}", ["needs to:"]),
    ("{swap: [giraffe]}", ["must be a pair of two concepts"]),
    ("{swap: [lion, Lion]}", ["names one concept twice"]),
    ("{erase: ''}", ["must be a concept name"]),
    ("{erase: giraffe}, {remap: giraffe, to: zebra}", ["edit 'giraffe' twice", "erase giraffe; giraffe -> zebra"]),
    ("{swap: [giraffe, zebra]}, {erase: zebra}", ["edit 'zebra' twice"]),
    ("{remap: giraffe, to: zebra}, {erase: zebra}", ["giraffe -> zebra draws zebra instead of giraffe",
                                                     "erase zebra edits zebra itself"]),
    ("{erase: giraffe, anchor: horse}, {swap: [horse, cow]}", ["draws horse instead of giraffe"]),
])
def test_bad_edits_fail_when_the_config_loads(item, needles):
    with pytest.raises(UserError) as e:
        load_config("savanna", None, [f"edits=[{item}]"])
    assert "\n" not in str(e.value)
    for needle in needles:
        assert needle in str(e.value), str(e.value)


def test_edits_and_swap_pairs_together_are_refused():
    with pytest.raises(UserError, match=r"both edits and data.swap_pairs=\[\['horse', 'cow'\]\] are set"):
        load_config("savanna", None, ["edits=[{erase: giraffe}]", "data.swap_pairs=[[horse,cow]]"])
    # data.swap_pairs at its default beside edits is no conflict: edits says what the run edits
    assert load_config("savanna", None, ["edits=[{erase: giraffe}]",
                                         "data.swap_pairs=[[giraffe,zebra]]"]).edit_set.sources == ["giraffe"]


def test_a_bad_edit_is_a_one_line_cli_error(tmp_path, capsys):
    code = main(["train", "--out", str(tmp_path), "--name", "x", "--set", "edits=[{erase: giraffe, anchor: giraffe}]"])
    assert_one_line_error(capsys, code, "names itself as its anchor")
    assert not (tmp_path / "x").exists()
