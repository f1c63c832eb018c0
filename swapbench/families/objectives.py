"""Training objectives: what a training step draws (timesteps), feeds (the noisy latents) and regresses on.

- :class:`DDPM` (SD1.x/2.x, SDXL): integer timesteps drawn uniformly, ``add_noise`` of the scheduler's
  schedule, target epsilon or v (``prediction_type``), plain MSE.
- :class:`FlowMatching` (SD3.5, FLUX.1): rectified flow as diffusers' SD3/FLUX trainers do it. Timesteps
  are drawn by ``train.weighting_scheme`` (``compute_density_for_timestep_sampling``: logit-normal,
  mode or uniform) from the scheduler's own (shifted) timesteps, ``x_t = (1 - sigma) x0 + sigma noise``,
  target ``noise - x0``, the loss weighted per sample by ``compute_loss_weighting_for_sd3`` (``sigma_sqrt``
  or ``cosmap``; 1 otherwise), no output preconditioning.

Every draw comes from the recipe's seeded generator, so a resumed run continues bit-identical.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from swapbench.config import TrainConfig


class Objective(ABC):
    @abstractmethod
    def draw(self, generator: torch.Generator, size: int) -> torch.Tensor:
        """The timesteps of ``size`` samples (CPU)."""

    @abstractmethod
    def noisy_and_target(self, latents: torch.Tensor, noise: torch.Tensor,
                         timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the denoiser's input, what its output should be)."""

    @abstractmethod
    def loss(self, pred: torch.Tensor, target: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor: ...


class DDPM(Objective):
    def __init__(self, scheduler_config: Any):
        from diffusers import DDPMScheduler

        self.scheduler = DDPMScheduler.from_config(scheduler_config)

    def draw(self, generator: torch.Generator, size: int) -> torch.Tensor:
        return torch.randint(0, self.scheduler.config.num_train_timesteps, (size,), generator=generator)

    def noisy_and_target(self, latents, noise, timesteps):
        noisy = self.scheduler.add_noise(latents, noise, timesteps)
        if self.scheduler.config.prediction_type == "v_prediction":
            return noisy, self.scheduler.get_velocity(latents, noise, timesteps)
        return noisy, noise

    def loss(self, pred, target, timesteps):
        return F.mse_loss(pred.float(), target.float())


class FlowMatching(Objective):
    def __init__(self, scheduler_config: Any, train: TrainConfig):
        from diffusers import FlowMatchEulerDiscreteScheduler

        self.scheduler = FlowMatchEulerDiscreteScheduler.from_config(scheduler_config)
        self.train = train

    @property
    def num_train_timesteps(self) -> int:
        return self.scheduler.config.num_train_timesteps

    def draw(self, generator: torch.Generator, size: int) -> torch.Tensor:
        from diffusers.training_utils import compute_density_for_timestep_sampling

        t = self.train
        u = compute_density_for_timestep_sampling(t.weighting_scheme, size, logit_mean=t.logit_mean,
                                                  logit_std=t.logit_std, mode_scale=t.mode_scale, generator=generator)
        indices = (u * self.num_train_timesteps).long().clamp(max=self.num_train_timesteps - 1)
        return self.scheduler.timesteps[indices].float()

    def sigmas(self, timesteps: torch.Tensor, ndim: int) -> torch.Tensor:
        sigma = timesteps.float() / self.num_train_timesteps
        return sigma.view(-1, *([1] * (ndim - 1)))

    def noisy_and_target(self, latents, noise, timesteps):
        sigma = self.sigmas(timesteps, latents.ndim).to(latents.device, latents.dtype)
        return (1.0 - sigma) * latents + sigma * noise, noise - latents

    def loss(self, pred, target, timesteps):
        from diffusers.training_utils import compute_loss_weighting_for_sd3

        weight = compute_loss_weighting_for_sd3(self.train.weighting_scheme,
                                                self.sigmas(timesteps, pred.ndim).to(pred.device))
        per_sample = (weight.float() * (pred.float() - target.float()) ** 2).reshape(len(pred), -1).mean(1)
        return per_sample.mean()
