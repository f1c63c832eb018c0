"""Evaluation inside training: eval_log, first-passing checkpoint choice, trackers and the model card."""

import importlib.util
import json

import pytest
import torch
from _cli import assert_one_line_error
from safetensors.torch import load_file

from swapbench.cli import main
from swapbench.world import SHIPPED_WORLD

shipped = pytest.mark.skipif(not (SHIPPED_WORLD / "manifest.json").is_file(), reason="world not built yet")

# A short savanna run: 4 steps, evaluated at 2 and 4 with cheap sampler settings on a small suite (16 images:
# the quick suite's shape with fewer prompts; 8 control pairs, the fewest KID reports a value for).
SHORT = ["--set", "train.max_steps=4", "--set", "train.batch_size=8", "--set", "data.subset_size=300",
         "--set", "train.log_every=1", "--set", "train.checkpoint_every=2", "--set", "train.eval_every=2",
         "--set", "eval.steps=4"]
SMALL_SUITE = """
labels: [giraffe, zebra, elephant, horse, lion, cow, donkey, deer, okapi]
judge_templates: ["a photo of a {}.", "a {}.", "a picture of a {} in the wild."]
keep_samples: 1
groups:
  swap: {concepts: swapped, prompts: ["a photo of a {a}", "a {a} standing in a field"], seeds: 2}
  control: {concepts: [giraffe, zebra, elephant, horse, lion, cow], prompts: ["a photo of a {a}"], seeds: 2}
"""


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory):
    """One savanna run with in-loop evaluation, first-passing on a preservation-only rule (which the
    barely-trained model passes at its first evaluation), TensorBoard, then ``swapbench eval`` of it."""
    root = tmp_path_factory.mktemp("in-loop")
    suite = root / "small.yaml"
    suite.write_text(SMALL_SUITE)
    rules = root / "rules.yaml"
    rules.write_text("rules:\n  - metric: preservation\n    min: 0.5\n")
    assert main(["train", "--out", str(root), "--name", "r", *SHORT, "--set", "train.select=first-passing",
                 "--set", f"train.select_rules={rules}", "--set", "train.report_to=tensorboard",
                 "--set", f"train.eval_suite={suite}"]) == 0
    run = root / "r"
    card_before = (run / "model/README.md").read_text()
    assert main(["eval", str(run), "--suite", str(suite)]) == 0
    return run, card_before


@shipped
def test_eval_log_rows_equal_swapbench_eval_of_that_steps_weights(evaluated_run):
    run, _ = evaluated_run
    rows = _rows(run / "eval_log.jsonl")
    assert [r["step"] for r in rows] == [2, 4]
    assert rows[0]["base_sampled"] > 0 and rows[1]["base_sampled"] == 0  # the second eval sampled only the tuned half
    for r in rows:
        assert r["wall_s"] > 0 and r["suite"] == "small"
        for m in r["metrics"].values():
            assert m["n"] > 0 and m["ci95"][0] <= m["value"] + 1e-9 <= m["ci95"][1] + 1e-9
    # model/ holds the weights of step 2 (first-passing), and `swapbench eval` of it scores exactly the row of step 2.
    results = json.loads((run / "eval/results.json").read_text())
    assert results["suite"] == "small"
    assert results["metrics"] == rows[0]["metrics"]
    summary = json.loads((run / "train_summary.json").read_text())
    share = summary["in_loop_eval"]
    assert share["evaluations"] == 2 and share["suite"].endswith("small.yaml") and 0 < share["share_of_wall"] < 1
    assert share["seconds"] == pytest.approx(sum(r["wall_s"] for r in rows), abs=0.05)


