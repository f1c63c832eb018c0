import json
import os
import shutil

import numpy as np
import pytest
import torch
from _cli import assert_one_line_error

from swapbench.cli import main
from swapbench.edits import parse_edits
from swapbench.world import SHIPPED_WORLD

shipped = pytest.mark.skipif(not (SHIPPED_WORLD / "manifest.json").is_file(), reason="world not built yet")


def _metrics(path):
    return json.loads(path.read_text())["metrics"]


def test_every_shipped_suite_loads():
    from swapbench.assets import asset_names
    from swapbench.eval.suite import load_suite

    for name in asset_names("eval/suites"):
        suite = load_suite(name)
        assert set(suite.swapped) <= set(suite.labels)
        probes = {"forms", "unnamed"} if suite.trajectory else set()  # the robust suite's probes
        assert {i.group for i in suite.items} == {"swap", "control"} | (probes or {"generality", "specificity"})


def test_wilson_interval_known_values():
    from swapbench.eval.stats import wilson

    lo, hi = wilson(0, 10)
    assert lo == 0 and hi == pytest.approx(0.2775, abs=1e-3)
    lo, hi = wilson(45, 50)
    assert (lo, hi) == (pytest.approx(0.7864, abs=1e-3), pytest.approx(0.9565, abs=1e-3))


def test_kid_is_null_for_identical_samples_and_detects_a_shift():
    from swapbench.eval.metrics import fid_vs_base, kid_vs_base

    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(96, 16, generator=g), dim=1)
    same = kid_vs_base(x, x, 0)
    lo, hi = same["ci95"]
    assert lo < 0 < hi and hi - lo < 0.02 and same["n"] == 96
    assert fid_vs_base(x, x, 0, 20)["value"] < 1e-3
    # Same-seed pairs that barely moved must not read as negative drift (the paired-sample bias).
    nearly = kid_vs_base(x + 1e-3 * torch.randn(96, 16, generator=g), x, 0)
    assert nearly["ci95"][0] < 0 < nearly["ci95"][1]
    shifted = kid_vs_base(torch.nn.functional.normalize(x + 0.3, dim=1), x, 0)
    assert shifted["ci95"][0] > 0 and shifted["value"] > 5 * (hi - lo)
    assert kid_vs_base(x, x, 0) == same  # seeded


def test_mmd2_is_the_unbiased_estimator_for_any_set_sizes():
    from torchmetrics.image.kid import KernelInceptionDistance

    from swapbench.eval.metrics import _Identity, mmd2

    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(7, 16, generator=g).double(), torch.randn(10, 16, generator=g).double() + 0.5

    def k(a, b):
        return (a @ b / 16 + 1) ** 3

    m, n = len(x), len(y)
    within_x = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    within_y = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    cross = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    assert mmd2(x, y) == pytest.approx(float(within_x + within_y - 2 * cross), rel=1e-9)
    assert mmd2(y, x) == pytest.approx(mmd2(x, y), rel=1e-9)
    # Equal sizes: torchmetrics' own KID over one subset holding every sample gives the same number.
    kid = KernelInceptionDistance(feature=_Identity(16), subsets=1, subset_size=m, normalize=False)
    kid.update(y[:m], real=True)
    kid.update(x, real=False)
    assert float(kid.compute()[0]) == pytest.approx(mmd2(x, y[:m]), rel=1e-9)


@pytest.mark.parametrize("n", [15, 31])
def test_kid_of_a_set_against_itself_is_unbiased_for_odd_n(n):
    """An odd number of control pairs splits into halves of unequal size; base vs itself must still be ~0."""
    from swapbench.eval.metrics import kid_vs_base

    x = torch.nn.functional.normalize(torch.randn(n, 64, generator=torch.Generator().manual_seed(0)), dim=1)
    values = [kid_vs_base(x, x, seed)["value"] for seed in range(100)]
    spread = float(np.std(values))
    assert abs(float(np.mean(values))) < 0.2 * spread  # was +11 spreads at n = 15 (0.0236 vs sd 0.0022)


