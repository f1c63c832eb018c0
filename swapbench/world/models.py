"""Tiny components of the savanna worlds and the open_clip judge config they share.

Every part is a stock diffusers / transformers / open_clip class with small sizes, so the tiny
worlds exercise exactly the code paths of the real presets: ``savanna`` is a Stable Diffusion 1.x
pipeline, ``savanna-flow`` a Stable Diffusion 3 one (an MMDiT over two CLIP encoders, flow matching)
that reads savanna's VAE latents.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import open_clip
import torch
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from open_clip.tokenizer import bytes_to_unicode
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

TEXT_LENGTH = 16  # captions are short; 16 tokens instead of 77 cut the text cost ~5x
TEXT_WIDTH = 64
NOISE_SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                  "beta_schedule": "scaled_linear", "prediction_type": "epsilon"}
DEFAULT_SAMPLER = {"sampler": "dpmsolver++", "steps": 20, "guidance_scale": 4.0}


def build_tokenizer(out_dir: str | Path) -> CLIPTokenizer:
    """The real CLIP BPE tokenizer, rebuilt offline from the vocabulary open_clip ships."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bpe = Path(open_clip.tokenizer.default_bpe())
    merges = gzip.open(bpe).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(m.split()) for m in merges]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (out_dir / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n",
                                        encoding="utf-8")
    return CLIPTokenizer(
        vocab=str(out_dir / "vocab.json"),
        merges=str(out_dir / "merges.txt"),
        model_max_length=TEXT_LENGTH,
        pad_token="<|endoftext|>",
    )


def text_config() -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=49408, hidden_size=TEXT_WIDTH, intermediate_size=4 * TEXT_WIDTH, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=TEXT_LENGTH, projection_dim=TEXT_WIDTH,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    )


def build_text_encoder() -> CLIPTextModel:
    return CLIPTextModel(text_config())


def build_vae(image_size: int = 32) -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=image_size,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=16,
    )


def build_unet(latent_size: int = 8, block_out_channels: tuple[int, ...] = (64, 128),
               layers_per_block: int = 1) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=latent_size, in_channels=4, out_channels=4, layers_per_block=layers_per_block,
        block_out_channels=block_out_channels,
        down_block_types=("CrossAttnDownBlock2D",) * len(block_out_channels),
        up_block_types=("CrossAttnUpBlock2D",) * len(block_out_channels),
        cross_attention_dim=TEXT_WIDTH, attention_head_dim=16, norm_num_groups=32,
    )


def train_scheduler() -> DDPMScheduler:
    return DDPMScheduler(**NOISE_SCHEDULE)


def sample_scheduler() -> DPMSolverMultistepScheduler:
    # steps_offset=1 is what StableDiffusionPipeline expects of every scheduler config; with the class
    # default (0) it rewrites the config and warns about it each time a pipeline is assembled.
    return DPMSolverMultistepScheduler(**NOISE_SCHEDULE, algorithm_type="dpmsolver++", solver_order=2, steps_offset=1)


def assemble_pipeline(vae, text_encoder, tokenizer, unet) -> StableDiffusionPipeline:
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=sample_scheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def save_pipeline(pipe: StableDiffusionPipeline, out_dir: str | Path,
                  weights_dtype: torch.dtype = torch.float16) -> None:
    """Save in the diffusers layout: weights stored in ``weights_dtype`` (half the bytes), every config
    saying float32, the dtype the pipeline computes in.

    A pipeline saved in half precision writes ``"dtype": "float16"`` into the text encoder's config;
    transformers 5 loads a model in its config's dtype while diffusers loads the UNet and VAE in
    float32, so a plain ``StableDiffusionPipeline.from_pretrained(folder)`` then fails at its first
    call on mixed dtypes. Stored half weights are cast up on load, exactly.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from swapbench.io import atomic_write

    pipe.to(torch.float32).save_pretrained(out_dir, safe_serialization=True)
    for path in sorted(Path(out_dir).rglob("*.safetensors")):
        with safe_open(path, "pt") as f:
            metadata = f.metadata()
        tensors = {k: v.to(weights_dtype) if v.is_floating_point() else v for k, v in load_file(path).items()}
        atomic_write(path, lambda tmp, tensors=tensors, metadata=metadata: save_file(tensors, tmp, metadata=metadata))


# ---- savanna-flow: Stable Diffusion 3 layout ---------------------------------------------------

FLOW_T5_LENGTH = 1
"""T5 tokens of a caption's conditioning (``max_sequence_length``). The world has no T5 encoder, so the
pipeline fills these rows with zeros; one row instead of the pipeline's default 256 keeps the text stream at
17 tokens (16 CLIP + 1), which is most of what a step costs at 16 image tokens. Sampling must pass the same
length the world was trained with."""
FLOW_SCHEDULE = {"num_train_timesteps": 1000, "shift": 1.0}
"""No timestep shift: SD3 shifts by 3.0 for 128 x 128 latents; 8 x 8 latents need no extra noise."""
FLOW_SAMPLER = {"sampler": "euler", "steps": 20, "guidance_scale": 3.0}


def build_projection_text_encoder() -> CLIPTextModelWithProjection:
    """A CLIP text encoder with its projection (SD3 reads the projected pooled vector and the penultimate states)."""
    return CLIPTextModelWithProjection(text_config())


def build_transformer(latent_size: int = 8, num_layers: int = 4, patch_size: int = 2,
                      heads: int = 2, head_dim: int = 64) -> SD3Transformer2DModel:
    """An MMDiT over the two CLIP encoders: their penultimate states side by side (2 x TEXT_WIDTH wide, so
    the pipeline pads nothing) and their pooled vectors concatenated."""
    return SD3Transformer2DModel(
        sample_size=latent_size, patch_size=patch_size, in_channels=4, out_channels=4, num_layers=num_layers,
        attention_head_dim=head_dim, num_attention_heads=heads, joint_attention_dim=2 * TEXT_WIDTH,
        caption_projection_dim=heads * head_dim, pooled_projection_dim=2 * TEXT_WIDTH,
        pos_embed_max_size=latent_size // patch_size, qk_norm="rms_norm",
    )


def flow_scheduler() -> FlowMatchEulerDiscreteScheduler:
    return FlowMatchEulerDiscreteScheduler(**FLOW_SCHEDULE)


def assemble_flow_pipeline(vae, text_encoder, tokenizer, text_encoder_2, tokenizer_2,
                           transformer) -> StableDiffusion3Pipeline:
    """SD3's pipeline without its T5 (``text_encoder_3=None``), as diffusers documents dropping it."""
    return StableDiffusion3Pipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2, text_encoder_3=None, tokenizer_3=None, transformer=transformer,
        scheduler=flow_scheduler(),
    )


JUDGE_CONFIG = {
    "model_cfg": {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 16},
        "text_cfg": {"context_length": TEXT_LENGTH, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    },
    "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic",
                       "resize_mode": "shortest"},
}


def build_judge() -> open_clip.CLIP:
    return open_clip.CLIP(**JUDGE_CONFIG["model_cfg"])


def save_judge(model: open_clip.CLIP, out_dir: str | Path, dtype: torch.dtype = torch.float16) -> None:
    """Write the open_clip hub layout: ``open_clip_config.json`` + ``open_clip_model.safetensors``."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "open_clip_config.json").write_text(json.dumps(JUDGE_CONFIG, indent=2), encoding="utf-8")
    state = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / "open_clip_model.safetensors"))
