"""The sdxl-coco, sd35-coco and flux-coco presets against replicas of the hub repos they name
(tests/_replicas_families.py, in a temporary hub cache, offline): the pipeline loads by the preset's own
name and variant, and its family accepts the preset's trainable set, sampler, T5 length, objective and
LoRA targets; `swapbench fetch --check` knows each family's components, variants and shards. The FSDP
launch config for FLUX's full fine-tune is read by accelerate's own launcher."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
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
from swapbench.config import load_config
from swapbench.families import for_pipeline, get_family
from swapbench.loading import load_pipeline

ROOT = Path(__file__).resolve().parent.parent
PRESETS = {  # preset: (its repo, the replica's files, its family, the T5 tokens it encodes)
    "sdxl-coco": (SDXL, sdxl_files, "sdxl", None),
    "sd35-coco": (SD35_MEDIUM, sd35_medium_files, "sd3", 77),
    "flux-coco": (FLUX_DEV, flux_dev_files, "flux", 77),
}


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory):
    """Where the replicas' tokenizers are built, once a module."""
    return tmp_path_factory.mktemp("family-presets")


def test_the_family_presets_keep_the_reference_data_and_plan():
    reference = load_config("sd15-coco")
    for preset in PRESETS:
        cfg = load_config(preset)
        assert cfg.data == dataclasses.replace(reference.data, resolution=512), preset
        t = cfg.train
        assert (t.batch_size * t.grad_accum, t.max_steps, t.warmup_steps, t.lr_scheduler) == (8, 10000, 200, "linear")
        assert cfg.eval.judge == reference.eval.judge and cfg.eval.resolution is None  # the native size
    assert load_config("sdxl-coco").model.variant == "fp16"
    flux = load_config("flux-coco")
    assert (flux.train.method, flux.train.guidance, flux.train.weighting_scheme) == ("lora", 1.0, "none")
    assert (flux.eval.sampler, flux.eval.steps, flux.eval.guidance_scale) == ("euler", 28, 3.5)
    sd35 = load_config("sd35-coco")
    assert (sd35.train.method, sd35.train.trainable, sd35.train.weighting_scheme) == ("finetune", "transformer",
                                                                                      "logit_normal")
    assert (sd35.eval.sampler, sd35.eval.steps, sd35.eval.guidance_scale) == ("euler", 40, 4.5)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_by_its_own_names_is_accepted_by_its_family(preset, hub_cache, work_dir):
    repo, files, family_name, t5_tokens = PRESETS[preset]
    put_repo(hub_cache, repo, files(work_dir))
    cfg = load_config(preset)
    pipe = load_pipeline(cfg.model, safety_checker=False)  # by the hub name, offline, with the preset's variant
    family = for_pipeline(pipe)
    assert family is get_family(family_name)
    family.check_trainable(cfg.train.trainable)
    family.check_sampler(cfg.eval.sampler)
    assert family.sequence_length(pipe, cfg.model.max_sequence_length) == t5_tokens
    timesteps = family.objective(pipe.scheduler.config, cfg.train).draw(torch.Generator().manual_seed(0), 64)
    assert timesteps.shape == (64,) and 0 <= timesteps.min() and timesteps.max() < 1000


def _lora_targets(pipe, cfg) -> dict[str, int]:
    """Adapted modules of the transformer, counted by the suffix that matched them."""
    from swapbench.train.methods import get_method

    denoiser = for_pipeline(pipe).denoiser_of(pipe)
    trainable = get_method(cfg.train.method).trainable_parameters(denoiser, for_pipeline(pipe), cfg)
    adapted = [name for name, module in denoiser.named_modules() if hasattr(module, "lora_A")]
    assert trainable and all(".lora_" in name for name, p in denoiser.named_parameters() if p.requires_grad)
    return {target: sum(name.endswith(f".{target}") for name in adapted) for target in cfg.train.lora_targets}


@pytest.mark.parametrize("repo, files", [(FLUX_DEV, flux_dev_files), (FLUX_SCHNELL, flux_schnell_files)])
def test_flux_lora_adapts_both_streams_of_every_joint_block_and_the_single_blocks(repo, files, hub_cache, work_dir):
    put_repo(hub_cache, repo, files(work_dir))
    cfg = load_config("flux-coco", overrides=[f"model.pretrained={repo}"])  # schnell: --model
    pipe = load_pipeline(cfg.model)
    joint, single = len(pipe.transformer.transformer_blocks), len(pipe.transformer.single_transformer_blocks)
    assert _lora_targets(pipe, cfg) == {
        "to_q": joint + single, "to_k": joint + single, "to_v": joint + single, "to_out.0": joint,
        "add_q_proj": joint, "add_k_proj": joint, "add_v_proj": joint, "to_add_out": joint}
    # schnell has no guidance embedding and was distilled with 256 T5 tokens: the preset's 77 fits both
    assert pipe.transformer.config.guidance_embeds == (repo == FLUX_DEV)
    assert get_family("flux").sequence_length(pipe, cfg.model.max_sequence_length) == 77


