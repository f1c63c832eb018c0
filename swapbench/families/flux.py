"""FLUX.1-dev and -schnell: ``FluxTransformer2DModel`` (MMDiT) over CLIP and T5, flow matching.

The conditioning is what ``FluxPipeline.encode_prompt`` gives, the caption sent to both encoders:
``text``, the T5 hidden states over ``max_sequence_length`` tokens, and ``pooled``, CLIP's pooled output.
The transformer reads 2x2-packed latent patches with their positions (``img_ids``; the text's ``txt_ids``
are zeros), the timestep divided by 1000 and, in the guidance-distilled FLUX.1-dev (its config's
``guidance_embeds``), the guidance value as an embedding; FLUX.1-schnell has none. The two are told apart
by that flag alone: dev encodes 512 T5 tokens by default, schnell 256. What reads the text:
:mod:`swapbench.families.mmdit`.
"""

from __future__ import annotations

from swapbench.families import Conditioning
from swapbench.families.mmdit import MMDiT

DEV_LENGTH, SCHNELL_LENGTH = 512, 256
"""T5 lengths: the pipeline's default (FLUX.1-dev's) and the one FLUX.1-schnell was distilled with."""


class Flux(MMDiT):
    name = "flux"
    title = "FLUX.1"
    pipelines = ("FluxPipeline",)
    text_parts = (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2"))
    t5_tokenizer = "tokenizer_2"
    img2img = "FluxImg2ImgPipeline"
    lora_pipeline = "FluxPipeline"
    tags = ("flux", "flux-diffusers")

    def default_sequence_length(self, pipe) -> int:
        return DEV_LENGTH if pipe.transformer.config.guidance_embeds else SCHNELL_LENGTH

    def encode(self, pipe, captions: list[str], device, max_sequence_length=None) -> Conditioning:
        import torch

        with torch.no_grad():
            text, pooled, _ = pipe.encode_prompt(prompt=captions, prompt_2=captions, device=device,
                                                 max_sequence_length=self.sequence_length(pipe, max_sequence_length))
        return {"text": text.float().cpu(), "pooled": pooled.float().cpu()}

    def token_spans(self, pipe, max_sequence_length=None):
        """The sequence is T5's alone (CLIP gives only the pooled vector)."""
        return [("tokenizer_2", 0, self.sequence_length(pipe, max_sequence_length))]

    def predict(self, pipe, denoiser, noisy, timesteps, cond, train):
        """As ``FluxPipeline``'s denoising loop calls the transformer, on latents packed here and the output
        unpacked back to ``noisy``'s layout."""
        import torch
        from diffusers import FluxPipeline

        b, c, h, w = noisy.shape
        text, factor = cond["text"], pipe.vae_scale_factor
        guidance = (torch.full((b,), train.guidance, device=noisy.device, dtype=torch.float32)
                    if pipe.transformer.config.guidance_embeds else None)
        out = denoiser(hidden_states=FluxPipeline._pack_latents(noisy, b, c, h, w),
                       timestep=timesteps.to(noisy.device, noisy.dtype) / 1000, guidance=guidance,
                       pooled_projections=cond["pooled"], encoder_hidden_states=text,
                       txt_ids=torch.zeros(text.shape[1], 3, device=noisy.device, dtype=text.dtype),
                       img_ids=FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, noisy.device, text.dtype),
                       return_dict=False)[0]
        # _unpack_latents takes the image size in pixels.
        return FluxPipeline._unpack_latents(out, h * factor, w * factor, factor)

    def image_size(self, pipe) -> int:
        # The transformer's config has no sample size; the pipeline's default is 128 latent pixels.
        return pipe.default_sample_size * pipe.vae_scale_factor

    def latent_channels(self, pipe) -> int:
        return pipe.transformer.config.in_channels // 4  # in_channels counts the 2x2-packed channels

    def initial_latents(self, pipe, seeds: list[int], height: int, width: int):
        """The unpacked noise of every seed, packed as ``latents=`` takes it (``prepare_latents`` packs its own
        draw the same way)."""
        from diffusers import FluxPipeline

        latents = super().initial_latents(pipe, seeds, height, width)
        return FluxPipeline._pack_latents(latents, *latents.shape)

    def denoiser_latents(self, pipe, latents, height: int, width: int):
        """The pipeline's packed 2x2 patches unpacked (``height`` / ``width`` in pixels)."""
        from diffusers import FluxPipeline

        return FluxPipeline._unpack_latents(latents, height, width, pipe.vae_scale_factor)

    def sigma_grid(self, pipe, steps: int):
        """``FluxPipeline``'s own grid, 1 to 1/steps."""
        import numpy as np

        return np.linspace(1.0, 1 / steps, steps)


FAMILY = Flux()
