"""Random-weight Stable Diffusion pipelines for rehearsing the reference recipe (no weights can be downloaded).

``reference_shapes``: the tensor shapes the sd15-coco recipe moves through its data path and cache (77 x 768
text embeddings, a factor-8 VAE giving 4 x 32 x 32 latents at 256 px, cross_attention_dim 768) with tiny
compute, for memory and set-up measurements on a CPU. ``sd15``: the published SD1.5 component configs
(UNet ~860M parameters, the 4-block VAE, a 12-layer 768-wide CLIP text encoder), for GPU throughput;
``width="tiny"`` keeps their structure at a few channels so the same code runs on a CPU in seconds.
"""

from __future__ import annotations

from pathlib import Path

from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from swapbench.world import models

SD15_SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                  "beta_schedule": "scaled_linear", "prediction_type": "epsilon", "steps_offset": 1,
                  "set_alpha_to_one": False, "skip_prk_steps": True}
"""SD1.5's ``scheduler/scheduler_config.json`` (PNDM); training reads its noise schedule through DDPMScheduler."""


def _text_encoder(width: int, layers: int, heads: int, ffn: int) -> CLIPTextModel:
    return CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=width, intermediate_size=ffn,
                                        num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=77,
                                        projection_dim=width, hidden_act="quick_gelu", bos_token_id=49406,
                                        eos_token_id=49407, pad_token_id=49407))


def _vae(channels: tuple[int, ...], layers: int, groups: int) -> AutoencoderKL:
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, sample_size=256,
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         block_out_channels=channels, layers_per_block=layers, norm_num_groups=groups,
                         scaling_factor=0.18215)


def _unet(channels: tuple[int, ...], layers: int, groups: int, head_dim: int) -> UNet2DConditionModel:
    n = len(channels)
    return UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, layers_per_block=layers, block_out_channels=channels,
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        cross_attention_dim=768, attention_head_dim=head_dim, norm_num_groups=groups)


def _save(out: Path, vae, text_encoder, unet) -> Path:
    tokenizer = models.build_tokenizer(out / "tokenizer-files")
    tokenizer.model_max_length = 77
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=PNDMScheduler(**SD15_SCHEDULER), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(out / "pipeline", safe_serialization=True)
    return out / "pipeline"


def reference_shapes(out: Path) -> Path:
    """SD1.5's tensor shapes at 256 px with as little compute as they allow: a 768-wide text encoder with
    no transformer layers (token + position embeddings and the final norm: 77 x 768 out), a 4-block VAE
    of 4 channels (4 x 32 x 32 latents), a two-level UNet of 32-64 channels reading 768-wide context."""
    return _save(out, _vae((4, 4, 4, 4), 1, 4), _text_encoder(768, 0, 12, 768), _unet((32, 64), 1, 8, 8))


def sd15(out: Path, width: str = "full") -> Path:
    """The published SD1.5 configs (``full``), or the same structure at a few channels (``tiny``)."""
    if width == "full":
        return _save(out, _vae((128, 256, 512, 512), 2, 32), _text_encoder(768, 12, 12, 3072),
                     _unet((320, 640, 1280, 1280), 2, 32, 8))
    return _save(out, _vae((8, 16, 16, 16), 1, 8), _text_encoder(768, 2, 12, 768), _unet((32, 32, 64, 64), 1, 8, 8))
