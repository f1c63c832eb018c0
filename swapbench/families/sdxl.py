"""Stable Diffusion XL: ``UNet2DConditionModel(noisy, t, text, added_cond_kwargs={pooled, time ids})``, DDPM.

Two CLIP text encoders: the sequence conditioning is both encoders' penultimate hidden states side by side
(768 + 1280 = 2048 wide on the base model), the pooled one is the second encoder's projected EOS embedding.
``StableDiffusionXLPipeline.encode_prompt`` computes both and is called as is, so ``clip_skip`` and what
diffusers changes there carry over. The UNet also reads "micro-conditioning" time ids (original size,
crop corner, target size); the pipeline samples with original = target = the image size and crop (0, 0),
so training at that image size uses the same ids. The pooled embedding enters through the added time
embedding, not attention: ``attn2.to_k`` / ``attn2.to_v`` remain the only projections of the text sequence.
"""

from __future__ import annotations

from swapbench.families import Conditioning
from swapbench.families.sd import StableDiffusion


class StableDiffusionXL(StableDiffusion):
    """SD's objective, trainable sets, closed-form targets and samplers; its own conditioning and UNet call."""

    name = "sdxl"
    title = "Stable Diffusion XL"
    pipelines = ("StableDiffusionXLPipeline",)
    text_parts = (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2"))
    cond_keys = ("text", "pooled")
    text_attention = ("attn2.to_k / attn2.to_v: the cross-attention projections of the text embeddings (the pooled "
                      "embedding enters through the added time embedding)")
    img2img = "StableDiffusionXLImg2ImgPipeline"
    lora_pipeline = "StableDiffusionXLPipeline"
    tags = ("stable-diffusion-xl", "stable-diffusion-xl-diffusers", "text-to-image")

    def encode(self, pipe, captions: list[str], device, max_sequence_length: int | None = None) -> Conditioning:
        import torch

        with torch.no_grad():
            text, _, pooled, _ = pipe.encode_prompt(prompt=captions, device=device, num_images_per_prompt=1,
                                                    do_classifier_free_guidance=False)
        return {"text": text.float().cpu(), "pooled": pooled.float().cpu()}

    def predict(self, pipe, denoiser, noisy, timesteps, cond, train):
        text, pooled = cond["text"], cond["pooled"]
        size = (noisy.shape[-2] * pipe.vae_scale_factor, noisy.shape[-1] * pipe.vae_scale_factor)
        # The pipeline's own rule: the second encoder's projection width, the pooled width without that encoder.
        projection_dim = (pipe.text_encoder_2.config.projection_dim if pipe.text_encoder_2 is not None
                          else int(pooled.shape[-1]))
        time_ids = pipe._get_add_time_ids(size, (0, 0), size, dtype=text.dtype,
                                          text_encoder_projection_dim=projection_dim)
        time_ids = time_ids.to(noisy.device).repeat(len(noisy), 1)
        return denoiser(noisy, timesteps, text, added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample

    def img2img_pipeline(self, pipe):
        image_pipe = super().img2img_pipeline(pipe)
        # ``add_watermarker`` is not kept in the config: the image-to-image pipeline follows the one it is built
        # from instead of re-deciding by whether invisible-watermark is installed.
        image_pipe.watermark = pipe.watermark
        return image_pipe


FAMILY = StableDiffusionXL()
