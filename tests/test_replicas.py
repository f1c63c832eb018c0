"""The sd15-coco preset by its own names, offline, on replicas of the artifacts it names (tests/_replicas.py):
`swapbench fetch --check`, train, export and eval against a Hugging Face hub cache laid out as
huggingface_hub writes it."""

import io
import json

import numpy as np
import pytest
import torch
from _cli import assert_one_line_error
from _replicas import LAION_B32, SD15, laion_b32_files, put_repo, sd15_files
from PIL import Image

from swapbench.cli import main

TINY = ["--set", "train.batch_size=4", "--set", "data.resolution=32", "--set", "data.subset_size=90",
        "--set", "train.warmup_steps=1", "--set", "train.cache_views=1", "--set", "train.max_steps=2",
        "--set", "train.checkpoint_every=0"]
QUICK_EVAL = ["--suite", "quick", "--set", "eval.steps=2", "--set", "eval.seeds=1", "--set", "eval.resolution=32"]


@pytest.fixture(scope="module")
def sd15(tmp_path_factory):
    from swapbench.world import models

    tok = tmp_path_factory.mktemp("tok")
    models.build_tokenizer(tok)
    return sd15_files(tok)


def _rows(out: str) -> dict[str, dict]:
    return {row["kind"]: row for row in json.loads(out)}