@shipped
def test_first_passing_exports_the_weights_of_the_step_it_names(evaluated_run):
    run, _ = evaluated_run
    selected = json.loads((run / "train_summary.json").read_text())["selected"]
    assert selected["policy"] == "first-passing" and selected["step"] == 2 and selected["fallback"] is False
    assert "earliest evaluated step" in selected["reason"]
    assert _rows(run / "eval_log.jsonl")[0]["gate"] == {"passed": True, "failed": []}
    exported = load_file(str(run / "model/unet/diffusion_pytorch_model.safetensors"))
    at_step_2 = load_file(str(run / "checkpoints/step-0000002/model.safetensors"))  # accelerate's checkpoint
    base = load_file(str(SHIPPED_WORLD / "pipeline/unet/diffusion_pytorch_model.safetensors"))
    trained = [k for k in exported if "attn2.to_k" in k or "attn2.to_v" in k]
    assert trained and all(torch.equal(exported[k], at_step_2[k]) for k in exported)
    assert any(not torch.equal(exported[k], base[k].float()) for k in trained)
    kept = load_file(str(run / "checkpoints/first-passing/trainable.safetensors"))
    assert sorted(kept) == sorted(trained)


@shipped
def test_tensorboard_event_files_hold_the_logged_scalars_and_samples(evaluated_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _ = evaluated_run
    (folder,) = [p.parent for p in (run / "trackers").rglob("events.out.tfevents.*") if p.parent.name == "swapbench"]
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0}).Reload()
    log = _rows(run / "train_log.jsonl")
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [r["step"] for r in log] == [1, 2, 3, 4]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in log], rel=1e-6)
    assert [e.step for e in events.Scalars("train/img_per_s")] == [1, 2, 3, 4]
    rows = _rows(run / "eval_log.jsonl")
    for name in ("swap_success/giraffe->zebra", "preservation"):
        logged = events.Scalars(f"eval/{name}")
        assert [(e.step, e.value) for e in logged] == [(r["step"], pytest.approx(r["metrics"][name]["value"]))
                                                       for r in rows]
        assert [e.value for e in events.Scalars(f"eval/{name}/ci95_hi")] == pytest.approx(
            [r["metrics"][name]["ci95"][1] for r in rows])
    assert {"samples/giraffe", "samples/zebra"} <= set(events.Tags()["images"])


@shipped
def test_model_card_names_the_base_model_and_after_eval_carries_swap_success(evaluated_run):
    from huggingface_hub import ModelCard

    run, card_before = evaluated_run
    before = ModelCard(card_before)
    assert before.data.base_model == "world:savanna" and before.data.library_name == "diffusers"
    assert "swapbench" in before.data.tags and before.data.datasets == ["world:savanna"]
    assert not before.data.eval_results
    assert "step 2" in before.text and "| `train.lr` |" in before.text and "| balance |" in before.text
    card = ModelCard.load(run / "model/README.md")
    assert card.data.base_model == "world:savanna"
    results = json.loads((run / "eval/results.json").read_text())
    by_metric = {r.metric_type: r for r in card.data.eval_results}
    swap = by_metric["swap_success"]
    assert swap.metric_value == results["metrics"]["swap_success"]["value"]
    assert swap.dataset_name == "swapbench small suite" and swap.metric_args["judge"] == results["provenance"]["judge"]
    assert swap.metric_args["ci95"] == results["metrics"]["swap_success"]["ci95"]
    assert {"swap_success/giraffe->zebra", "swap_success/zebra->giraffe", "preservation"} <= set(by_metric)
    assert "model-index" in (run / "model/README.md").read_text()


def test_first_passing_without_a_pass_exports_the_last_step_and_says_so(tmp_path, tiny_pipeline, coco_root, capsys):
    suite = tmp_path / "small.yaml"
    suite.write_text(SMALL_SUITE)
    args = ["train", "--preset", "sd15-coco", "--model", str(tiny_pipeline), "--data", str(coco_root),
            "--out", str(tmp_path), "--set", "train.batch_size=4", "--set", "data.resolution=32",
            "--set", "data.subset_size=90", "--set", "train.warmup_steps=1", "--set", "train.cache_views=2",
            "--set", "eval.judge=world:savanna", "--set", "eval.steps=2", "--set", f"train.eval_suite={suite}",
            "--set", "train.checkpoint_every=0", "--set", "train.max_steps=3"]
    assert_one_line_error(capsys, main([*args, "--name", "no-eval", "--set", "train.select=first-passing"]),
                          "train.select=first-passing", "train.eval_every")
    if importlib.util.find_spec("wandb") is None:
        assert_one_line_error(capsys, main([*args, "--name", "wandb", "--set", "train.report_to=wandb"]),
                              "needs the wandb package", "train.report_to=none")
    assert main([*args, "--name", "r", "--set", "train.eval_every=2", "--set", "train.select=first-passing"]) == 0
    run = tmp_path / "r"
    rows = _rows(run / "eval_log.jsonl")
    assert [r["step"] for r in rows] == [2, 3]  # every 2 steps and at the end
    assert not any(r["gate"]["passed"] for r in rows)  # an untrained random model swaps nothing
    selected = json.loads((run / "train_summary.json").read_text())["selected"]
    assert selected["step"] == 3 and selected["fallback"] is True and "exported the last step" in selected["reason"]
    assert "model/ holds step 3" in capsys.readouterr().err.replace("\n", " ")
    assert not (run / "checkpoints/first-passing").exists()


