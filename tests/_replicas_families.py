"""Replicas of four more real Hugging Face hub repos, in their diffusers layouts, with tiny random weights
(the style of tests/_replicas.py: the repo's own file names and ``model_index.json``, every config with the
published key set and its sizes shrunk, ``.fp16`` twins and weight shards where the repo has them).

- ``stabilityai/stable-diffusion-xl-base-1.0``: two CLIP text encoders (the second with a projection, its
  tokenizer padding with "!"), a text_time UNet, the VAE with ``force_upcast``, and for every model part
  ``.safetensors`` plus ``.fp16.safetensors`` (also the spare ``vae_1_0`` folder).
- ``stabilityai/stable-diffusion-3.5-medium``: two projecting CLIP encoders and a T5 encoder in two shards,
  an MMDiT with dual attention in its first blocks and RMS q/k norm, a 16-channel VAE with a shift factor.
- ``black-forest-labs/FLUX.1-dev`` and ``black-forest-labs/FLUX.1-schnell``: CLIP + a T5 encoder in two
  shards, the transformer in three shards (guidance-embedding for dev), dynamic shifting for dev only.

Sizes keep the real relations between the parts: the SDXL UNet attends to both CLIP widths concatenated and
its added time embedding takes six time ids plus the pooled projection; SD3's joint attention is T5's width
and its pooled projection both CLIP projections; FLUX's joint attention is T5's width and its pooled
projection the CLIP width; every VAE downsamples 8x. Weights are stored in the precision the repo stores
(SDXL float32 with float16 twins, FLUX bfloat16, SD3.5 float16 as its text encoder configs record).

Not replicated: ONNX, OpenVINO and Flax exports, images, README/LICENSE, and the original-format single
files (``sd_xl_base_1.0*.safetensors``, ``sd3.5_medium.safetensors`` and ``text_encoders/``,
``flux1-dev.safetensors`` / ``flux1-schnell.safetensors`` and ``ae.safetensors``): those hold the
reference implementations' key layout, which diffusers only converts from, so a stand-in would have to
reimplement that conversion in reverse. The T5 tokenizer is a real SentencePiece unigram model trained here
on generated animal captions (T5's special ids and 100 sentinels, a vocabulary of a few hundred pieces).

Where no copy of a published file was at hand, a part follows its nearest sibling: SD3.5 medium's text
encoder, tokenizer, scheduler and VAE configs follow SD3 medium's, FLUX.1-schnell's configs FLUX.1-dev's,
and ``vae_1_0`` repeats SDXL's ``vae`` config.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import torch
from _replicas import _weights

SDXL = "stabilityai/stable-diffusion-xl-base-1.0"
SD35_MEDIUM = "stabilityai/stable-diffusion-3.5-medium"
FLUX_DEV = "black-forest-labs/FLUX.1-dev"
FLUX_SCHNELL = "black-forest-labs/FLUX.1-schnell"


def _js(obj: dict, sort: bool = True) -> bytes:
    """JSON as the hub files are written: indented, keys sorted (``model_index.json`` keeps its own order)."""
    return (json.dumps(obj, indent=2, sort_keys=sort) + "\n").encode()


_TRANSFORMERS_META = ("_name_or_path", "architectures", "torch_dtype", "transformers_version")

# ---------------------------------------------------------------------------------------------------------
# Text encoders: the published key sets (CLIP-L 768 wide, OpenCLIP bigG 1280, T5 v1.1 XXL 4096, 24 layers),
# shrunk. The CLIP token embedding keeps CLIP's full vocabulary, as the real BPE files index all of it.

def _clip_config(hidden: int, act: str, projecting: bool, dtype: str, version: str) -> dict:
    return {
        "architectures": ["CLIPTextModelWithProjection" if projecting else "CLIPTextModel"],
        "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0, "eos_token_id": 2, "hidden_act": act,
        "hidden_size": hidden, "initializer_factor": 1.0, "initializer_range": 0.02,
        "intermediate_size": 2 * hidden, "layer_norm_eps": 1e-05, "max_position_embeddings": 77,
        "model_type": "clip_text_model", "num_attention_heads": 2, "num_hidden_layers": 2, "pad_token_id": 1,
        "projection_dim": hidden, "torch_dtype": dtype, "transformers_version": version, "vocab_size": 49408,
    }


CLIP_L_WIDTH, CLIP_G_WIDTH, T5_WIDTH = 8, 16, 32


def _t5_config(vocab_size: int, dtype: str, version: str) -> dict:
    return {
        "_name_or_path": "google/t5-v1_1-xxl", "architectures": ["T5EncoderModel"], "classifier_dropout": 0.0,
        "d_ff": 2 * T5_WIDTH, "d_kv": 8, "d_model": T5_WIDTH, "decoder_start_token_id": 0,
        "dense_act_fn": "gelu_new", "dropout_rate": 0.1, "eos_token_id": 1, "feed_forward_proj": "gated-gelu",
        "initializer_factor": 1.0, "is_encoder_decoder": True, "is_gated_act": True, "layer_norm_epsilon": 1e-06,
        "model_type": "t5", "num_decoder_layers": 2, "num_heads": 4, "num_layers": 2, "output_past": True,
        "pad_token_id": 0, "relative_attention_max_distance": 128, "relative_attention_num_buckets": 32,
        "tie_word_embeddings": False, "torch_dtype": dtype, "transformers_version": version, "use_cache": True,
        "vocab_size": vocab_size,
    }


# ---------------------------------------------------------------------------------------------------------
# Tokenizer files. CLIP's vocab.json/merges.txt come from swapbench.world.models.build_tokenizer; the T5
# folder is built by build_t5_tokenizer.

_TOKEN = {"lstrip": False, "normalized": True, "rstrip": False, "single_word": False}
_RAW_TOKEN = {**_TOKEN, "normalized": False}


def _clip_special_tokens(pad: str, eos_normalized: bool = True) -> dict:
    eos = _TOKEN if eos_normalized else _RAW_TOKEN
    return {"bos_token": {"content": "<|startoftext|>", **_TOKEN}, "eos_token": {"content": "<|endoftext|>", **eos},
            "pad_token": pad, "unk_token": {"content": "<|endoftext|>", **eos}}


def _sdxl_clip_tokenizer_config(pad: str) -> dict:
    """SDXL's tokenizer configs (transformers 4.3x style, tokens as ``AddedToken`` objects)."""
    added = {"__type": "AddedToken", **_TOKEN}
    return {
        "add_prefix_space": False, "bos_token": {"content": "<|startoftext|>", **added},
        "clean_up_tokenization_spaces": True, "do_lower_case": True,
        "eos_token": {"content": "<|endoftext|>", **added}, "errors": "replace", "model_max_length": 77,
        "pad_token": pad, "tokenizer_class": "CLIPTokenizer", "unk_token": {"content": "<|endoftext|>", **added},
    }