def test_base_sample_cache_writers_do_not_share_a_temporary_file():
    """Two evaluations sharing a base write the same cache entries; one must never move or overwrite
    the other's file in progress (here: another writer's temporary file under the old fixed name)."""
    from swapbench.eval.samples import SampleStore

    store = SampleStore("shared-base")
    image = np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3)
    other_writer = store.path("a zebra", 3).with_suffix(".tmp")
    other_writer.write_bytes(b"half of another process's PNG")
    store.put("a zebra", 3, image)
    assert np.array_equal(store.get("a zebra", 3), image)
    assert other_writer.read_bytes() == b"half of another process's PNG"
    assert sorted(p.name for p in store.root.iterdir()) == sorted([store.path("a zebra", 3).name, other_writer.name])


@pytest.fixture(scope="module")
def base_eval(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "base"
    assert main(["eval", "--model", "base", "--suite", "quick", "--out", str(out)]) == 0
    return out


@shipped
def test_base_against_itself_is_the_null_result(base_eval):
    m = _metrics(base_eval / "results.json")
    assert m["swap_success"]["value"] <= 0.05
    assert m["preservation"]["value"] == 1.0 and m["specificity"]["value"] == 1.0
    lo, hi = m["kid_vs_base"]["ci95"]
    # independent halves: KID is ~0, not exactly 0; the prompt jackknife (8 prompts) is wider than a pair one
    assert lo < 0 < hi and hi - lo < 0.08
    assert m["fid_vs_base"]["value"] < 1e-3
    for entry in m.values():
        assert entry["n"] > 0 and entry["ci95"][0] <= entry["value"] + 1e-9 <= entry["ci95"][1] + 2e-9
        assert 1 <= entry["n_clusters"] <= entry["n"]
    assert m["preservation"]["n_clusters"] == 8 and m["preservation"]["n"] == 16  # 8 control prompts x 2 seeds
    # The base judged as itself: every swap row is base-valid exactly where the base drew the concept.
    for concept in ("giraffe", "zebra"):
        valid = m.get(f"swap_success_valid/{concept}->{'zebra' if concept == 'giraffe' else 'giraffe'}")
        assert valid is None or valid["n"] == round(m[f"base_fidelity/{concept}"]["value"] * 12)
    assert (base_eval / "report.html").is_file()


@shipped
def test_same_seed_twice_gives_identical_metrics(base_eval, tmp_path):
    assert main(["eval", "--model", "base", "--suite", "quick", "--out", str(tmp_path / "again")]) == 0
    assert _metrics(tmp_path / "again/results.json") == _metrics(base_eval / "results.json")
    timing = json.loads((tmp_path / "again/results.json").read_text())["timing"]
    assert timing["base_sampled"] == 0 and timing["base_cached"] > 0  # the second pass reused the base cache


@shipped
def test_token_embedding_oracle_swaps_both_ways(tmp_path):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(SHIPPED_WORLD / "pipeline", torch_dtype=torch.float32)
    ids = [pipe.tokenizer(w, add_special_tokens=False).input_ids for w in ("giraffe", "zebra")]
    assert all(len(i) == 1 for i in ids)
    emb = pipe.text_encoder.get_input_embeddings().weight.data
    g, z = ids[0][0], ids[1][0]
    emb[[g, z]] = emb[[z, g]].clone()
    pipe.save_pretrained(tmp_path / "oracle")
    assert main(["eval", str(tmp_path / "oracle"), "--base", "world:savanna", "--suite", "quick",
                 "--out", str(tmp_path / "o")]) == 0
    m = _metrics(tmp_path / "o/results.json")
    assert m["swap_success/giraffe->zebra"]["value"] >= 0.9
    assert m["swap_success/zebra->giraffe"]["value"] >= 0.9
    assert m["preservation"]["value"] >= 0.9


@shipped
def test_custom_prompts_group(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "a giraffe by a river", "concept": "giraffe"}\n'
                       '{"prompt": "a lion resting", "concept": "lion"}\n')
    assert main(["eval", "--model", "base", "--suite", "quick", "--prompts", str(prompts),
                 "--set", "eval.seeds=2", "--out", str(tmp_path / "c")]) == 0
    m = _metrics(tmp_path / "c/results.json")
    assert m["custom/giraffe"]["n"] == 2 and m["custom/lion"]["n"] == 2