def test_fetch_check_on_an_empty_cache_names_every_missing_artifact(hub_cache, capsys):
    code = main(["fetch", "--check", "--preset", "sd15-coco", "--json"])
    captured = capsys.readouterr()
    rows = _rows(captured.out)
    assert code == 2 and not any(r["present"] for r in rows.values())
    assert rows["pipeline"]["where"] == str(hub_cache / "models--stable-diffusion-v1-5--stable-diffusion-v1-5")
    assert rows["judge"]["where"].startswith(str(hub_cache / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K"))
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "swapbench fetch --preset sd15-coco" in err[0]
    for needle in (SD15, "ViT-B-32/laion2b_s34b_b79k", "eval.judge", "data.source"):
        assert needle in err[0]
    # offline, fetching fails in one line naming what it could not get
    assert_one_line_error(capsys, main(["fetch", "--preset", "sd15-coco"]), f"cannot download pipeline {SD15}")
    # train checks first: the missing judge fails before any model or data is read
    assert_one_line_error(capsys, main(["train", "--preset", "sd15-coco", "--out", str(hub_cache.parent / "runs")]),
                          "ViT-B-32/laion2b_s34b_b79k", "swapbench fetch", "swapbench train --no-eval-check")
    assert not (hub_cache.parent / "runs").exists()


def test_savanna_needs_nothing_from_a_cache(hub_cache, capsys):
    assert main(["fetch", "--check", "--json"]) == 0
    assert all(r["present"] for r in json.loads(capsys.readouterr().out))


def test_sd15_coco_by_its_own_names_trains_exports_and_evaluates_offline(hub_cache, sd15, coco_root, tmp_path, capsys):
    snapshot = put_repo(hub_cache, SD15, sd15)
    data = ["--data", str(coco_root), "--set", "eval.judge=world:savanna"]
    assert main(["fetch", "--check", "--preset", "sd15-coco", *data, "--set", "model.variant=fp16", "--json"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows["pipeline"]["where"] == str(snapshot) and rows["pipeline"]["size"] > 0

    # an fp16 variant with a piece gone is reported by name
    (snapshot / "unet/diffusion_pytorch_model.fp16.safetensors").rename(tmp_path / "unet.fp16")
    assert main(["fetch", "--check", "--preset", "sd15-coco", *data, "--set", "model.variant=fp16", "--json"]) == 2
    assert _rows(capsys.readouterr().out)["pipeline"]["missing"] == ["unet/ weights (fp16)"]
    (tmp_path / "unet.fp16").rename(snapshot / "unet/diffusion_pytorch_model.fp16.safetensors")

    assert main(["train", "--preset", "sd15-coco", *data, "--out", str(tmp_path), "--name", "r", *TINY,
                 "--set", "model.variant=fp16"]) == 0
    run = tmp_path / "r"
    index = json.loads((run / "model/model_index.json").read_text())
    assert index["safety_checker"] == ["stable_diffusion", "StableDiffusionSafetyChecker"]
    assert index["feature_extractor"] == ["transformers", "CLIPImageProcessor"]
    assert index["scheduler"] == ["diffusers", "PNDMScheduler"]

    # the seed's inference example works on the export, checker included
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(run / "model")
    assert type(pipe.safety_checker).__name__ == "StableDiffusionSafetyChecker"
    base = DiffusionPipeline.from_pretrained(SD15, variant="fp16", torch_dtype=torch.float32)
    assert torch.equal(pipe.vae.encoder.conv_in.weight, base.vae.encoder.conv_in.weight)  # the fp16 base, kept
    assert not torch.equal(pipe.unet.conv_in.weight, base.unet.conv_in.weight)

    assert main(["eval", str(run), *QUICK_EVAL]) == 0
    results = json.loads((run / "eval/results.json").read_text())
    assert results["provenance"]["base_model"] == SD15
    assert results["provenance"]["safety_checker"].startswith("count")
    # the replica's checker flags every image: each one is counted, and none is blackened
    n_images = len(results["per_prompt"])
    for which in ("base", "tuned"):
        assert results["metrics"][f"safety_flagged/{which}"]["value"] == 1.0
        assert results["metrics"][f"safety_flagged/{which}"]["n"] == n_images
    kept = [row["images"]["tuned"] for row in results["per_prompt"] if "images" in row]
    assert kept and all(np.asarray(Image.open(run / "eval" / p)).max() > 0 for p in kept)


def test_a_node_without_the_judge_trains_with_no_eval_check_and_no_hub_notices(hub_cache, sd15, coco_root, tmp_path,
                                                                               capsys, caplog):
    """A GPU node that trains and evaluates elsewhere: the judge (eval.judge's default, not in the cache)
    is not required, and resolving the cached pipeline offline prints no "Could not reach the Hub"."""
    import logging

    import huggingface_hub

    from swapbench import cli

    put_repo(hub_cache, SD15, sd15)
    data = ["--data", str(coco_root), "--out", str(tmp_path)]
    assert_one_line_error(capsys, main(["train", "--preset", "sd15-coco", *data, *TINY]),
                          "judge ViT-B-32/laion2b_s34b_b79k", "swapbench train --no-eval-check")
    assert_one_line_error(capsys, main(["train", "--preset", "sd15-coco", *data, *TINY, "--no-eval-check",
                                        "--set", "train.eval_every=1"]), "train.eval_every=1")
    hub_log = logging.getLogger("huggingface_hub.hf_api")
    hub_log.removeFilter(cli._ASKED_FOR_OFFLINE)  # as a library, huggingface_hub does say it
    hub_log.addHandler(caplog.handler)
    try:
        huggingface_hub.resolve_revision(SD15)
        assert "Could not reach the Hub" in caplog.text and "offline mode is enabled" in caplog.text
        caplog.clear()
        capsys.readouterr()
        assert main(["train", "--preset", "sd15-coco", *data, "--name", "r", *TINY, "--no-eval-check"]) == 0
    finally:
        hub_log.removeHandler(caplog.handler)
    assert (tmp_path / "r/model/model_index.json").is_file()
    assert "Could not reach the Hub" not in caplog.text and "Could not reach the Hub" not in capsys.readouterr().err


def test_online_without_a_network_the_check_fails_at_once(hub_cache, sd15, tmp_path, monkeypatch, capsys):
    """A download retries a refused connection for ~25 s per file; the check asks the Hub once first."""
    import time

    from huggingface_hub import constants

    put_repo(hub_cache, SD15, sd15)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # the discard port: connection refused
    started = time.perf_counter()
    code = main(["train", "--preset", "sd15-coco", "--out", str(tmp_path)])
    assert time.perf_counter() - started < 10
    assert_one_line_error(capsys, code, "cannot download judge ViT-B-32/laion2b_s34b_b79k: the Hub does not answer "
                          "(http://127.0.0.1:9: ConnectError)", "HF_HUB_OFFLINE=1", "swapbench train --no-eval-check")
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_laion_judge_resolves_from_its_hub_repo_and_fetch_check_passes(hub_cache, sd15, capsys):
    """Full-size ViT-B/32 with random weights under the repo open_clip downloads from (~600 MB)."""
    import datasets

    from swapbench.config import load_config
    from swapbench.eval.judge import ZeroShotJudge

    judge_files = laion_b32_files()
    snapshot = put_repo(hub_cache, LAION_B32, judge_files)
    put_repo(hub_cache, SD15, sd15)
    source = load_config("sd15-coco").data.source
    buf = io.BytesIO()
    image = io.BytesIO()
    Image.new("RGB", (32, 32)).save(image, format="PNG")
    datasets.Dataset.from_list([{"image": {"bytes": image.getvalue(), "path": None},
                                 "captions": ["a zebra"]}]).to_parquet(buf)
    put_repo(hub_cache, source, {"data/train-00000-of-00001.parquet": buf.getvalue(), "README.md": b"---\n---\n"},
             repo_type="dataset")
    assert main(["fetch", "--check", "--preset", "sd15-coco", "--json"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows["judge"]["where"] == str(snapshot / "open_clip_model.safetensors")

    judge = ZeroShotJudge.load("ViT-B-32/laion2b_s34b_b79k", ["giraffe", "zebra"], ["a photo of a {}."])
    from safetensors.torch import load

    stored = load(judge_files["open_clip_model.safetensors"])
    assert torch.equal(judge.model.state_dict()["visual.conv1.weight"], stored["visual.conv1.weight"])
    assert judge.image_size == 224 and len(judge.classify(torch.rand(2, 3, 32, 32))) == 2


def test_a_hub_base_keeps_its_samples_per_revision_and_variant(hub_cache, sd15, tmp_path, monkeypatch):
    """The base-sample cache belongs to the files a hub base loads: the same revision and variant read it,
    another revision or variant of the same name samples afresh, and provenance holds that hash."""
    from safetensors.torch import load, save

    from swapbench.weights import weights_hash

    monkeypatch.setenv("SWAPBENCH_CACHE", str(tmp_path / "cache"))  # no samples from other tests
    main_snapshot = put_repo(hub_cache, SD15, sd15)
    unet = load(sd15["unet/diffusion_pytorch_model.safetensors"])
    unet["conv_in.bias"] += 1.0
    v2 = put_repo(hub_cache, SD15, {**sd15, "unet/diffusion_pytorch_model.safetensors": save(unet)}, ref="v2")

    def evaluate(name: str, *settings: str) -> dict:
        args = ["eval", "--model", "base", "--set", f"model.pretrained={SD15}", "--set",
                "eval.judge=world:savanna", "--set", "eval.safety_checker=off", *QUICK_EVAL,
                "--out", str(tmp_path / name)]
        assert main([*args, *(a for s in settings for a in ("--set", s))]) == 0
        results = json.loads((tmp_path / name / "results.json").read_text())
        assert results["provenance"]["base_model"] == SD15
        return results

    first, again = evaluate("first"), evaluate("again")
    fp16, revision = evaluate("fp16", "model.variant=fp16"), evaluate("v2", "model.revision=v2")
    n = len(first["per_prompt"])
    assert first["timing"]["base_sampled"] == n > 0
    assert again["timing"]["base_sampled"] == 0 and again["timing"]["base_cached"] == n
    assert fp16["timing"]["base_sampled"] == n and revision["timing"]["base_sampled"] == n
    hashes = [r["provenance"]["base_weights_sha256"] for r in (first, again, fp16, revision)]
    assert hashes[0] == hashes[1] == weights_hash(main_snapshot) and len(set(hashes)) == 3
    assert hashes[3] == weights_hash(v2)
    assert first["per_prompt"] != revision["per_prompt"]  # the other revision's weights drew other images
