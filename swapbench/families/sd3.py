"""Stable Diffusion 3/3.5: ``SD3Transformer2DModel`` (MMDiT) over two CLIP encoders and T5, flow matching.

The conditioning is what ``StableDiffusion3Pipeline.encode_prompt`` gives without classifier-free
guidance, the caption sent to all three encoders: ``text``, the two CLIP penultimate hidden states
(concatenated, zero-padded to T5's width) followed by the T5 states over ``max_sequence_length`` tokens,
and ``pooled``, the two CLIP projected pooled vectors. The transformer reads the unpacked latents and
the scheduler's timesteps (0-1000) as they are. What reads the text: :mod:`swapbench.families.mmdit`.
"""

from __future__ import annotations

from swapbench.families import Conditioning
from swapbench.families.mmdit import MMDiT

SEQUENCE_LENGTH = 256
"""``encode_prompt``'s T5 length, the one SD3 and SD3.5 were trained with."""


class StableDiffusion3(MMDiT):
    name = "sd3"
    title = "Stable Diffusion 3/3.5"
    pipelines = ("StableDiffusion3Pipeline",)
    text_parts = (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2"), ("tokenizer_3", "text_encoder_3"))
    t5_tokenizer = "tokenizer_3"
    optional = ("tokenizer_3", "text_encoder_3")
    img2img = "StableDiffusion3Img2ImgPipeline"
    lora_pipeline = "StableDiffusion3Pipeline"
    tags = ("sd3", "sd3-diffusers")

    def default_sequence_length(self, pipe) -> int:
        return SEQUENCE_LENGTH

    def encode(self, pipe, captions: list[str], device, max_sequence_length=None) -> Conditioning:
        import torch

        with torch.no_grad():
            cond = self.conditioning(pipe, captions, device, max_sequence_length)
        return {key: value.float().cpu() for key, value in cond.items()}

    def conditioning(self, pipe, captions: list[str], device, max_sequence_length=None) -> Conditioning:
        """:meth:`encode`'s conditioning on ``device``, differentiable in the text encoders (the savanna-flow
        build trains them with the transformer)."""
        text, _, pooled, _ = pipe.encode_prompt(
            prompt=captions, prompt_2=captions, prompt_3=captions, device=device, do_classifier_free_guidance=False,
            max_sequence_length=self.sequence_length(pipe, max_sequence_length))
        return {"text": text, "pooled": pooled}

    def token_spans(self, pipe, max_sequence_length=None):
        """The CLIP tokens (both encoders side by side, padded to T5's width) and then the T5 tokens, when the
        pipeline has its T5 (without it those rows are zeros)."""
        clip = pipe.tokenizer.model_max_length
        t5 = [("tokenizer_3", clip, self.sequence_length(pipe, max_sequence_length))] if pipe.text_encoder_3 else []
        return [("tokenizer", 0, clip), *t5]

    def predict(self, pipe, denoiser, noisy, timesteps, cond, train):
        return denoiser(hidden_states=noisy, timestep=timesteps, encoder_hidden_states=cond["text"],
                        pooled_projections=cond["pooled"], return_dict=False)[0]

    def sigma_grid(self, pipe, steps: int):
        """``set_timesteps(steps)``'s grid: evenly spaced timesteps from the scheduler's largest sigma to its
        smallest (both already shifted once at construction), divided by the training timesteps."""
        import numpy as np

        scheduler = pipe.scheduler
        n = scheduler.config.num_train_timesteps
        return np.linspace(scheduler.sigma_max * n, scheduler.sigma_min * n, steps) / n


FAMILY = StableDiffusion3()