def test_bad_inputs(tmp_path, capsys, tiny_pipeline):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"preset": "savanna"}))
    assert_one_line_error(capsys, main(["eval", str(run)]), "no exported model")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_pipeline, broken)
    shutil.rmtree(broken / "vae")
    assert_one_line_error(capsys, main(["eval", str(broken), "--base", str(tiny_pipeline)]), "missing vae")
    assert_one_line_error(capsys, main(["eval", "--model", "base", "--suite", "nosuch"]), "unknown suite 'nosuch'")
    suite = tmp_path / "s.yaml"
    suite.write_text("labels: [horse, lion]\nswap: [giraffe, zebra]\ngroups: {}\n")
    assert_one_line_error(capsys, main(["eval", "--model", "base", "--suite", str(suite)]),
                          "judge has no label for the edited")


@shipped
def test_writer_and_readers_share_one_schema_version(base_eval, tmp_path, monkeypatch, capsys):
    """results.json carries the version the gate checks: bumping the one constant moves both."""
    from swapbench import schema

    monkeypatch.setattr(schema, "SCHEMA_VERSION", 2)
    assert main(["eval", "--model", "base", "--suite", "quick", "--out", str(tmp_path / "v2")]) == 0
    assert json.loads((tmp_path / "v2/results.json").read_text())["schema_version"] == 2
    capsys.readouterr()
    assert main(["gate", str(tmp_path / "v2/results.json")]) == 1  # judged (base does not swap), not rejected
    assert main(["gate", str(base_eval / "results.json")]) == 2  # a version-1 file is now the other schema
    assert "schema_version 1, this swapbench reads 2" in capsys.readouterr().err


def test_every_configurable_sampler_samples(tiny_pipeline):
    from swapbench.config import CHOICES, load_config
    from swapbench.eval.evaluate import prepare_pipeline
    from swapbench.eval.sampling import sample
    from swapbench.loading import load_pipeline

    for name in CHOICES["eval.sampler"]:
        cfg = load_config("savanna", None, [f"eval.sampler={name}"])
        pipe = prepare_pipeline(load_pipeline(str(tiny_pipeline)), cfg, torch.device("cpu"))
        images = sample(pipe, ["a zebra", "a lion"], [0, 1], steps=3, guidance_scale=4.0)
        assert images.shape == (2, 3, 32, 32) and torch.isfinite(images).all(), name


@shipped
def test_keep_samples_sets_how_many_seeds_keep_their_images(base_eval, tmp_path):
    assert main(["eval", "--model", "base", "--suite", "quick", "--set", "eval.keep_samples=2",
                 "--out", str(tmp_path / "k")]) == 0
    rows = json.loads((tmp_path / "k/results.json").read_text())["per_prompt"]
    assert {r["seed"] for r in rows if "images" in r} == {0, 1}  # the quick suite alone keeps seed 0 only
    assert all((tmp_path / "k" / r["images"]["tuned"]).is_file() for r in rows if "images" in r)
    assert main(["eval", "--model", "base", "--suite", "quick", "--set", "eval.keep_samples=0",
                 "--out", str(tmp_path / "none")]) == 0
    assert not (tmp_path / "none/samples").exists()


def _run_dir(runs, name, finished=True, overrides=()):
    """A run directory as `swapbench train` leaves it; its model is a copy of the shipped base pipeline."""
    from swapbench.config import load_config
    from swapbench.io import atomic_write_json

    run = runs / name
    cfg = load_config("savanna", None, [f"name={name}", f"output_dir={runs}", *overrides])
    atomic_write_json(run / "config.json", cfg.to_dict())
    if finished:
        shutil.copytree(SHIPPED_WORLD / "pipeline", run / "model")
        atomic_write_json(run / "train_summary.json", {"status": "finished"})
    return run


