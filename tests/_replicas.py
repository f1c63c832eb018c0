"""Replicas of the real artifacts the sd15-coco preset names, written into a Hugging Face hub cache the
way huggingface_hub writes one (``models--org--name/{blobs,refs,snapshots}``), with tiny or random
weights. A test that only used layouts we invented would prove nothing about the real path.

- ``stable-diffusion-v1-5/stable-diffusion-v1-5``: the repo's file names, its ``model_index.json``
  (safety checker and feature extractor, no ``requires_safety_checker``), its PNDM scheduler config,
  its tokenizer files, and for every model part ``.safetensors`` plus ``.fp16.safetensors``; every
  config carries the key set of the published file (values shrunk where they size a tensor).
- ``laion/CLIP-ViT-B-32-laion2B-s34B-b79K``: open_clip's weight file at full size (random weights).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
LAION_B32 = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"

MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": "0.6.0",
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
    "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
SCHEDULER = {
    "_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000, "set_alpha_to_one": False,
    "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None, "clip_sample": False,
}
FEATURE_EXTRACTOR = {
    "crop_size": 224, "do_center_crop": True, "do_convert_rgb": True, "do_normalize": True, "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": 224,
}
# The published key sets; sizes shrunk (SD1.5: block_out_channels [320, 640, 1280, 1280], cross-attention
# 768, VAE [128, 256, 512, 512], a 12-layer 768-wide text encoder).
UNET = {
    "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.6.0", "act_fn": "silu", "attention_head_dim": 8,
    "block_out_channels": [32, 64], "center_input_sample": False, "cross_attention_dim": 32,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "downsample_padding": 1, "flip_sin_to_cos": True,
    "freq_shift": 0, "in_channels": 4, "layers_per_block": 1, "mid_block_scale_factor": 1, "norm_eps": 1e-05,
    "norm_num_groups": 32, "out_channels": 4, "sample_size": 16, "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
}
VAE = {
    "_class_name": "AutoencoderKL", "_diffusers_version": "0.6.0", "act_fn": "silu", "block_out_channels": [32, 32],
    "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"], "in_channels": 3, "latent_channels": 4,
    "layers_per_block": 1, "norm_num_groups": 32, "out_channels": 3, "sample_size": 32,
    "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
}
TEXT_ENCODER = {
    "_name_or_path": "openai/clip-vit-large-patch14", "architectures": ["CLIPTextModel"], "attention_dropout": 0.0,
    "bos_token_id": 0, "dropout": 0.0, "eos_token_id": 2, "hidden_act": "quick_gelu", "hidden_size": 32,
    "initializer_factor": 1.0, "initializer_range": 0.02, "intermediate_size": 64, "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77, "model_type": "clip_text_model", "num_attention_heads": 4,
    "num_hidden_layers": 2, "pad_token_id": 1, "projection_dim": 32, "torch_dtype": "float32",
    "transformers_version": "4.22.0.dev0", "vocab_size": 49408,
}
_TOKEN = {"lstrip": False, "normalized": True, "rstrip": False, "single_word": False}
SPECIAL_TOKENS = {"bos_token": {"content": "<|startoftext|>", **_TOKEN},
                  "eos_token": {"content": "<|endoftext|>", **_TOKEN},
                  "pad_token": "<|endoftext|>", "unk_token": {"content": "<|endoftext|>", **_TOKEN}}
TOKENIZER_CONFIG = {
    "add_prefix_space": False, "bos_token": {"__type": "AddedToken", "content": "<|startoftext|>", **_TOKEN},
    "do_lower_case": True, "eos_token": {"__type": "AddedToken", "content": "<|endoftext|>", **_TOKEN},
    "errors": "replace", "model_max_length": 77, "name_or_path": "openai/clip-vit-large-patch14",
    "pad_token": "<|endoftext|>", "special_tokens_map_file": "./special_tokens_map.json",
    "tokenizer_class": "CLIPTokenizer", "unk_token": {"__type": "AddedToken", "content": "<|endoftext|>", **_TOKEN},
}


def put_repo(cache: Path, repo_id: str, files: dict[str, bytes], repo_type: str = "model",
             lfs: tuple[str, ...] = (".safetensors", ".bin", ".parquet", ".pth"), ref: str = "main") -> Path:
    """Write ``files`` as huggingface_hub stores a download: content in ``blobs/<etag>`` (sha256 for LFS
    files, the git blob sha1 for the others), ``snapshots/<commit>/<path>`` as relative symlinks, and
    ``refs/<ref>`` holding the commit (another ``ref`` is another revision of the repo, beside the first).
    Returns the snapshot folder."""
    root = cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(json.dumps(sorted(files)).encode() + repo_id.encode() + ref.encode()).hexdigest()
    snapshot = root / "snapshots" / commit
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if name.endswith(lfs):
            etag = hashlib.sha256(data).hexdigest()
        else:
            etag = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        (root / "blobs" / etag).write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(root / "blobs" / etag, link.parent))
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / ref).write_text(commit)
    return snapshot


def _weights(module: torch.nn.Module, dtype: torch.dtype) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().to(dtype).contiguous() for k, v in module.state_dict().items()})


def sd15_files(tokenizer_dir: Path, flag_everything: bool = True) -> dict[str, bytes]:
    """The SD1.5 repo's diffusers files with tiny random weights. ``flag_everything``: the safety
    checker's concept thresholds are set below any similarity, so it flags every image (as SD's checker
    flags a real NSFW one), which shows whether evaluation blackens or counts."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(UNET)
    vae = AutoencoderKL.from_config(VAE)
    text = CLIPTextModel(CLIPTextConfig(**{k: v for k, v in TEXT_ENCODER.items() if not k.startswith("_")
                                           and k not in ("architectures", "torch_dtype", "transformers_version")}))
    checker_config = CLIPConfig(
        projection_dim=32,
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_hidden_layers": 1},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_hidden_layers": 1,
                       "image_size": 224, "patch_size": 32},
    )
    checker = StableDiffusionSafetyChecker(checker_config)
    if flag_everything:
        with torch.no_grad():
            checker.concept_embeds_weights.fill_(-1.0)
    files: dict[str, bytes] = {}

    def js(obj: dict) -> bytes:
        return (json.dumps(obj, indent=2) + "\n").encode()

    files["model_index.json"] = js(MODEL_INDEX)
    files["scheduler/scheduler_config.json"] = js(SCHEDULER)
    files["feature_extractor/preprocessor_config.json"] = js(FEATURE_EXTRACTOR)
    (files["unet/config.json"], files["vae/config.json"],
     files["text_encoder/config.json"]) = js(UNET), js(VAE), js(TEXT_ENCODER)
    checker_json = {"_name_or_path": "CompVis/stable-diffusion-safety-checker",
                    "architectures": ["StableDiffusionSafetyChecker"], **checker_config.to_dict()}
    files["safety_checker/config.json"] = js(checker_json)
    for folder, stem, module in (("unet", "diffusion_pytorch_model", unet), ("vae", "diffusion_pytorch_model", vae),
                                 ("text_encoder", "model", text), ("safety_checker", "model", checker)):
        files[f"{folder}/{stem}.safetensors"] = _weights(module, torch.float32)
        files[f"{folder}/{stem}.fp16.safetensors"] = _weights(module, torch.float16)
    files["tokenizer/vocab.json"] = (tokenizer_dir / "vocab.json").read_bytes()
    files["tokenizer/merges.txt"] = (tokenizer_dir / "merges.txt").read_bytes()
    files["tokenizer/special_tokens_map.json"] = js(SPECIAL_TOKENS)
    files["tokenizer/tokenizer_config.json"] = js(TOKENIZER_CONFIG)
    files["v1-inference.yaml"] = b"model:\n  base_learning_rate: 1.0e-04\n"  # the repo's original-format extras
    return files


def laion_b32_files() -> dict[str, bytes]:
    """open_clip's files of the LAION ViT-B/32 judge, full size, random weights (the architecture is
    fixed by the name, so a smaller copy could not load)."""
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32")
    config = {"model_cfg": open_clip.get_model_config("ViT-B-32"),
              "preprocess_cfg": {"mean": list(open_clip.OPENAI_DATASET_MEAN),
                                 "std": list(open_clip.OPENAI_DATASET_STD)}}
    return {"open_clip_config.json": json.dumps(config, indent=2).encode(),
            "open_clip_model.safetensors": _weights(model, torch.float32)}