def _clip_tokenizer_config(pad: str) -> dict:
    """The SD3 / FLUX tokenizer configs (transformers 4.4x style, with ``added_tokens_decoder``); OpenCLIP's
    "!" pad token is listed as an added token at id 0."""
    added = {"49406": {"content": "<|startoftext|>", **_TOKEN, "special": True},
             "49407": {"content": "<|endoftext|>", **_RAW_TOKEN, "special": True}}
    if pad == "!":
        added = {"0": {"content": "!", **_RAW_TOKEN, "special": True}, **added}
    return {
        "add_prefix_space": False, "added_tokens_decoder": added, "bos_token": "<|startoftext|>",
        "clean_up_tokenization_spaces": True, "do_lower_case": True, "eos_token": "<|endoftext|>",
        "errors": "replace", "model_max_length": 77, "pad_token": pad, "tokenizer_class": "CLIPTokenizer",
        "unk_token": "<|endoftext|>",
    }


_ANIMALS = ("giraffe zebra elephant horse lion cow donkey okapi antelope buffalo rhino hippo cheetah leopard camel "
            "ostrich goat dog cat bird monkey bear tiger wolf fox rabbit squirrel kangaroo koala panda penguin duck "
            "goose swan eagle owl parrot turtle frog crocodile hyena jackal meerkat gazelle warthog baboon gorilla "
            "flamingo pelican heron stork vulture falcon mouse rat hamster pony mule llama alpaca yak").split()
