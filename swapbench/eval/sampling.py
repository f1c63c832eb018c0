"""Deterministic, batched sampling: an image is a pure function of (weights, prompt, seed, sampler).

Under several processes (``accelerate launch``) work is dealt out in whole sampling batches, batch
``k`` to process ``k mod N``, so every image is computed in the same batch as in one process.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from diffusers import DiffusionPipeline

from swapbench.families import for_pipeline


def image_size(pipe: DiffusionPipeline, resolution: int | None = None) -> int:
    """The side of the sampled images: ``eval.resolution``, else the pipeline's own size."""
    return resolution or for_pipeline(pipe).image_size(pipe)


def initial_latents(pipe: DiffusionPipeline, seeds: list[int], height: int, width: int) -> torch.Tensor:
    """One CPU generator per seed, so an image does not depend on its batch or position."""
    return for_pipeline(pipe).initial_latents(pipe, seeds, height, width)


def denoiser_dtype(pipe: DiffusionPipeline) -> torch.dtype:
    return for_pipeline(pipe).denoiser_of(pipe).dtype


@torch.no_grad()
def sample(pipe: DiffusionPipeline, prompts: list[str], seeds: list[int], steps: int, guidance_scale: float,
           batch_size: int = 64, resolution: int | None = None,
           progress: Callable[[int], None] | None = None, max_sequence_length: int | None = None) -> torch.Tensor:
    """Images for ``prompts[i]`` with ``seeds[i]``: N x 3 x H x W floats in [0, 1] on the CPU.
    ``max_sequence_length``: ``model.max_sequence_length`` (T5 families), as training encodes captions."""
    size = image_size(pipe, resolution)
    prompt_kwargs = for_pipeline(pipe).prompt_kwargs(pipe, max_sequence_length)
    pipe.set_progress_bar_config(disable=True)
    out = []
    for start in range(0, len(prompts), batch_size):
        chunk_prompts = prompts[start : start + batch_size]
        latents = initial_latents(pipe, seeds[start : start + batch_size], size, size)
        result = pipe(
            prompt=chunk_prompts, num_inference_steps=steps, guidance_scale=guidance_scale, height=size, width=size,
            latents=latents.to(pipe.device, denoiser_dtype(pipe)), output_type="pt", **prompt_kwargs,
        )
        out.append(result.images.float().cpu().clamp(0, 1))
        if progress:
            progress(len(chunk_prompts))
    return torch.cat(out) if out else torch.empty(0, 3, size, size)


def my_batches(n: int, size: int) -> list[tuple[int, list[int]]]:
    """This process's share of ``range(n)`` in batches of ``size``: (batch number, indices)."""
    state = PartialState()
    batches = [list(range(k * size, min(n, (k + 1) * size))) for k in range(-(-n // size))]
    return [(k, batch) for k, batch in enumerate(batches) if k % state.num_processes == state.process_index]


def deal(n: int, size: int, compute: Callable[[list[int]], np.ndarray]) -> np.ndarray:
    """``compute`` over ``range(n)`` (n > 0) in batches of ``size``, dealt over the processes; every
    process ends with all results, in order."""
    mine = [(k, compute(batch)) for k, batch in my_batches(n, size)]
    if PartialState().num_processes > 1:
        mine = gather_object(mine)
    return np.concatenate([array for _, array in sorted(mine, key=lambda x: x[0])])
