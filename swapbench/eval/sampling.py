"""Deterministic, batched sampling: an image is a pure function of (weights, prompt, seed, sampler)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import DiffusionPipeline


def initial_latents(pipe: DiffusionPipeline, seeds: list[int], height: int, width: int) -> torch.Tensor:
    """One CPU generator per seed, so an image does not depend on its batch or position."""
    factor = pipe.vae_scale_factor
    shape = (pipe.unet.config.in_channels, height // factor, width // factor)
    return torch.stack([torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(s))) for s in seeds])


@torch.no_grad()
def sample(pipe: DiffusionPipeline, prompts: list[str], seeds: list[int], steps: int, guidance_scale: float,
           batch_size: int = 64, resolution: int | None = None,
           progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """Images for ``prompts[i]`` with ``seeds[i]``: N x 3 x H x W floats in [0, 1] on the CPU."""
    size = resolution or pipe.unet.config.sample_size * pipe.vae_scale_factor
    pipe.set_progress_bar_config(disable=True)
    out = []
    for start in range(0, len(prompts), batch_size):
        chunk_prompts = prompts[start : start + batch_size]
        latents = initial_latents(pipe, seeds[start : start + batch_size], size, size)
        result = pipe(
            prompt=chunk_prompts, num_inference_steps=steps, guidance_scale=guidance_scale, height=size, width=size,
            latents=latents.to(pipe.device, pipe.unet.dtype), output_type="pt",
        )
        out.append(result.images.float().cpu().clamp(0, 1))
        if progress:
            progress(len(chunk_prompts))
    return torch.cat(out) if out else torch.empty(0, 3, size, size)