_COLORS = "red orange yellow green blue purple pink brown white black grey golden silver beige dark light".split()
_ADJECTIVES = ("tall small young old wild tiny huge calm proud shy strong thin fat quiet bright soft warm cold long "
               "short big fast slow").split()
_VERBS = ("stand walk graze eat drink rest sleep look play jump swim climb hide chase watch cross wander gather roam "
          "hunt feed follow turn stretch call wait rush leap kick roll").split()
_PLACES = ("field tree river savanna sky fence road forest lake hill barn meadow desert beach mountain valley garden "
           "park farm jungle pond stream bridge street city village house window table cage enclosure rock cliff "
           "cave island shore trail path plain bush branch log wall gate truck car boat tent").split()
_PREPOSITIONS = "in on at near by under beside behind across through along past around".split()
_COUNTS = "two three four five six seven eight nine ten eleven twelve twenty several many some".split()
_STYLES = "photo picture image painting drawing sketch illustration render portrait snapshot cartoon".split()
T5_SENTINELS = 100


def _plural(noun: str) -> str:
    if noun.endswith(("ch", "sh", "s", "x")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def _gerund(verb: str) -> str:
    if verb == "swim":
        return "swimming"
    return (verb[:-1] if verb.endswith("e") else verb) + "ing"


def animal_captions(seed: int = 0) -> list[str]:
    """Generated English captions about animals (counts, plurals, colours, places; lower and sentence case),
    the training text of the replica's T5 vocabulary."""
    rng = random.Random(seed)
    lines = []
    for animal in _ANIMALS:
        for _ in range(3):
            verb, place = rng.choice(_VERBS), rng.choice(_PLACES)
            lines += [
                f"a photo of a {animal}",
                f"a {rng.choice(_STYLES)} of {rng.choice(_COUNTS)} {_plural(animal)}",
                f"a {rng.choice(_ADJECTIVES)} {rng.choice(_COLORS)} {animal} {_gerund(verb)} "
                f"{rng.choice(_PREPOSITIONS)} the {place}",
                f"{rng.choice(_COUNTS)} {_plural(animal)} {verb} {rng.choice(_PREPOSITIONS)} the {_plural(place)}",
                f"The {animal.capitalize()} {verb}s {rng.choice(_PREPOSITIONS)} a {rng.choice(_ADJECTIVES)}er "
                f"{rng.choice(_PLACES)}.",
                f"{rng.choice(_COUNTS).capitalize()} {rng.choice(_COLORS)} {_plural(animal).capitalize()}, "
                f"{rng.choice(_ADJECTIVES)}est of all, {verb}ed there.",
            ]
    return lines


def _t5_tokenizer_config(pieces: int) -> dict:
    """FLUX's (and SD3's) ``tokenizer_config.json`` of T5TokenizerFast. The sentinels sit after the
    SentencePiece pieces in reverse order, ``<extra_id_0>`` last."""
    sentinel = {"lstrip": True, "normalized": False, "rstrip": True, "single_word": False, "special": True}
    added = {str(i): {"content": token, **_RAW_TOKEN, "special": True}
             for i, token in enumerate(["<pad>", "</s>", "<unk>"])}
    added.update({str(pieces + i): {"content": f"<extra_id_{T5_SENTINELS - 1 - i}>", **sentinel}
                  for i in range(T5_SENTINELS)})
    return {
        "add_prefix_space": True, "added_tokens_decoder": added,
        "additional_special_tokens": [f"<extra_id_{i}>" for i in range(T5_SENTINELS)],
        "clean_up_tokenization_spaces": True, "eos_token": "</s>", "extra_ids": T5_SENTINELS, "legacy": True,
        "model_max_length": 512, "pad_token": "<pad>", "sp_model_kwargs": {}, "tokenizer_class": "T5Tokenizer",
        "unk_token": "<unk>",
    }


def build_t5_tokenizer(work_dir: Path) -> Path:
    """The replica's T5 tokenizer folder (``spiece.model``, ``tokenizer.json``, ``tokenizer_config.json``,
    ``special_tokens_map.json``, as the repos ship it), built once under ``work_dir`` and reused after."""
    out = work_dir / "t5-tokenizer"
    if (out / "tokenizer.json").is_file():
        return out
    import sentencepiece
    from transformers import T5TokenizerFast

    model = io.BytesIO()
    # T5's ids: <pad> 0, </s> 1, <unk> 2, no <s>. The trainer stops below vocab_size when the text runs out
    # of pieces worth keeping, which a few hundred generated captions do.
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(animal_captions()), model_writer=model, model_type="unigram", vocab_size=1000,
        hard_vocab_limit=False, character_coverage=1.0, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>", num_threads=1, minloglevel=2)
    source = work_dir / "t5-spiece"
    source.mkdir(parents=True, exist_ok=True)
    (source / "spiece.model").write_bytes(model.getvalue())
    tokenizer = T5TokenizerFast.from_pretrained(source, extra_ids=T5_SENTINELS, model_max_length=512)
    tokenizer.save_pretrained(out)  # tokenizer.json as transformers converts the SentencePiece model
    (out / "spiece.model").write_bytes(model.getvalue())
    config = _t5_tokenizer_config(pieces=len(tokenizer) - T5_SENTINELS)
    (out / "tokenizer_config.json").write_bytes(_js(config))
    special = {"additional_special_tokens": config["additional_special_tokens"],
               **{key: {"content": config[key], **_RAW_TOKEN} for key in ("eos_token", "pad_token", "unk_token")}}
    (out / "special_tokens_map.json").write_bytes(_js(special))
    return out


def _tokenizer_files(folder: str, source: Path, names: tuple[str, ...]) -> dict[str, bytes]:
    return {f"{folder}/{name}": (source / name).read_bytes() for name in names}


def _clip_bpe(work_dir: Path) -> Path:
    from swapbench.world import models

    out = work_dir / "clip-tokenizer"
    if not (out / "merges.txt").is_file():
        models.build_tokenizer(out)
    return out


# ---------------------------------------------------------------------------------------------------------
# Building and writing the parts.


def _clip(config: dict) -> torch.nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cls = CLIPTextModelWithProjection if config["architectures"] == ["CLIPTextModelWithProjection"] else CLIPTextModel
    return cls(CLIPTextConfig(**{k: v for k, v in config.items() if k not in _TRANSFORMERS_META}))


def _t5(config: dict) -> torch.nn.Module:
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(**{k: v for k, v in config.items() if k not in _TRANSFORMERS_META}))


