"""Every family by its real hub name, offline, on the replicas of tests/_replicas_families.py: each method
trains (a few steps) and exports a pipeline that a plain ``DiffusionPipeline.from_pretrained`` reloads, and
``swapbench eval`` runs every probe (forms, img2img and handover trajectories, unnamed prompts) on it."""

import json

import pytest
import torch
from _cli import assert_one_line_error
from _replicas import put_repo
from _replicas_families import (
    FLUX_DEV,
    FLUX_SCHNELL,
    SD35_MEDIUM,
    SDXL,
    flux_dev_files,
    flux_schnell_files,
    sd35_medium_files,
    sdxl_files,
)

from swapbench.cli import main

FAMILIES = {
    # repo: (files, family, trainable subset, sampler)
    SDXL: (sdxl_files, "sdxl", "unet.cross_attention", "dpmsolver++"),
    SD35_MEDIUM: (sd35_medium_files, "sd3", "transformer.text_attention", "euler"),
    FLUX_DEV: (flux_dev_files, "flux", "transformer.text_attention", "euler"),
    FLUX_SCHNELL: (flux_schnell_files, "flux", "transformer.text_attention", "euler"),
}
TINY = ["--set", "train.batch_size=2", "--set", "data.resolution=32", "--set", "data.subset_size=90",
        "--set", "train.warmup_steps=1", "--set", "train.cache_views=1", "--set", "train.max_steps=2",
        "--set", "train.checkpoint_every=0", "--set", "eval.judge=world:savanna"]
ROBUST = ["--suite", "robust", "--set", "eval.steps=2", "--set", "eval.seeds=1", "--set", "eval.resolution=32",
          "--set", "eval.batch_size=8"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("tokenizers")


def _train(repo, coco_root, out, name, *extra):
    _, _, trainable, sampler = FAMILIES[repo]
    return main(["train", "--preset", "sd15-coco", "--model", repo, "--data", str(coco_root), "--out", str(out),
                 "--name", name, *TINY, "--set", f"train.trainable={trainable}", "--set", f"eval.sampler={sampler}",
                 *extra])


@pytest.mark.parametrize("repo", list(FAMILIES))
def test_each_family_trains_exports_reloads_and_runs_every_probe(repo, hub_cache, work, coco_root, tmp_path):
    from diffusers import DiffusionPipeline

    files, family, _, sampler = FAMILIES[repo]
    put_repo(hub_cache, repo, files(work))
    assert _train(repo, coco_root, tmp_path, "ft") == 0
    run = tmp_path / "ft"
    tuned = DiffusionPipeline.from_pretrained(run / "model", torch_dtype=torch.float32)
    base = DiffusionPipeline.from_pretrained(repo, torch_dtype=torch.float32)
    assert type(tuned) is type(base)
    denoiser = "unet" if family == "sdxl" else "transformer"
    changed = {n for n, p in getattr(tuned, denoiser).named_parameters()
               if not torch.equal(p, getattr(base, denoiser).state_dict()[n])}
    assert changed and all(any(k in n for k in ("attn2.to_k", "attn2.to_v", "add_k_proj", "add_v_proj",
                                                  "context_embedder", "text_embedder")) for n in changed)

    assert main(["eval", str(run), *ROBUST]) == 0
    results = json.loads((run / "eval/results.json").read_text())
    assert results["provenance"]["family"] == family and results["sampler"]["sampler"] == sampler
    metrics = results["metrics"]
    for probe in ("robust/trajectory/handover/0.5", "robust/unnamed/tv", "swap_success/giraffe->zebra"):
        assert probe in metrics, probe
    assert any(name.startswith("robust/trajectory/") and "handover" not in name for name in metrics)
    assert not results["robust"]["trajectory"]["notes"]


@pytest.mark.parametrize("repo", [SDXL, SD35_MEDIUM, FLUX_DEV])
@pytest.mark.parametrize("method", ["lora", "uce", "token-swap"])
def test_every_method_runs_on_every_family(repo, method, hub_cache, work, coco_root, tmp_path):
    from diffusers import DiffusionPipeline

    files, *_ = FAMILIES[repo]
    put_repo(hub_cache, repo, files(work))
    assert _train(repo, coco_root, tmp_path, method, "--method", method) == 0
    summary = json.loads((tmp_path / method / "train_summary.json").read_text())
    assert summary["method"] == method
    tuned = DiffusionPipeline.from_pretrained(tmp_path / method / "model", torch_dtype=torch.float32)
    base = DiffusionPipeline.from_pretrained(repo, torch_dtype=torch.float32)
    moved = [name for name, module in tuned.components.items() if isinstance(module, torch.nn.Module)
             and any(not torch.equal(p, q) for p, q in zip(module.state_dict().values(),
                                                            base.components[name].state_dict().values(), strict=True))]
    expected = {"lora": {"unet", "transformer"}, "uce": {"unet", "transformer"},
                "token-swap": {"text_encoder", "text_encoder_2", "text_encoder_3"}}[method]
    assert moved and set(moved) <= expected, moved
    if method == "lora":
        assert (tmp_path / method / "lora" / "pytorch_lora_weights.safetensors").is_file()


def test_edits_beyond_the_swap_train_and_score_on_a_flow_family(hub_cache, work, coco_root, tmp_path):
    put_repo(hub_cache, SD35_MEDIUM, sd35_medium_files(work))
    edits = "edits=[{erase: giraffe}, {remap: lion, to: cow}]"
    assert _train(SD35_MEDIUM, coco_root, tmp_path, "edits", "--set", edits) == 0
    audit = json.loads((tmp_path / "edits" / "data_audit.json").read_text())
    assert audit["edits"] == [{"erase": "giraffe"}, {"remap": "lion", "to": "cow"}]
    assert main(["eval", str(tmp_path / "edits"), "--suite", "quick", "--set", "eval.steps=2", "--set", "eval.seeds=1",
                 "--set", "eval.resolution=32", "--set", "eval.batch_size=8"]) == 0
    results = json.loads((tmp_path / "edits" / "eval/results.json").read_text())
    assert results["provenance"]["family"] == "sd3" and results["labels"][-1] == "empty landscape"
    assert {"erase_success/giraffe", "remap_success/lion->cow", "edit_success", "mace_h"} <= set(results["metrics"])
    assert not any(name.startswith("swap_success") for name in results["metrics"])


def test_an_unsupported_pipeline_and_keys_that_do_not_apply_are_one_line_errors(hub_cache, work, coco_root, tmp_path,
                                                                                capsys):
    folder = tmp_path / "kandinsky"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyV22Pipeline", "unet": ["x", "y"]}))
    code = main(["train", "--model", str(folder), "--out", str(tmp_path), "--name", "k"])
    assert_one_line_error(capsys, code, "KandinskyV22Pipeline", "FluxPipeline (FLUX.1)", "StableDiffusionXLPipeline")

    put_repo(hub_cache, FLUX_SCHNELL, flux_schnell_files(work))
    code = _train(FLUX_SCHNELL, coco_root, tmp_path, "u", "--set", "train.trainable=unet")
    assert_one_line_error(capsys, code, "train.trainable=unet does not apply", "transformer.text_attention")
    code = _train(FLUX_SCHNELL, coco_root, tmp_path, "s", "--set", "eval.sampler=dpmsolver++", "--set",
                  "train.eval_every=1")
    assert_one_line_error(capsys, code, "eval.sampler=dpmsolver++ does not apply", "euler")