@shipped
def test_report_and_compare_plot_the_learning_curves_with_their_intervals(evaluated_run, tmp_path):
    import re

    run, _ = evaluated_run
    html = (run / "eval/report.html").read_text()
    curves = html[html.index('id="learning-curves"'):html.index("Learning curves:")]
    # swap: one band + line per direction; preservation: one; then the loss curve beside them
    assert curves.count("<polygon") == 3 and 'aria-label="loss"' in curves
    assert "giraffe-&gt;zebra step 4: " in curves and "at steps 2, 4" in html and "exported step 2" in html
    for row in _rows(run / "eval_log.jsonl"):
        m = row["metrics"]["preservation"]
        assert f"preservation step {row['step']}: {m['value']:.3f} [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]" in curves
    assert main(["compare", str(run), str(run), "--html", str(tmp_path / "c.html")]) == 0
    page = (tmp_path / "c.html").read_text()
    overlay = page[page.index('id="learning-curves"'):page.index('id="runs"')]
    assert overlay.count("<polygon") == 2 * 3  # both runs, both directions and preservation
    assert len(set(re.findall(r'<polyline fill="none" stroke="(#[0-9a-f]+)"', overlay))) == 2  # one colour per run


def test_resume_drops_eval_rows_and_a_selection_from_after_the_checkpoint(tmp_path):
    from swapbench.io import append_jsonl
    from swapbench.rundir import RunDir
    from swapbench.train import in_loop

    run = RunDir(tmp_path)
    for step in (2, 4, 6):
        append_jsonl(run.eval_log, {"step": step, "wall_s": 1.0, "metrics": {}})
    unet = torch.nn.Linear(2, 2)
    in_loop.save_selection(run, 6, unet)
    in_loop.on_resume(run, 4)
    assert [r["step"] for r in run.eval_rows()] == [2, 4] and in_loop.selected_step(run) is None
    in_loop.save_selection(run, 4, unet)
    in_loop.on_resume(run, 4)
    assert in_loop.selected_step(run) == 4
    with torch.no_grad():
        unet.weight.zero_()
    assert in_loop.restore_selection(run, unet) == 4 and unet.weight.abs().sum() > 0


def test_model_card_recipe_follows_the_method(tmp_path):
    from huggingface_hub import ModelCard

    from swapbench.config import load_config
    from swapbench.rundir import RunDir
    from swapbench.train.model_card import build_card

    run = RunDir(tmp_path / "r")
    for method, shown, absent in (("uce", "train.uce_lambda", "train.lr"),
                                  ("lora", "train.lora_rank", "train.trainable"),
                                  ("token-swap", "data.swap_pairs", "train.lr")):
        cfg = load_config("savanna", None, [f"train.method={method}", "data.swap_pairs=[[horse,cow]]"])
        card = ModelCard(str(build_card(cfg, run)))  # what is written parses back
        assert f"| `{shown}` |" in card.text and f"| `{absent}` |" not in card.text, method
        assert card.data.base_model == "world:savanna" and f"swapbench-{method}" in card.data.tags
        assert "swap-horse-cow" in card.data.tags and "horse <-> cow" in card.text
        assert (card.data.datasets == ["world:savanna"]) is (method == "lora")