def _untied_state(module: torch.nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The state dict as ``save_pretrained`` writes it: a tensor tied to an earlier one (T5's
    ``encoder.embed_tokens`` to ``shared``) is left out and re-tied on load."""
    state, seen = {}, set()
    for name, tensor in module.state_dict().items():
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            state[name] = tensor.detach().to(dtype).contiguous()
    return state


def _sharded(folder: str, stem: str, state: dict[str, torch.Tensor], shards: int) -> dict[str, bytes]:
    """``state`` split in order into ``shards`` files of about equal size, named and indexed as the hub
    libraries name them (``<stem>-0000k-of-0000n.safetensors`` and ``<stem>.safetensors.index.json``)."""
    from safetensors.torch import save

    sizes = [t.numel() * t.element_size() for t in state.values()]
    total, done = sum(sizes), 0
    parts: list[dict[str, torch.Tensor]] = [{} for _ in range(shards)]
    for (name, tensor), size in zip(state.items(), sizes, strict=True):
        parts[min(shards - 1, done * shards // total)][name] = tensor
        done += size
    assert all(parts), f"{folder}: too few tensors for {shards} shards"
    files, weight_map = {}, {}
    for k, part in enumerate(parts, start=1):
        name = f"{stem}-{k:05d}-of-{shards:05d}.safetensors"
        files[f"{folder}/{name}"] = save(part)
        weight_map.update(dict.fromkeys(part, name))
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    files[f"{folder}/{stem}.safetensors.index.json"] = _js(index)
    return files


def _vae_config(latent_channels: int, version: str, **published) -> dict:
    """An AutoencoderKL config shrunk from the 4-level [128, 256, 512, 512] one (so still 8x downsampling)."""
    return {
        "_class_name": "AutoencoderKL", "_diffusers_version": version, "act_fn": "silu",
        "block_out_channels": [8, 16, 16, 16], "down_block_types": ["DownEncoderBlock2D"] * 4, "force_upcast": True,
        "in_channels": 3, "latent_channels": latent_channels, "layers_per_block": 1, "norm_num_groups": 8,
        "out_channels": 3, "sample_size": 32, "up_block_types": ["UpDecoderBlock2D"] * 4, **published,
    }


# ---------------------------------------------------------------------------------------------------------
# stabilityai/stable-diffusion-xl-base-1.0

SDXL_MODEL_INDEX = {
    "_class_name": "StableDiffusionXLPipeline", "_diffusers_version": "0.19.0.dev0",
    "force_zeros_for_empty_prompt": True, "add_watermarker": None,
    "scheduler": ["diffusers", "EulerDiscreteScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"], "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
SDXL_SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler", "_diffusers_version": "0.19.0.dev0", "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False, "interpolation_type": "linear",
    "num_train_timesteps": 1000, "prediction_type": "epsilon", "sample_max_value": 1.0, "set_alpha_to_one": False,
    "skip_prk_steps": True, "steps_offset": 1, "timestep_spacing": "leading", "trained_betas": None,
    "use_karras_sigmas": False,
}
SDXL_TIME_EMBED = 8  # addition_time_embed_dim (256 in the repo)
# Published: block_out_channels [320, 640, 1280], attention heads [5, 10, 20], transformer depth [1, 2, 10],
# two resnets per block, cross-attention 2048 = 768 + 1280, added embedding 2816 = 6 * 256 + 1280.
SDXL_UNET = {
    "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.19.0.dev0", "act_fn": "silu",
    "addition_embed_type": "text_time", "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": SDXL_TIME_EMBED, "attention_head_dim": [1, 2, 4], "block_out_channels": [8, 16, 32],
    "center_input_sample": False, "class_embed_type": None, "class_embeddings_concat": False, "conv_in_kernel": 3,
    "conv_out_kernel": 3, "cross_attention_dim": CLIP_L_WIDTH + CLIP_G_WIDTH, "cross_attention_norm": None,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"], "downsample_padding": 1,
    "dual_cross_attention": False, "encoder_hid_dim": None, "encoder_hid_dim_type": None, "flip_sin_to_cos": True,
    "freq_shift": 0, "in_channels": 4, "layers_per_block": 1, "mid_block_only_cross_attention": None,
    "mid_block_scale_factor": 1, "mid_block_type": "UNetMidBlock2DCrossAttn", "norm_eps": 1e-05,
    "norm_num_groups": 8, "num_attention_heads": None, "num_class_embeds": None, "only_cross_attention": False,
    "out_channels": 4, "projection_class_embeddings_input_dim": 6 * SDXL_TIME_EMBED + CLIP_G_WIDTH,
    "resnet_out_scale_factor": 1.0, "resnet_skip_time_act": False, "resnet_time_scale_shift": "default",
    "sample_size": 4, "time_cond_proj_dim": None, "time_embedding_act_fn": None, "time_embedding_dim": None,
    "time_embedding_type": "positional", "timestep_post_act": None, "transformer_layers_per_block": [1, 1, 2],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], "upcast_attention": None,
    "use_linear_projection": True,
}
SDXL_VAE = {**_vae_config(4, "0.20.0.dev0", scaling_factor=0.13025), "_name_or_path": "../sdxl-vae/"}
SDXL_TEXT_ENCODER = _clip_config(CLIP_L_WIDTH, "quick_gelu", False, "float16", "4.32.0.dev0")
SDXL_TEXT_ENCODER_2 = _clip_config(CLIP_G_WIDTH, "gelu", True, "float16", "4.32.0.dev0")


def sdxl_files(work_dir: Path) -> dict[str, bytes]:
    """The SDXL base repo's diffusers files; every weight file float32 with its ``.fp16`` twin."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(0)
    modules = {"unet": UNet2DConditionModel.from_config(SDXL_UNET), "vae": AutoencoderKL.from_config(SDXL_VAE),
               "vae_1_0": AutoencoderKL.from_config(SDXL_VAE), "text_encoder": _clip(SDXL_TEXT_ENCODER),
               "text_encoder_2": _clip(SDXL_TEXT_ENCODER_2)}
    configs = {"unet": SDXL_UNET, "vae": SDXL_VAE, "vae_1_0": SDXL_VAE, "text_encoder": SDXL_TEXT_ENCODER,
               "text_encoder_2": SDXL_TEXT_ENCODER_2}
    files = {"model_index.json": _js(SDXL_MODEL_INDEX, sort=False),
             "scheduler/scheduler_config.json": _js(SDXL_SCHEDULER)}
    for folder, module in modules.items():
        stem = "model" if folder.startswith("text_encoder") else "diffusion_pytorch_model"
        files[f"{folder}/config.json"] = _js(configs[folder])
        files[f"{folder}/{stem}.safetensors"] = _weights(module, torch.float32)
        files[f"{folder}/{stem}.fp16.safetensors"] = _weights(module, torch.float16)
    bpe = _clip_bpe(work_dir)
    for folder, pad in (("tokenizer", "<|endoftext|>"), ("tokenizer_2", "!")):
        files.update(_tokenizer_files(folder, bpe, ("vocab.json", "merges.txt")))
        files[f"{folder}/special_tokens_map.json"] = _js(_clip_special_tokens(pad))
        files[f"{folder}/tokenizer_config.json"] = _js(_sdxl_clip_tokenizer_config(pad))
    return files


# ---------------------------------------------------------------------------------------------------------
# T5-conditioned repos (SD3.5 medium, FLUX.1): shared tokenizer and encoder writing


def _t5_vocab_size(t5_dir: Path) -> int:
    """T5's embedding rows: the SentencePiece pieces and the sentinels rounded up to a multiple of 128, as
    T5 v1.1 has 32128 rows for its 32100 tokens."""
    import sentencepiece

    pieces = sentencepiece.SentencePieceProcessor(model_file=str(t5_dir / "spiece.model")).get_piece_size()
    return -(-(pieces + T5_SENTINELS) // 128) * 128


def _clip_tokenizer_files(folder: str, bpe: Path, pad: str) -> dict[str, bytes]:
    return {**_tokenizer_files(folder, bpe, ("vocab.json", "merges.txt")),
            f"{folder}/special_tokens_map.json": _js(_clip_special_tokens(pad, eos_normalized=False)),
            f"{folder}/tokenizer_config.json": _js(_clip_tokenizer_config(pad))}


_T5_TOKENIZER_FILES = ("special_tokens_map.json", "spiece.model", "tokenizer.json", "tokenizer_config.json")


# ---------------------------------------------------------------------------------------------------------
# stabilityai/stable-diffusion-3.5-medium

SD35_MODEL_INDEX = {
    "_class_name": "StableDiffusion3Pipeline", "_diffusers_version": "0.31.0.dev0",
    "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
    "text_encoder": ["transformers", "CLIPTextModelWithProjection"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    "text_encoder_3": ["transformers", "T5EncoderModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "CLIPTokenizer"], "tokenizer_3": ["transformers", "T5TokenizerFast"],
    "transformer": ["diffusers", "SD3Transformer2DModel"], "vae": ["diffusers", "AutoencoderKL"],
}
SD35_SCHEDULER = {"_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": "0.31.0.dev0",
                  "num_train_timesteps": 1000, "shift": 3.0}
# Published: 24 layers of 24 heads x 64, blocks 0-12 with a second (image-only) attention, caption
# projection 1536 (= the inner width), joint attention 4096 (T5), pooled 2048 = 768 + 1280, 384 positions.
SD35_TRANSFORMER = {
    "_class_name": "SD3Transformer2DModel", "_diffusers_version": "0.31.0.dev0", "attention_head_dim": 8,
    "caption_projection_dim": 16, "dual_attention_layers": [0, 1], "in_channels": 16,
    "joint_attention_dim": T5_WIDTH, "num_attention_heads": 2, "num_layers": 3, "out_channels": 16, "patch_size": 2,
    "pooled_projection_dim": CLIP_L_WIDTH + CLIP_G_WIDTH, "pos_embed_max_size": 16, "qk_norm": "rms_norm",
    "sample_size": 4,
}
SD35_VAE = _vae_config(16, "0.31.0.dev0", latents_mean=None, latents_std=None, scaling_factor=1.5305,
                       shift_factor=0.0609, use_post_quant_conv=False, use_quant_conv=False)
SD35_TEXT_ENCODER = _clip_config(CLIP_L_WIDTH, "quick_gelu", True, "float16", "4.41.2")
SD35_TEXT_ENCODER_2 = _clip_config(CLIP_G_WIDTH, "gelu", True, "float16", "4.41.2")


def sd35_medium_files(work_dir: Path) -> dict[str, bytes]:
    """The SD3.5 medium repo's diffusers files, float16; T5 in two shards."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel

    t5_dir = build_t5_tokenizer(work_dir)
    t5_config = _t5_config(_t5_vocab_size(t5_dir), "float16", "4.41.2")
    torch.manual_seed(0)
    files = {"model_index.json": _js(SD35_MODEL_INDEX, sort=False),
             "scheduler/scheduler_config.json": _js(SD35_SCHEDULER)}
    for folder, stem, config, module in (
            ("transformer", "diffusion_pytorch_model", SD35_TRANSFORMER,
             SD3Transformer2DModel.from_config(SD35_TRANSFORMER)),
            ("vae", "diffusion_pytorch_model", SD35_VAE, AutoencoderKL.from_config(SD35_VAE)),
            ("text_encoder", "model", SD35_TEXT_ENCODER, _clip(SD35_TEXT_ENCODER)),
            ("text_encoder_2", "model", SD35_TEXT_ENCODER_2, _clip(SD35_TEXT_ENCODER_2))):
        files[f"{folder}/config.json"] = _js(config)
        files[f"{folder}/{stem}.safetensors"] = _weights(module, torch.float16)
    files["text_encoder_3/config.json"] = _js(t5_config)
    files.update(_sharded("text_encoder_3", "model", _untied_state(_t5(t5_config), torch.float16), 2))
    bpe = _clip_bpe(work_dir)
    files.update(_clip_tokenizer_files("tokenizer", bpe, "<|endoftext|>"))
    files.update(_clip_tokenizer_files("tokenizer_2", bpe, "!"))
    files.update(_tokenizer_files("tokenizer_3", t5_dir, _T5_TOKENIZER_FILES))
    return files


# ---------------------------------------------------------------------------------------------------------
# black-forest-labs/FLUX.1-dev and FLUX.1-schnell


FLUX_MODEL_INDEX = {
    "_class_name": "FluxPipeline", "_diffusers_version": "0.30.0.dev0",
    "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "T5EncoderModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "T5TokenizerFast"], "transformer": ["diffusers", "FluxTransformer2DModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


def _flux_scheduler(dev: bool) -> dict:
    return {"_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": "0.30.0.dev0",
            "base_image_seq_len": 256, "base_shift": 0.5, "max_image_seq_len": 4096, "max_shift": 1.15,
            "num_train_timesteps": 1000, "shift": 3.0 if dev else 1.0, "use_dynamic_shifting": dev}


def _flux_transformer(name: str, dev: bool) -> dict:
    """Published: 19 double and 38 single blocks of 24 heads x 128 with rotary axes [16, 56, 56], 64 input
    channels (16 latent channels in 2x2 patches), joint attention 4096 (T5), pooled 768 (CLIP). The rotary
    axes must sum to the shrunk head width, so ``axes_dims_rope`` (and ``out_channels``) are written as a
    later diffusers save of the config writes them."""
    return {
        "_class_name": "FluxTransformer2DModel", "_diffusers_version": "0.30.0.dev0",
        "_name_or_path": f"../checkpoints/{name}/transformer", "attention_head_dim": 16, "axes_dims_rope": [4, 6, 6],
        "guidance_embeds": dev, "in_channels": 64, "joint_attention_dim": T5_WIDTH, "num_attention_heads": 2,
        "num_layers": 2, "num_single_layers": 2, "out_channels": None, "patch_size": 1,
        "pooled_projection_dim": CLIP_L_WIDTH,
    }


def _flux_files(work_dir: Path, name: str, dev: bool) -> dict[str, bytes]:
    from diffusers import AutoencoderKL, FluxTransformer2DModel

    t5_dir = build_t5_tokenizer(work_dir)
    clip_config = {"_name_or_path": "openai/clip-vit-large-patch14",
                   **_clip_config(CLIP_L_WIDTH, "quick_gelu", False, "bfloat16", "4.43.3")}
    t5_config = _t5_config(_t5_vocab_size(t5_dir), "bfloat16", "4.43.3")
    transformer_config = _flux_transformer(name, dev)
    vae_config = {**_vae_config(16, "0.30.0.dev0", latents_mean=None, latents_std=None, mid_block_add_attention=True,
                                scaling_factor=0.3611, shift_factor=0.1159, use_post_quant_conv=False,
                                use_quant_conv=False), "_name_or_path": f"../checkpoints/{name}"}
    torch.manual_seed(0)
    files = {"model_index.json": _js(FLUX_MODEL_INDEX, sort=False),
             "scheduler/scheduler_config.json": _js(_flux_scheduler(dev)),
             "transformer/config.json": _js(transformer_config), "vae/config.json": _js(vae_config),
             "text_encoder/config.json": _js(clip_config), "text_encoder_2/config.json": _js(t5_config)}
    transformer = FluxTransformer2DModel.from_config(transformer_config)
    files.update(_sharded("transformer", "diffusion_pytorch_model", _untied_state(transformer, torch.bfloat16), 3))
    files["vae/diffusion_pytorch_model.safetensors"] = _weights(AutoencoderKL.from_config(vae_config), torch.bfloat16)
    files["text_encoder/model.safetensors"] = _weights(_clip(clip_config), torch.bfloat16)
    files.update(_sharded("text_encoder_2", "model", _untied_state(_t5(t5_config), torch.bfloat16), 2))
    files.update(_clip_tokenizer_files("tokenizer", _clip_bpe(work_dir), "<|endoftext|>"))
    files.update(_tokenizer_files("tokenizer_2", t5_dir, _T5_TOKENIZER_FILES))
    return files


def flux_dev_files(work_dir: Path) -> dict[str, bytes]:
    """FLUX.1-dev's diffusers files, bfloat16: guidance-embedding transformer, dynamic shifting."""
    return _flux_files(work_dir, "flux-dev", dev=True)


def flux_schnell_files(work_dir: Path) -> dict[str, bytes]:
    """FLUX.1-schnell's diffusers files, bfloat16: no guidance embedding, a fixed shift of 1."""
    return _flux_files(work_dir, "flux-schnell", dev=False)
