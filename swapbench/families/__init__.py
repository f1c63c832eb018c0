"""Model families: one small module per family behind :class:`Family`; nothing else branches on which one.

A family owns everything that differs between Stable Diffusion 1.x/2.x, SDXL, SD3.5 and FLUX.1: how
captions become the denoiser's conditioning (sequence and pooled embeddings, masks, ids, time ids),
latents from the VAE (shift and scale), the training objective (DDPM epsilon/v, or flow matching:
:mod:`swapbench.families.objectives`), the denoiser call (packing, timestep scale, guidance embedding),
the trainable and closed-form-editable module sets, the samplers it supports, the image-to-image
pipeline class and LoRA I/O. Train, the feature cache, every method, sampling, the probes, export and
the model card ask the family; the family is read from ``model_index.json``'s ``_class_name``.

This module stays free of heavy imports so config checks and ``swapbench fetch`` can read the
declarations cheaply; each family imports diffusers where it computes.
"""

from __future__ import annotations

import importlib
import inspect
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from swapbench.errors import UserError

if TYPE_CHECKING:
    import torch
    from diffusers import DiffusionPipeline

    from swapbench.config import TrainConfig
    from swapbench.families.objectives import Objective

FAMILIES = ("sd", "sdxl", "sd3", "flux")
"""The family modules (swapbench/families/<name>.py), in the order tables list them."""

Conditioning = dict[str, "torch.Tensor"]
"""What the denoiser reads of a caption, batch-first: ``text`` (sequence embeddings) and, where the family
has them, ``pooled``. Every family's keys are fixed (:attr:`Family.cond_keys`): the feature cache keeps one
store per key."""


class Projection(NamedTuple):
    """A linear layer whose input is a conditioning tensor, ``cond[reads]``, as the text encoders give it
    (what a closed-form edit such as UCE solves for)."""

    name: str
    module: torch.nn.Linear
    reads: str


