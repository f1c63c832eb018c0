import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _cli import assert_one_line_error

from swapbench.cli import main
from swapbench.io import sha256_file
from swapbench.loading import WORLDS_ROOT
from swapbench.world import SHIPPED_WORLD
from swapbench.world import generator as gen

MUST_DRAW = ("giraffe", "zebra", "elephant", "horse", "lion", "cow")


def _check_files(world: Path) -> dict:
    manifest = json.loads((world / "manifest.json").read_text())
    on_disk = {str(p.relative_to(world)) for p in world.rglob("*") if p.is_file() and p.name != "manifest.json"}
    assert on_disk == set(manifest["files"])
    for rel, digest in manifest["files"].items():
        assert sha256_file(world / rel) == digest, rel
    return manifest


def test_generator_is_deterministic_and_seed_dependent():
    a = gen.make_example(7, "train", 3)
    b = gen.make_example(7, "train", 3)
    c = gen.make_example(8, "train", 3)
    assert np.array_equal(a.image, b.image) and a.captions == b.captions
    assert not np.array_equal(a.image, c.image)
    assert a.image.shape == (gen.IMAGE_SIZE, gen.IMAGE_SIZE, 3) and a.image.dtype == np.uint8


def test_coco_layout_is_valid_and_byte_identical_across_writes(tmp_path):
    h1 = gen.write_coco(tmp_path / "a", seed=3, sizes={"train": 120, "val": 20})
    h2 = gen.write_coco(tmp_path / "b", seed=3, sizes={"train": 120, "val": 20})
    assert h1 == h2
    for name in ("000000000001.png", "000000000120.png"):
        assert (tmp_path / "a/train2017" / name).read_bytes() == (tmp_path / "b/train2017" / name).read_bytes()
    coco = json.loads((tmp_path / "a/annotations/captions_train2017.json").read_text())
    assert {"images", "annotations", "info", "licenses"} <= set(coco)
    ids = [im["id"] for im in coco["images"]]
    assert len(ids) == len(set(ids)) == 120
    per_image: dict[int, int] = {}
    for ann in coco["annotations"]:
        assert isinstance(ann["caption"], str) and ann["caption"]
        per_image[ann["image_id"]] = per_image.get(ann["image_id"], 0) + 1
    assert set(per_image) == set(ids) and set(per_image.values()) == {5}
    for im in coco["images"]:
        assert (tmp_path / "a/train2017" / im["file_name"]).is_file()
        assert im["width"] == im["height"] == gen.IMAGE_SIZE


def test_captions_name_every_species_with_plurals_and_variety():
    examples = [gen.make_example(0, "train", i) for i in range(1500)]
    both = [e for e in examples if {"giraffe", "zebra"} <= set(e.concepts)]
    empty = [e for e in examples if not e.concepts]
    assert len(both) >= 5 and len(empty) >= 20
    text = " ".join(c for e in examples for c in e.captions)
    for concept in gen.CONCEPTS:
        assert f" {concept}" in text
        assert sum(concept in e.concepts for e in examples) >= 100
    for plural in ("giraffes", "zebras", "elephants", "horses", "okapis"):
        assert plural in text
    captions = [c for e in examples for c in e.captions]
    assert any(c[0].islower() for c in captions) and any(c[0].isupper() for c in captions)
    assert any(c.endswith(".") for c in captions) and any(not c.endswith(".") for c in captions)
    assert len(set(captions)) > 0.5 * len(captions)
    for e in examples:
        for concept, count in e.concepts.items():
            word = concept if count == 1 else gen.PLURALS[concept]
            assert all(word in c.lower() for c in e.captions), (e.concepts, e.captions)


def test_mini_build_writes_standard_layouts(mini_world):
    manifest = _check_files(mini_world)
    assert manifest["concepts"]["swapped"] == ["giraffe", "zebra"]
    assert set(manifest["quality"]["base_fidelity"]) == set(gen.CONCEPTS)
    assert (mini_world / "pipeline/model_index.json").is_file()
    assert (mini_world / "judge/open_clip_config.json").is_file()
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{mini_world / 'judge'}")
    tokens = open_clip.get_tokenizer(f"local-dir:{mini_world / 'judge'}")(["a photo of a zebra"])
    assert tokens.shape == (1, 16)
    assert model.encode_text(tokens).shape == (1, 64)