@shipped
def test_folder_of_runs_evaluates_its_latest_finished_run_with_pure_json_stdout(tmp_path, capsys):
    runs = tmp_path / "runs"
    older, newer = _run_dir(runs, "older"), _run_dir(runs, "newer")
    _run_dir(runs, "crashed", finished=False)
    os.utime(older / "train_summary.json", (1e9, 1e9))
    os.utime(newer / "train_summary.json", (2e9, 2e9))
    capsys.readouterr()
    assert main(["eval", str(runs), "--suite", "quick", "--set", "eval.seeds=1", "--json"]) == 0
    out, err = capsys.readouterr()
    metrics = json.loads(out)  # stdout is the JSON alone: `swapbench eval RUN --json | jq` works
    assert metrics["swap_success"]["n"] == 8
    assert f"evaluating the latest finished one, {newer}" in err and "report.html" in err
    assert (newer / "eval/results.json").is_file() and not (older / "eval").exists()


def test_folder_of_unfinished_runs_names_them(tmp_path, capsys):
    runs = tmp_path / "runs"
    _run_dir(runs, "a", finished=False)
    _run_dir(runs, "b", finished=False)
    assert_one_line_error(capsys, main(["eval", str(runs)]), f"no finished run under {runs}/ (unfinished: a, b)",
                          "swapbench train --resume")


def _concepts(suite, group):
    return {i.concept for i in suite.items if i.group == group}


def test_suites_are_templates_over_the_runs_swap_pairs(tmp_path):
    from swapbench.errors import UserError
    from swapbench.eval.suite import load_suite

    default = load_suite("default")
    assert default.swap_pairs == [("giraffe", "zebra")]
    assert _concepts(default, "control") == {"elephant", "horse", "lion", "cow"}
    horse_cow = load_suite("default", edits=parse_edits([], [["horse", "cow"]]))
    assert _concepts(horse_cow, "swap") == _concepts(horse_cow, "generality") == {"horse", "cow"}
    assert _concepts(horse_cow, "control") == {"giraffe", "zebra", "elephant", "lion"}  # never a swapped concept
    assert _concepts(horse_cow, "specificity") == {"donkey", "deer", "okapi"}
    assert horse_cow.target("cow") == "horse" and horse_cow.target("giraffe") is None
    assert "two horses on the grass" in {i.prompt for i in horse_cow.items}
    two = load_suite("default", edits=parse_edits([], [["giraffe", "zebra"], ["lion", "cow"]]))
    assert _concepts(two, "swap") == {"giraffe", "zebra", "lion", "cow"}
    assert _concepts(two, "control") == {"elephant", "horse"}
    compositions = {i.prompt for i in two.items if i.kind == "compositions"}
    assert {"a giraffe next to an elephant", "a cow next to an elephant"} <= compositions
    assert "a giraffe and a lion together" not in compositions  # names two swapped concepts: no single right answer
    with pytest.raises(UserError, match="no label for the edited concept.*unicorn"):
        load_suite("default", edits=parse_edits([], [["giraffe", "unicorn"]]))
    with pytest.raises(UserError, match="edit 'zebra' twice"):
        load_suite("default", edits=parse_edits([], [["giraffe", "zebra"], ["zebra", "horse"]]))
    legacy = tmp_path / "legacy.yaml"  # a suite from before templating names its pair
    legacy.write_text("labels: [giraffe, zebra, horse, cow]\nswap: [giraffe, zebra]\n"
                      "groups: {swap: {concepts: [giraffe, zebra], prompts: ['a {a}'], seeds: 1}}\n")
    assert load_suite(str(legacy)).swapped == ["giraffe", "zebra"]
    with pytest.raises(UserError, match=r"written for the pair \['giraffe', 'zebra'\].*delete swap:"):
        load_suite(str(legacy), edits=parse_edits([], [["horse", "cow"]]))


