"""SDXL base, SD3.5 medium and FLUX.1 dev/schnell by their hub names, offline, on the replicas of
tests/_replicas_families.py: the snapshot holds the repo's file list, a plain
``DiffusionPipeline.from_pretrained`` loads it (sharded parts from their shards, SDXL's fp16 twins by
variant) and it generates."""

import json

import numpy as np
import pytest
import sentencepiece
import torch
from _replicas import put_repo
from _replicas_families import (
    FLUX_DEV,
    FLUX_SCHNELL,
    SD35_MEDIUM,
    SDXL,
    animal_captions,
    build_t5_tokenizer,
    flux_dev_files,
    flux_schnell_files,
    sd35_medium_files,
    sdxl_files,
)
from diffusers import DiffusionPipeline
from safetensors.torch import load

CLIP_TOKENIZER = ["merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json"]
T5_TOKENIZER = ["special_tokens_map.json", "spiece.model", "tokenizer.json", "tokenizer_config.json"]


def _in(folder: str, names: list[str]) -> list[str]:
    return [f"{folder}/{name}" for name in names]


SDXL_LAYOUT = sorted([
    "model_index.json", "scheduler/scheduler_config.json",
    *_in("text_encoder", ["config.json", "model.fp16.safetensors", "model.safetensors"]),
    *_in("text_encoder_2", ["config.json", "model.fp16.safetensors", "model.safetensors"]),
    *_in("tokenizer", CLIP_TOKENIZER), *_in("tokenizer_2", CLIP_TOKENIZER),
    *_in("unet", ["config.json", "diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.safetensors"]),
    *_in("vae", ["config.json", "diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.safetensors"]),
    *_in("vae_1_0", ["config.json", "diffusion_pytorch_model.fp16.safetensors",
                     "diffusion_pytorch_model.safetensors"]),
])
T5_SHARDS = ["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
             "model.safetensors.index.json"]
SD35_LAYOUT = sorted([
    "model_index.json", "scheduler/scheduler_config.json",
    *_in("text_encoder", ["config.json", "model.safetensors"]),
    *_in("text_encoder_2", ["config.json", "model.safetensors"]),
    *_in("text_encoder_3", T5_SHARDS),
    *_in("tokenizer", CLIP_TOKENIZER), *_in("tokenizer_2", CLIP_TOKENIZER), *_in("tokenizer_3", T5_TOKENIZER),
    *_in("transformer", ["config.json", "diffusion_pytorch_model.safetensors"]),
    *_in("vae", ["config.json", "diffusion_pytorch_model.safetensors"]),
])
FLUX_LAYOUT = sorted([
    "model_index.json", "scheduler/scheduler_config.json",
    *_in("text_encoder", ["config.json", "model.safetensors"]),
    *_in("text_encoder_2", T5_SHARDS),
    *_in("tokenizer", CLIP_TOKENIZER), *_in("tokenizer_2", T5_TOKENIZER),
    *_in("transformer", ["config.json", *(f"diffusion_pytorch_model-0000{k}-of-00003.safetensors" for k in (1, 2, 3)),
                         "diffusion_pytorch_model.safetensors.index.json"]),
    *_in("vae", ["config.json", "diffusion_pytorch_model.safetensors"]),
])


@pytest.fixture(scope="session")
def work_dir(tmp_path_factory):
    """Where the replicas' tokenizers are built, once a session."""
    return tmp_path_factory.mktemp("family-replicas")


def _listing(snapshot) -> list[str]:
    return sorted(str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file())


def _generate(pipe, **kwargs) -> np.ndarray:
    images = pipe("a photo of a giraffe", num_inference_steps=2, height=32, width=32, output_type="np",
                  generator=torch.Generator().manual_seed(0), **kwargs).images
    assert images.shape == (1, 32, 32, 3) and np.isfinite(images).all() and images.std() > 0
    return images


def _assert_loaded_from_shards(module: torch.nn.Module, files: dict[str, bytes], folder: str, stem: str,
                               shards: int) -> None:
    """The index names every shard, and every tensor of every shard is what the module holds."""
    index = json.loads(files[f"{folder}/{stem}.safetensors.index.json"])
    names = [f"{stem}-{k:05d}-of-{shards:05d}.safetensors" for k in range(1, shards + 1)]
    assert sorted(set(index["weight_map"].values())) == names
    held = module.state_dict()
    for name in names:
        stored = load(files[f"{folder}/{name}"])
        assert stored and sorted(stored) == sorted(k for k, v in index["weight_map"].items() if v == name)
        for key, tensor in stored.items():
            assert torch.equal(held[key], tensor.float()), f"{folder}/{name}: {key}"


def test_t5_tokenizer_encodes_as_its_sentencepiece_model_with_t5_ids(work_dir):
    from transformers import T5TokenizerFast

    folder = build_t5_tokenizer(work_dir)
    assert sorted(p.name for p in folder.iterdir()) == T5_TOKENIZER
    tokenizer = T5TokenizerFast.from_pretrained(folder)
    model = sentencepiece.SentencePieceProcessor(model_file=str(folder / "spiece.model"))
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    # the 100 sentinels follow the pieces, <extra_id_0> last, as in T5's 32000 + 100
    assert len(tokenizer) == model.get_piece_size() + 100 and 400 < model.get_piece_size() < 1000
    assert tokenizer.convert_tokens_to_ids(["<extra_id_99>", "<extra_id_0>"]) == [len(tokenizer) - 100,
                                                                                  len(tokenizer) - 1]
    for caption in [*animal_captions()[:50], "two zebras and a giraffe"]:
        assert tokenizer(caption).input_ids == model.encode(caption) + [1]
    assert tokenizer.tokenize("giraffe zebras") == ["▁giraffe", "▁zebras"]