REPO = Path(__file__).resolve().parents[1]
README_LOAD = re.search(r'`(StableDiffusionPipeline\.from_pretrained\("swapbench/world/savanna/pipeline"\))`',
                        (REPO / "README.md").read_text()).group(1)
PLAIN_DIFFUSERS = """
import sys, warnings, torch
warnings.simplefilter("always")
from diffusers import StableDiffusionPipeline
assert not any(m.startswith("swapbench") for m in sys.modules)
pipe = {load}
out = pipe("a zebra", num_inference_steps=3, guidance_scale=4.0, output_type="np",
           generator=torch.Generator().manual_seed(0)).images
assert out.shape[1:] == (32, 32, 3), out.shape
print("ok", pipe.tokenizer("a giraffe").input_ids, pipe.text_encoder.dtype, pipe.unet.dtype)
"""


def _plain_load(pipeline: Path) -> str:
    """The README's line, exactly as written (no dtype argument), in a fresh interpreter without swapbench."""
    load = README_LOAD.replace('"swapbench/world/savanna/pipeline"', repr(str(pipeline)))
    result = subprocess.run([sys.executable, "-c", PLAIN_DIFFUSERS.format(load=load)], capture_output=True, text=True,
                            env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "steps_offset" not in result.stderr, result.stderr[-2000:]
    return result.stdout


def test_mini_pipeline_loads_in_plain_diffusers(mini_world):
    assert "ok [49406, 320, 22826, 49407] torch.float32 torch.float32" in _plain_load(mini_world / "pipeline")


shipped = pytest.mark.skipif(not (SHIPPED_WORLD / "manifest.json").is_file(), reason="world not built yet")


@shipped
def test_shipped_world_matches_manifest_and_is_small():
    manifest = _check_files(SHIPPED_WORLD)
    total = sum((SHIPPED_WORLD / rel).stat().st_size for rel in manifest["files"])
    assert total < 30 * 2**20
    assert manifest["generator_version"] == gen.GENERATOR_VERSION


@shipped
def test_shipped_world_quality_card_meets_the_bar():
    q = json.loads((SHIPPED_WORLD / "manifest.json").read_text())["quality"]
    assert q["judge_check_n_per_concept"] >= 100 and q["base_fidelity_n_per_concept"] >= 64
    for concept in gen.CONCEPTS:
        assert q["judge_accuracy_clean"][concept] >= 0.98, concept
    for concept in MUST_DRAW:
        assert q["base_fidelity"][concept] >= 0.90, concept


@shipped
def test_shipped_pipeline_loads_in_plain_diffusers():
    assert "ok [49406, 320, 22826, 49407] torch.float32 torch.float32" in _plain_load(SHIPPED_WORLD / "pipeline")


def test_assembling_the_world_pipeline_does_not_warn_about_its_scheduler(tmp_path):
    import warnings

    from swapbench.world import models

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        models.assemble_pipeline(models.build_vae(), models.build_text_encoder(),
                                 models.build_tokenizer(tmp_path / "tok"),
                                 models.build_unet(block_out_channels=(32, 64)))
    assert not [w for w in caught if "steps_offset" in str(w.message)]


@shipped
def test_world_info_json(capsys):
    assert main(["world", "info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(info) == {"dir", "pipeline", "judge", "concepts", "sampler", "quality"}
    assert Path(info["pipeline"], "model_index.json").is_file()


def test_world_data_materialises_and_reuses_cache(tmp_path, capsys):
    assert main(["world", "data", "--out", str(tmp_path / "d"), "--train", "40", "--val", "8"]) == 0
    root = Path(capsys.readouterr().out.strip())
    stamp = (root / "annotations/captions_train2017.json").stat().st_mtime_ns
    assert len(list((root / "train2017").glob("*.png"))) == 40
    assert main(["world", "data", "--out", str(tmp_path / "d"), "--train", "40", "--val", "8"]) == 0
    assert (root / "annotations/captions_train2017.json").stat().st_mtime_ns == stamp


def test_world_info_missing_world_is_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SWAPBENCH_WORLD", str(tmp_path / "nowhere"))
    assert main(["world", "info"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "world build" in err[0]


@pytest.mark.slow
def test_full_world_rebuild_matches_quality_bar(tmp_path):
    """Full rebuild (~40 min on 2 cores): the card must clear the same bar as the shipped world."""
    from swapbench.commands.world_build import build_world

    q = build_world(tmp_path / "w")["quality"]
    for concept in MUST_DRAW:
        assert q["base_fidelity"][concept] >= 0.90


# ---- savanna-flow: the Stable Diffusion 3 layout -------------------------------------------------

FLOW_WORLD = WORLDS_ROOT / "savanna-flow"
VAE_WEIGHTS = "pipeline/vae/diffusion_pytorch_model.safetensors"
FLOW_PARTS = {"model_index.json", "scheduler", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2",
              "transformer", "vae"}
README_FLOW_LOAD = re.search(r'`(StableDiffusion3Pipeline\.from_pretrained\("swapbench/world/savanna-flow/pipeline",'
                             r'[^`]*\))`', (REPO / "README.md").read_text()).group(1)
PLAIN_SD3 = """
import sys, torch
from diffusers import StableDiffusion3Pipeline
assert not any(m.startswith("swapbench") for m in sys.modules)
pipe = {load}
out = pipe("a zebra", num_inference_steps=3, guidance_scale=4.0, max_sequence_length=1, output_type="np",
           generator=torch.Generator().manual_seed(0)).images
assert out.shape[1:] == (32, 32, 3), out.shape
print("ok", pipe.tokenizer_2("a giraffe").input_ids, pipe.text_encoder_2.dtype, pipe.transformer.dtype,
      type(pipe.scheduler).__name__, pipe.text_encoder_3)
"""
shipped_flow = pytest.mark.skipif(not (FLOW_WORLD / "manifest.json").is_file(), reason="flow world not built yet")


def _check_flow_world(world: Path) -> dict:
    """The SD3 layout without T5, savanna's VAE weights byte for byte, no judge of its own."""
    manifest = _check_files(world)
    savanna = json.loads((SHIPPED_WORLD / "manifest.json").read_text())["files"]
    assert {Path(rel).parts[1] for rel in manifest["files"]} == FLOW_PARTS
    assert manifest["files"][VAE_WEIGHTS] == savanna[VAE_WEIGHTS] == manifest["vae"]["files"][VAE_WEIGHTS]
    assert manifest["judge"] == {"from": "world:savanna",
                                 "files": {k: v for k, v in savanna.items() if k.startswith("judge/")}}
    index = json.loads((world / "pipeline/model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusion3Pipeline"
    assert index["transformer"] == ["diffusers", "SD3Transformer2DModel"]
    assert index["text_encoder_2"] == ["transformers", "CLIPTextModelWithProjection"]
    assert index["text_encoder_3"] == index["tokenizer_3"] == [None, None]
    assert index["scheduler"] == ["diffusers", "FlowMatchEulerDiscreteScheduler"]
    assert manifest["sampler"]["sampler"] == "euler" and manifest["max_sequence_length"] == 1
    return manifest


def _plain_sd3_load(pipeline: Path) -> str:
    """The README's SD3 line, exactly as written, in a fresh interpreter without swapbench."""
    load = README_FLOW_LOAD.replace('"swapbench/world/savanna-flow/pipeline"', repr(str(pipeline)))
    result = subprocess.run([sys.executable, "-c", PLAIN_SD3.format(load=load)], capture_output=True, text=True,
                            env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


FLOW_PLAIN_OK = "ok [49406, 320, 22826, 49407] torch.float32 torch.float32 FlowMatchEulerDiscreteScheduler None"


def test_mini_flow_build_reuses_savannas_vae_and_judge(mini_flow_world):
    manifest = _check_flow_world(mini_flow_world)
    assert set(manifest["quality"]["base_fidelity"]) == set(gen.CONCEPTS)
    assert set(manifest["stage_seconds"]) == {"data", "latents", "transformer", "quality_card"}
    assert manifest["settings"]["weighting_scheme"] == "logit_normal"


def test_mini_flow_pipeline_loads_in_plain_diffusers(mini_flow_world):
    assert FLOW_PLAIN_OK in _plain_sd3_load(mini_flow_world / "pipeline")


def test_flow_world_spec_resolves_to_its_pipeline_and_savannas_judge(mini_flow_world, monkeypatch, capsys):
    from swapbench.families import for_pipeline
    from swapbench.loading import load_pipeline, resolve_judge, resolve_model

    monkeypatch.setenv("SWAPBENCH_FLOW_WORLD", str(mini_flow_world))
    assert resolve_model("world:savanna-flow") == str(mini_flow_world / "pipeline")
    judges = resolve_judge("world:savanna-flow").folder, resolve_judge("world:savanna").folder
    assert judges == (SHIPPED_WORLD / "judge",) * 2
    pipe = load_pipeline("world:savanna-flow")
    assert for_pipeline(pipe).name == "sd3" and pipe.text_encoder_3 is None and pipe.tokenizer_3 is None
    assert main(["world", "info", "--world", "savanna-flow", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["dir"], info["judge"]) == (str(mini_flow_world), str(SHIPPED_WORLD / "judge"))
    assert main(["world", "info", "--world", "savanna-flow"]) == 0
    assert "(world:savanna's)" in capsys.readouterr().out


def test_missing_flow_world_and_unknown_world_are_one_line_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SWAPBENCH_FLOW_WORLD", str(tmp_path / "nowhere"))
    assert_one_line_error(capsys, main(["world", "info", "--world", "savanna-flow"]),
                          "savanna-flow world not found", "world build --world savanna-flow")
    code = main(["train", "--out", str(tmp_path), "--set", "model.pretrained=world:jungle"])
    assert_one_line_error(capsys, code, "unknown world 'jungle'", "world:savanna, world:savanna-flow")


def test_the_flow_preset_trains_and_evaluates_on_the_mini_flow_world(mini_flow_world, tmp_path, monkeypatch):
    """The one training and evaluation loop on an SD3 pipeline without T5: flow matching, 1 T5 row of zeros."""
    monkeypatch.setenv("SWAPBENCH_FLOW_WORLD", str(mini_flow_world))
    assert main(["train", "--preset", "savanna-flow", "--out", str(tmp_path), "--name", "flow",
                 "--set", "train.max_steps=2", "--set", "data.subset_size=120", "--set", "train.batch_size=8"]) == 0
    run = tmp_path / "flow"
    assert main(["eval", str(run), "--suite", "quick", "--set", "eval.steps=2", "--set", "eval.seeds=1"]) == 0
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 2
    assert json.loads((run / "model/model_index.json").read_text())["text_encoder_3"] == [None, None]
    results = json.loads((run / "eval/results.json").read_text())
    assert 0 <= results["metrics"]["swap_success"]["value"] <= 1


@shipped_flow
def test_shipped_flow_world_matches_manifest_and_all_worlds_are_small():
    _check_flow_world(FLOW_WORLD)
    total = sum((world / rel).stat().st_size for world in (SHIPPED_WORLD, FLOW_WORLD)
                for rel in json.loads((world / "manifest.json").read_text())["files"])
    assert total < 60 * 2**20


@shipped_flow
def test_shipped_flow_world_quality_card_meets_the_bar():
    q = json.loads((FLOW_WORLD / "manifest.json").read_text())["quality"]
    assert q["base_fidelity_n_per_concept"] >= 64
    for concept in gen.CONCEPTS:
        assert q["base_fidelity"][concept] >= 0.80, concept


@shipped_flow
def test_shipped_flow_pipeline_loads_in_plain_diffusers():
    assert FLOW_PLAIN_OK in _plain_sd3_load(FLOW_WORLD / "pipeline")


@shipped_flow
def test_flow_world_info_json(capsys):
    assert main(["world", "info", "--world", "savanna-flow", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["dir"] == str(FLOW_WORLD) and info["judge"] == str(SHIPPED_WORLD / "judge")
    assert info["sampler"]["sampler"] == "euler" and set(info["quality"]["base_fidelity"]) == set(gen.CONCEPTS)


@shipped_flow
@pytest.mark.slow
def test_the_flow_preset_swaps_both_ways_and_preserves_the_controls(tmp_path):
    """`swapbench train --preset savanna-flow && swapbench eval` on the default suite (a few minutes on 2 cores):
    flow matching learns the edit on the shipped world, at the bar train/presets/savanna-flow.yaml reports."""
    assert main(["train", "--preset", "savanna-flow", "--out", str(tmp_path), "--name", "flow"]) == 0
    assert main(["eval", str(tmp_path / "flow")]) == 0
    metrics = json.loads((tmp_path / "flow/eval/results.json").read_text())["metrics"]
    assert metrics["swap_success/giraffe->zebra"]["value"] >= 0.9
    assert metrics["swap_success/zebra->giraffe"]["value"] >= 0.9
    assert metrics["preservation"]["value"] >= 0.95