class Family(ABC):
    """One model family: its declarations (class attributes) and the computations that differ by family."""

    name: ClassVar[str]
    title: ClassVar[str]
    """How tables and the model card name it."""
    pipelines: ClassVar[tuple[str, ...]]
    """The ``model_index.json`` ``_class_name`` values it reads."""
    denoiser: ClassVar[str]
    """The pipeline component that is trained and edited: ``unet`` or ``transformer``."""
    text_parts: ClassVar[tuple[tuple[str, str], ...]]
    """(tokenizer, text encoder) component names, in the pipeline's order."""
    cond_keys: ClassVar[tuple[str, ...]] = ("text",)
    t5_tokenizer: ClassVar[str | None] = None
    """The tokenizer whose length is ``model.max_sequence_length`` (a T5 one); None where there is none."""
    trainable: ClassVar[dict[str, str]]
    """``train.trainable`` values this family accepts -> what each trains (the model card and errors)."""
    text_attention: ClassVar[str]
    """Which modules read the text: what ``<denoiser>.{cross,text}_attention`` trains and UCE edits, and why."""
    samplers: ClassVar[tuple[str, ...]]
    """The ``eval.sampler`` names it samples with."""
    img2img: ClassVar[str]
    """The diffusers image-to-image pipeline class built from the text-to-image pipeline's components."""
    lora_pipeline: ClassVar[str]
    """The diffusers pipeline class whose ``save_lora_weights`` writes this family's LoRA files."""
    tags: ClassVar[tuple[str, ...]]
    """Hugging Face model-card tags."""

    # ---- declarations derived from the above --------------------------------------------------
    optional: ClassVar[tuple[str, ...]] = ()
    """Components the pipeline runs without when ``model_index.json`` sets them to null (SD3's T5)."""

    @property
    def parts(self) -> tuple[str, ...]:
        """Pipeline components the recipe and the evaluation cannot do without (unless :attr:`optional`)."""
        return (self.denoiser, "vae", "scheduler", *(p for pair in self.text_parts for p in pair))

    def required_parts(self, index: dict) -> list[str]:
        """The :attr:`parts` a pipeline with this ``model_index.json`` must hold."""
        return [p for p in self.parts if not (p in self.optional and not (index.get(p) or [None])[0])]

    def check_trainable(self, spec: str) -> None:
        if spec not in self.trainable:
            raise UserError(f"train.trainable={spec} does not apply to the {self.title} family (its denoiser is "
                            f"the {self.denoiser}); use {' or '.join(self.trainable)}")

    def check_sampler(self, name: str) -> None:
        if name not in self.samplers:
            raise UserError(f"eval.sampler={name} does not apply to the {self.title} family; use "
                            f"{' or '.join(self.samplers)} (--set eval.sampler={self.samplers[0]})")

    # ---- conditioning and latents --------------------------------------------------------------
    @abstractmethod
    def encode(self, pipe: DiffusionPipeline, captions: list[str], device: Any,
               max_sequence_length: int | None = None) -> Conditioning:
        """The conditioning of ``captions`` as the family's pipeline computes it for sampling, float32 on the CPU;
        ``max_sequence_length``: ``model.max_sequence_length`` (:meth:`sequence_length`)."""

    def sequence_length(self, pipe: DiffusionPipeline, requested: int | None = None) -> int | None:
        """The T5 tokens a caption is encoded with: ``requested`` (``model.max_sequence_length``) or the
        pipeline's default; None for a family without a T5 encoder (this default)."""
        if requested is not None:
            raise UserError(f"model.max_sequence_length={requested} does not apply to the {self.title} family "
                            "(it has no T5 text encoder); leave it unset")
        return None

    def token_lengths(self, pipe: DiffusionPipeline, max_sequence_length: int | None = None) -> dict[str, int]:
        """The token length of every tokenizer (part of the feature cache's key): the T5 one encodes
        :meth:`sequence_length` tokens, not its ``model_max_length`` (an SD3 pipeline without its T5 fills that
        many rows with zeros)."""
        lengths = {tok: getattr(pipe, tok).model_max_length for tok, _ in self.text_parts
                   if getattr(pipe, tok) is not None}
        length = self.sequence_length(pipe, max_sequence_length)
        if length is not None:
            lengths[self.t5_tokenizer] = length
        return lengths

    def prompt_kwargs(self, pipe: DiffusionPipeline, max_sequence_length: int | None = None) -> dict[str, Any]:
        """Pipeline-call arguments that make the pipeline encode a prompt as :meth:`encode` does."""
        length = self.sequence_length(pipe, max_sequence_length)
        return {} if length is None else {"max_sequence_length": length}

    def token_spans(self, pipe: DiffusionPipeline,
                    max_sequence_length: int | None = None) -> list[tuple[str, int, int]]:
        """How the rows of ``text`` follow the tokens: (tokenizer component, first row, rows) for each tokenizer
        whose tokens are rows of it. By default the first tokenizer's, from row 0."""
        tokenizer = self.text_parts[0][0]
        return [(tokenizer, 0, getattr(pipe, tokenizer).model_max_length)]

    def to_latents(self, vae: torch.nn.Module, z: torch.Tensor) -> torch.Tensor:
        """A VAE posterior sample in the denoiser's latent space: ``(z - shift) * scale``."""
        shift = vae.config.get("shift_factor") or 0.0
        return (z - shift) * vae.config.scaling_factor if shift else z * vae.config.scaling_factor

    def from_latents(self, vae: torch.nn.Module, latents: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`to_latents`: what ``vae.decode`` reads."""
        shift = vae.config.get("shift_factor") or 0.0
        return latents / vae.config.scaling_factor + shift if shift else latents / vae.config.scaling_factor

    # ---- training --------------------------------------------------------------------------------
    @abstractmethod
    def objective(self, scheduler_config: Any, train: TrainConfig) -> Objective:
        """Timestep sampling, the noisy input and the target, and the loss."""

    @abstractmethod
    def predict(self, pipe: DiffusionPipeline, denoiser: torch.nn.Module, noisy: torch.Tensor,
                timesteps: torch.Tensor, cond: Conditioning, train: TrainConfig) -> torch.Tensor:
        """The denoiser's output for ``noisy`` latents (B x C x h x w) at the objective's ``timesteps``."""

    def trainable_parameters(self, denoiser: torch.nn.Module, spec: str) -> list[torch.nn.Parameter]:
        """The whole denoiser, or only :meth:`text_attention_modules` (the family's text-reading subset)."""
        self.check_trainable(spec)
        if spec == self.denoiser:
            denoiser.requires_grad_(True)
            return list(denoiser.parameters())
        denoiser.requires_grad_(False)
        params = []
        for _, module in self.text_attention_modules(denoiser):
            module.requires_grad_(True)
            params += list(module.parameters())
        return params

    @abstractmethod
    def text_projections(self, denoiser: torch.nn.Module) -> list[Projection]:
        """The linear layers whose inputs are the text encoders' outputs (what UCE solves in closed form)."""

    def text_attention_modules(self, denoiser: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
        """What ``<denoiser>.{cross,text}_attention`` trains: by default the :meth:`text_projections`."""
        return [(p.name, p.module) for p in self.text_projections(denoiser)]

    @abstractmethod
    def cross_attention_modules(self, denoiser: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
        """The whole attention through which the image reads the text, a superset of
        :meth:`text_attention_modules` (its queries and output projections too): what ESD-x trains."""

    # ---- sampling --------------------------------------------------------------------------------
    def denoiser_of(self, pipe: DiffusionPipeline) -> torch.nn.Module:
        return getattr(pipe, self.denoiser)

    def image_size(self, pipe: DiffusionPipeline) -> int:
        """The pipeline's native image side in pixels."""
        return self.denoiser_of(pipe).config.sample_size * pipe.vae_scale_factor

    def latent_channels(self, pipe: DiffusionPipeline) -> int:
        return self.denoiser_of(pipe).config.in_channels

    def initial_latents(self, pipe: DiffusionPipeline, seeds: list[int], height: int, width: int) -> torch.Tensor:
        """Starting noise, one CPU generator per seed so an image does not depend on its batch or position,
        in the layout the pipeline's ``latents=`` argument takes."""
        import torch

        factor = pipe.vae_scale_factor
        shape = (self.latent_channels(pipe), height // factor, width // factor)
        return torch.stack([torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(s))) for s in seeds])

    def denoiser_latents(self, pipe: DiffusionPipeline, latents: torch.Tensor, height: int,
                         width: int) -> torch.Tensor:
        """Latents in the pipeline's layout (what ``latents=`` takes and a ``callback_on_step_end`` sees) in the
        layout :meth:`predict` reads (B x C x h x w): here the same."""
        return latents

    def sampler(self, name: str, config: Any) -> Any:
        """The ``eval.sampler`` scheduler on the noise schedule of the pipeline's scheduler ``config``."""
        from swapbench.samplers import build_scheduler

        self.check_sampler(name)
        return build_scheduler(name, config)

    def continuation(self, pipe: DiffusionPipeline, steps: int, k: int, latents: torch.Tensor) -> dict[str, Any]:
        """Pipeline-call arguments that run only what follows step ``k`` of ``steps``-step sampling with
        ``pipe``'s scheduler, from ``latents``: the denoising loop's latents after step ``k`` (what a
        ``callback_on_step_end`` sees). Here: the remaining ``timesteps``, and the latents divided by the
        shortened schedule's ``init_noise_sigma``, since the pipeline multiplies given latents by it."""
        import copy

        schedule = copy.deepcopy(pipe.scheduler)
        if "timesteps" not in inspect.signature(schedule.set_timesteps).parameters:
            raise UserError(f"the {type(schedule).__name__} sampler cannot start from a given timestep")
        schedule.set_timesteps(steps)
        rest = schedule.timesteps.tolist()[k * schedule.order:]
        schedule.set_timesteps(timesteps=rest)
        return {"timesteps": rest, "latents": latents / float(schedule.init_noise_sigma)}

    def img2img_pipeline(self, pipe: DiffusionPipeline) -> DiffusionPipeline:
        """The image-to-image pipeline over the same modules (no second copy of the weights)."""
        import diffusers

        cls = getattr(diffusers, self.img2img)
        accepted = set(cls._get_signature_keys(cls)[0]) | set(cls._get_signature_keys(cls)[1])
        parts = {k: v for k, v in pipe.components.items() if k in accepted}
        extras = {k: pipe.config[k] for k in ("requires_safety_checker", "force_zeros_for_empty_prompt")
                  if k in accepted and k in pipe.config}
        return cls(**parts, **extras)

    def lora_layers(self, denoiser: torch.nn.Module) -> dict:
        """The denoiser's peft LoRA weights under the key names its pipeline's loader reads (a UNet's in the
        diffusers naming, as diffusers' UNet trainers save them)."""
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        return convert_state_dict_to_diffusers(get_peft_model_state_dict(denoiser))

    def img2img_kwargs(self, size: int) -> dict[str, Any]:
        """Call arguments the image-to-image pipeline needs beyond the start latents: a UNet pipeline takes the
        size from them (this default)."""
        return {}

    def save_lora(self, folder: Any, layers: dict, metadata: dict, weight_name: str) -> None:
        """The denoiser's LoRA layers in the diffusers format of the family's pipeline (peft config in the metadata)."""
        import diffusers

        getattr(diffusers, self.lora_pipeline).save_lora_weights(
            folder, **{f"{self.denoiser}_lora_layers": layers, f"{self.denoiser}_lora_adapter_metadata": metadata},
            weight_name=weight_name, safe_serialization=True)


def get_family(name: str) -> Family:
    return importlib.import_module(f"{__name__}.{name}").FAMILY


def all_families() -> list[Family]:
    return [get_family(name) for name in FAMILIES]


def for_class(class_name: str | None, where: str = "the model") -> Family:
    """The family whose pipelines include ``class_name`` (``model_index.json``'s ``_class_name``)."""
    for family in all_families():
        if class_name in family.pipelines:
            return family
    supported = ", ".join(f"{c} ({f.title})" for f in all_families() for c in f.pipelines)
    raise UserError(f"{where} is a {class_name or 'pipeline without a _class_name'}, which swapbench does not "
                    f"support; supported pipelines: {supported}")


def for_pipeline(pipe: DiffusionPipeline) -> Family:
    return for_class(type(pipe).__name__)