def test_sdxl_base_loads_by_name_in_both_precisions_and_generates(hub_cache, work_dir):
    files = sdxl_files(work_dir)
    assert _listing(put_repo(hub_cache, SDXL, files)) == SDXL_LAYOUT

    pipe = DiffusionPipeline.from_pretrained(SDXL, torch_dtype=torch.float32)
    assert type(pipe).__name__ == "StableDiffusionXLPipeline"
    assert pipe.image_encoder is None and pipe.feature_extractor is None
    assert (pipe.tokenizer.pad_token, pipe.tokenizer_2.pad_token) == ("<|endoftext|>", "!")
    unet, clip_l, clip_g = pipe.unet.config, pipe.text_encoder.config, pipe.text_encoder_2.config
    assert type(pipe.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
    assert unet.cross_attention_dim == clip_l.hidden_size + clip_g.hidden_size != 2 * clip_l.hidden_size
    assert pipe.unet.add_embedding.linear_1.in_features == 6 * unet.addition_time_embed_dim + clip_g.projection_dim
    assert pipe.vae.config.force_upcast and pipe.vae_scale_factor == 8
    _generate(pipe)

    twins = DiffusionPipeline.from_pretrained(SDXL, variant="fp16", torch_dtype=torch.float32)
    for folder, stem, module in (("unet", "diffusion_pytorch_model", twins.unet),
                                 ("text_encoder_2", "model", twins.text_encoder_2)):
        stored = load(files[f"{folder}/{stem}.fp16.safetensors"])
        assert all(torch.equal(module.state_dict()[k], v.float()) for k, v in stored.items()), folder
    assert not torch.equal(twins.unet.conv_in.weight, pipe.unet.conv_in.weight)  # float16-rounded, not the fp32
    _generate(twins)


def test_sd35_medium_loads_by_name_with_its_t5_from_two_shards_and_generates(hub_cache, work_dir):
    files = sd35_medium_files(work_dir)
    assert _listing(put_repo(hub_cache, SD35_MEDIUM, files)) == SD35_LAYOUT

    pipe = DiffusionPipeline.from_pretrained(SD35_MEDIUM, torch_dtype=torch.float32)
    assert type(pipe).__name__ == "StableDiffusion3Pipeline"
    _assert_loaded_from_shards(pipe.text_encoder_3, files, "text_encoder_3", "model", 2)
    blocks = pipe.transformer.transformer_blocks
    assert [i for i, block in enumerate(blocks) if block.attn2 is not None] == [0, 1] and len(blocks) == 3
    assert type(blocks[0].attn.norm_q).__name__ == "RMSNorm"
    config = pipe.transformer.config
    assert config.joint_attention_dim == pipe.text_encoder_3.config.d_model
    assert config.pooled_projection_dim == (pipe.text_encoder.config.projection_dim
                                            + pipe.text_encoder_2.config.projection_dim)
    assert pipe.text_encoder.config.hidden_size + pipe.text_encoder_2.config.hidden_size <= config.joint_attention_dim
    assert (pipe.vae.config.latent_channels, pipe.vae.config.scaling_factor, pipe.vae.config.shift_factor) == (
        16, 1.5305, 0.0609)
    assert pipe.scheduler.config.shift == 3.0 and not pipe.scheduler.config.use_dynamic_shifting
    assert len(pipe.tokenizer_3) <= pipe.text_encoder_3.config.vocab_size
    assert pipe.tokenizer_2.pad_token == "!"
    _generate(pipe)


@pytest.mark.parametrize("repo, build, dev", [(FLUX_DEV, flux_dev_files, True),
                                              (FLUX_SCHNELL, flux_schnell_files, False)])
def test_flux_loads_by_name_from_its_shards_and_generates(hub_cache, work_dir, repo, build, dev):
    files = build(work_dir)
    assert _listing(put_repo(hub_cache, repo, files)) == FLUX_LAYOUT

    pipe = DiffusionPipeline.from_pretrained(repo, torch_dtype=torch.float32)
    assert type(pipe).__name__ == "FluxPipeline"
    _assert_loaded_from_shards(pipe.transformer, files, "transformer", "diffusion_pytorch_model", 3)
    _assert_loaded_from_shards(pipe.text_encoder_2, files, "text_encoder_2", "model", 2)
    config = pipe.transformer.config
    assert config.guidance_embeds is dev and hasattr(pipe.transformer.time_text_embed, "guidance_embedder") is dev
    assert config.joint_attention_dim == pipe.text_encoder_2.config.d_model
    assert config.pooled_projection_dim == pipe.text_encoder.config.hidden_size
    assert (pipe.vae.config.shift_factor, pipe.vae.config.scaling_factor) == (0.1159, 0.3611)
    assert not pipe.vae.config.use_quant_conv and pipe.vae.quant_conv is None
    scheduler = pipe.scheduler.config
    assert scheduler.use_dynamic_shifting is dev and scheduler.shift == (3.0 if dev else 1.0)
    assert (scheduler.base_shift, scheduler.max_shift, scheduler.base_image_seq_len, scheduler.max_image_seq_len) == (
        0.5, 1.15, 256, 4096)
    assert 32 % (pipe.vae_scale_factor * 2) == 0
    _generate(pipe, guidance_scale=3.5 if dev else 0.0)