def test_fsdp_config_shards_the_flux_blocks_in_bf16(monkeypatch):
    """accelerate's launcher reads docs/fsdp-flux.yaml into the environment its FSDP plugin is built from."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env
    from diffusers.models.transformers import transformer_flux

    args = launch_command_parser().parse_args(["--config_file", str(ROOT / "docs/fsdp-flux.yaml"), "-m", "swapbench",
                                               "train", "--preset", "flux-coco"])
    args, _, _ = _validate_launch_command(args)
    env = prepare_multi_gpu_env(args)
    assert (env["ACCELERATE_USE_FSDP"], env["ACCELERATE_MIXED_PRECISION"], args.num_processes) == ("true", "bf16", 8)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert (plugin.fsdp_version, plugin.reshard_after_forward, plugin.state_dict_type.name) == (2, True,
                                                                                                "FULL_STATE_DICT")
    assert plugin.transformer_cls_names_to_wrap == ["FluxTransformerBlock", "FluxSingleTransformerBlock"]
    assert all(isinstance(getattr(transformer_flux, name), type) for name in plugin.transformer_cls_names_to_wrap)


def _check(capsys, repo: str, *overrides: str) -> tuple[int, list[str]]:
    """``swapbench fetch --check --model repo``: its exit code and what the pipeline row names missing."""
    code = main(["fetch", "--check", "--model", repo, *(a for o in overrides for a in ("--set", o)), "--json"])
    (row,) = [r for r in json.loads(capsys.readouterr().out) if r["kind"] == "pipeline"]
    assert row["present"] == (code == 0) and row["name"] == repo
    return code, row["missing"]


@pytest.mark.parametrize("repo, files", [(SDXL, sdxl_files), (SD35_MEDIUM, sd35_medium_files),
                                         (FLUX_DEV, flux_dev_files), (FLUX_SCHNELL, flux_schnell_files)])
def test_fetch_check_passes_on_each_family_replica(repo, files, hub_cache, work_dir, capsys):
    put_repo(hub_cache, repo, files(work_dir))
    assert _check(capsys, repo) == (0, [])


def test_fetch_check_names_a_missing_shard_of_a_sharded_component(hub_cache, work_dir, tmp_path, capsys):
    snapshot = put_repo(hub_cache, FLUX_DEV, flux_dev_files(work_dir))
    for shard in ("transformer/diffusion_pytorch_model-00002-of-00003.safetensors",
                  "text_encoder_2/model-00001-of-00002.safetensors"):
        (snapshot / shard).rename(tmp_path / "away")
        assert _check(capsys, FLUX_DEV) == (2, [shard])
        (tmp_path / "away").rename(snapshot / shard)
    # a link whose blob is gone (an interrupted or pruned cache) is missing too
    blob = (snapshot / "transformer/diffusion_pytorch_model-00003-of-00003.safetensors").resolve()
    blob.unlink()
    assert _check(capsys, FLUX_DEV) == (2, ["transformer/diffusion_pytorch_model-00003-of-00003.safetensors"])


def test_fetch_check_names_a_missing_text_encoder_folder(hub_cache, work_dir, capsys):
    snapshot = put_repo(hub_cache, SD35_MEDIUM, sd35_medium_files(work_dir))
    shutil.rmtree(snapshot / "text_encoder_3")
    code = main(["fetch", "--check", "--model", SD35_MEDIUM])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "missing text_encoder_3/ (no folder)" in err[0]
    assert _check(capsys, SD35_MEDIUM) == (2, ["text_encoder_3/ (no folder)"])


def test_fetch_check_reads_the_sdxl_fp16_variant(hub_cache, work_dir, tmp_path, capsys):
    snapshot = put_repo(hub_cache, SDXL, sdxl_files(work_dir))
    assert _check(capsys, SDXL, "model.variant=fp16") == (0, [])
    (snapshot / "text_encoder_2/model.fp16.safetensors").rename(tmp_path / "away")
    assert _check(capsys, SDXL, "model.variant=fp16") == (2, ["text_encoder_2/ weights (fp16)"])
    assert _check(capsys, SDXL) == (0, [])  # the full-precision files are all there


def test_fetch_check_reads_sharded_variant_files(hub_cache, work_dir, tmp_path, capsys):
    """fp16 twins written by diffusers' own save_pretrained(variant=..., max_shard_size=...): every part
    sharded as ``model.fp16-0000k-of-0000n.safetensors`` with ``model.safetensors.index.fp16.json``."""
    from diffusers import DiffusionPipeline

    files = sd35_medium_files(work_dir)
    put_repo(hub_cache, SD35_MEDIUM, files)
    assert _check(capsys, SD35_MEDIUM, "model.variant=fp16")[0] == 2  # no fp16 files yet
    DiffusionPipeline.from_pretrained(SD35_MEDIUM, torch_dtype=torch.float16).save_pretrained(
        tmp_path / "fp16", variant="fp16", max_shard_size="30KB")
    twins = {str(f.relative_to(tmp_path / "fp16")): f.read_bytes() for f in (tmp_path / "fp16").rglob("*.fp16*")}
    shards = sorted(name for name in twins if name.startswith("text_encoder_3/model.fp16-"))
    assert len(shards) > 1 and "text_encoder_3/model.safetensors.index.fp16.json" in twins
    snapshot = put_repo(hub_cache, SD35_MEDIUM, {**files, **twins})
    full = sorted(name for name in files if name.startswith("text_encoder_3/model-"))
    for name in full:  # T5 now only as the variant: what loads below can only come from its shards
        (snapshot / name).unlink()
    assert _check(capsys, SD35_MEDIUM, "model.variant=fp16") == (0, [])
    assert _check(capsys, SD35_MEDIUM) == (2, full)
    DiffusionPipeline.from_pretrained(SD35_MEDIUM, variant="fp16")  # what --check vouched for loads

    (snapshot / shards[-1]).unlink()
    assert _check(capsys, SD35_MEDIUM, "model.variant=fp16") == (2, [shards[-1]])