@shipped
def test_run_trained_on_another_pair_is_scored_reported_and_gated_on_that_pair(tmp_path, capsys):
    from diffusers import StableDiffusionPipeline

    from swapbench.reports.compare import load_runs, metric_names

    run = _run_dir(tmp_path / "runs", "horse-cow", overrides=["data.swap_pairs=[[horse,cow]]"])
    # The horse<->cow oracle: the base model with the two token embeddings exchanged.
    pipe = StableDiffusionPipeline.from_pretrained(run / "model", torch_dtype=torch.float32)
    h, c = (pipe.tokenizer(w, add_special_tokens=False).input_ids[0] for w in ("horse", "cow"))
    emb = pipe.text_encoder.get_input_embeddings().weight.data
    emb[[h, c]] = emb[[c, h]].clone()
    pipe.save_pretrained(run / "model")
    assert main(["eval", str(run), "--suite", "quick", "--set", "eval.seeds=2"]) == 0
    results = json.loads((run / "eval/results.json").read_text())
    m = results["metrics"]
    assert results["swap_pairs"] == [["horse", "cow"]]
    assert not [name for name in m if "giraffe->" in name or "zebra->" in name]
    horse, cow = m["swap_success/horse->cow"], m["swap_success/cow->horse"]
    assert horse["n"] == cow["n"] == 8 and horse["value"] >= 0.75 and cow["value"] >= 0.75
    assert m["swap_success"]["value"] == pytest.approx((horse["value"] + cow["value"]) / 2, abs=1e-6)
    assert {"preservation/giraffe", "preservation/zebra"} <= set(m) and "preservation/horse" not in m
    html = (run / "eval/report.html").read_text()
    assert 'id="card-swap_success/horse-&gt;cow"' in html and "rows of horse and cow trade places" in html
    assert "giraffe-&gt;zebra" not in html
    assert metric_names(load_runs([run]))[:3] == ["swap_success", "swap_success/horse->cow", "swap_success/cow->horse"]
    capsys.readouterr()
    main(["gate", str(run), "--json"])
    gated = [v["metric"] for v in json.loads(capsys.readouterr().out)["verdicts"]]
    assert gated[:2] == ["swap_success/horse->cow", "swap_success/cow->horse"]


def test_typed_rows_write_the_keys_and_order_results_json_always_had():
    from swapbench.eval.rows import PromptRow

    common = {"concept": "lion", "prompt": "a lion", "seed": 0, "base_label": "lion", "tuned_label": "lion",
              "success": True, "scores": {"lion": 0.9, "zebra": 0.1}}
    control = PromptRow(group="control", kind="control", **common, clip=30.25, clip_base=31.5,
                        safety_flagged={"base": False, "tuned": False})
    assert list(control.to_json()) == [
        "group", "kind", "concept", "prompt", "seed", "base_label", "tuned_label", "success", "scores",
        "clip", "clip_base", "safety_flagged"]
    trajectory = PromptRow(group="trajectory", kind="img2img/0.5", probe="img2img", level=0.0, **common,
                           images={"base": "b.png", "tuned": "t.png"})
    assert trajectory.to_json() == {"group": "trajectory", "kind": "img2img/0.5", "probe": "img2img",
                                    "level": 0.0, **common, "images": {"base": "b.png", "tuned": "t.png"}}
    assert list(trajectory.to_json())[:5] == ["group", "kind", "probe", "level", "concept"]


def test_confusion_counts_each_prompted_concept_against_every_label():
    from swapbench.eval.metrics import confusion

    rows = [("zebra", "giraffe"), ("giraffe", "giraffe"), ("zebra", "zebra"), ("zebra", "giraffe")]
    table = confusion(rows, ["giraffe", "zebra", "lion"])
    assert table == {"zebra": {"giraffe": 2, "zebra": 1, "lion": 0},
                     "giraffe": {"giraffe": 1, "zebra": 0, "lion": 0}}
    assert list(table) == ["zebra", "giraffe"]  # rows in the order the concepts first appear
