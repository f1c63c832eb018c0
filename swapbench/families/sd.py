"""Stable Diffusion 1.x/2.x: ``UNet2DConditionModel(noisy, t, text)``, one CLIP text encoder, DDPM.

The conditioning is the text encoder's last hidden state over ``model_max_length`` padded tokens, as
``StableDiffusionPipeline.encode_prompt`` computes it; the cross-attention key/value projections
(``attn2.to_k`` / ``attn2.to_v``) are the only weights that read it.
"""

from __future__ import annotations

from typing import Any

from swapbench.families import Conditioning, Family, Projection


class StableDiffusion(Family):
    name = "sd"
    title = "Stable Diffusion 1.x/2.x"
    pipelines = ("StableDiffusionPipeline",)
    denoiser = "unet"
    text_parts = (("tokenizer", "text_encoder"),)
    trainable = {"unet": "every UNet weight",
                 "unet.cross_attention": "the cross-attention key/value projections (attn2.to_k, attn2.to_v)"}
    text_attention = "attn2.to_k / attn2.to_v: the cross-attention projections of the text embeddings"
    samplers = ("dpmsolver++", "ddim", "euler")
    img2img = "StableDiffusionImg2ImgPipeline"
    lora_pipeline = "StableDiffusionPipeline"
    tags = ("stable-diffusion",)

    def encode(self, pipe, captions: list[str], device, max_sequence_length=None) -> Conditioning:
        import torch

        self.sequence_length(pipe, max_sequence_length)  # a CLIP-only family: refuses a T5 length
        tokenizer = pipe.tokenizer
        with torch.no_grad():
            ids = tokenizer(captions, padding="max_length", truncation=True, max_length=tokenizer.model_max_length,
                            return_tensors="pt").input_ids
            return {"text": pipe.text_encoder(ids.to(device))[0].float().cpu()}

    def objective(self, scheduler_config: Any, train):
        from swapbench.families.objectives import DDPM

        return DDPM(scheduler_config)

    def predict(self, pipe, denoiser, noisy, timesteps, cond, train):
        return denoiser(noisy, timesteps, cond["text"]).sample

    def text_projections(self, denoiser):
        return [Projection(name, module, "text") for name, module in denoiser.named_modules()
                if name.endswith(("attn2.to_k", "attn2.to_v"))]

    def cross_attention_modules(self, denoiser):
        """Every ``attn2``: queries, keys, values and output of the cross-attention."""
        return [(name, module) for name, module in denoiser.named_modules() if name.endswith("attn2")]


FAMILY = StableDiffusion()
