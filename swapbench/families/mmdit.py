"""What the flow-matching MMDiT families (SD3/SD3.5 and FLUX.1) share.

**Where the text enters.** An MMDiT has no cross-attention. The caption's sequence embedding (CLIP and
T5 hidden states) enters the transformer only through ``context_embedder``, a linear map into the
transformer's width that starts the text stream; the pooled CLIP vector enters only through
``time_text_embed.text_embedder`` (its ``linear_1`` reads it) and is added to the timestep embedding
that modulates every block. Inside each joint (dual-stream) block the image queries attend to keys and
values that ``attn.add_k_proj`` / ``attn.add_v_proj`` compute from the text stream, beside the image
stream's own ``attn.to_k`` / ``attn.to_v``; FLUX's single-stream blocks then run one attention over the
concatenated text and image tokens, with projections shared by both.

Hence three module sets:

- :meth:`MMDiT.text_projections`, the closed-form targets (UCE): the layers whose *input* is a text
  encoder output, ``context_embedder`` (reads ``text``) and the pooled embedder's ``linear_1`` (reads
  ``pooled``). The ``add_k_proj`` / ``add_v_proj`` read the text stream (``context_embedder``'s output,
  normalised, modulated by the timestep and pooled embedding, and transformed by every block before),
  not the encoder output, so a closed form posed on encoder outputs does not apply to them.
- :meth:`MMDiT.text_attention_modules`, what ``transformer.text_attention`` trains: those two plus the
  text-stream key/value projections of every joint block, the weights through which image tokens read
  the text (the analogue of SD's ``attn2.to_k`` / ``attn2.to_v``). The single-stream blocks' projections
  also transform image tokens and stay frozen, as do the text stream's queries and feed-forwards.
- :meth:`MMDiT.cross_attention_modules`, what ESD-x trains (the analogue of a UNet's whole ``attn2``):
  both embedders and the text side of every joint block's attention, its queries, keys, values, their
  norms and ``to_add_out``. The image side's ``to_q`` / ``to_k`` / ``to_v`` / ``to_out`` also carry the
  image's attention to itself and stay out.

SD3.5's dual-attention blocks add an ``attn2``: a second image *self*-attention, no text in it; no set
selects it (all match ``.attn.`` names only).

**Sampling.** Both pipelines sample with a ``FlowMatchEulerDiscreteScheduler`` (``euler``). The
multistep DPM-Solver's flow mode builds its own sigma grid from the step count, so it cannot continue a
trajectory from a given step, and FLUX passes it ``mu``, which it only takes with dynamic shifting
(FLUX.1-schnell has none): it is not offered.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from swapbench.errors import UserError
from swapbench.families import Family, Projection

T5_LIMIT = 512
"""The most T5 tokens the SD3 and FLUX pipelines encode a caption with."""

JOINT_KV = (".attn.add_k_proj", ".attn.add_v_proj")
"""The text-stream key/value projections of a joint block's attention."""

JOINT_CONTEXT = (".attn.add_q_proj", *JOINT_KV, ".attn.to_add_out", ".attn.norm_added_q", ".attn.norm_added_k")
"""The text side of a joint block's attention: its queries, keys, values, their norms and its output."""

RESPACED = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")
"""Scheduler settings that respace the whole sigma grid from its ends and length (not elementwise)."""


class MMDiT(Family):
    denoiser = "transformer"
    cond_keys = ("text", "pooled")
    trainable = {"transformer": "every transformer weight",
                 "transformer.text_attention": "the layers that read the text: context_embedder, the pooled text "
                                               "embedder's linear_1 and every joint block's attn.add_k_proj / "
                                               "attn.add_v_proj"}
    text_attention = ("context_embedder (the sequence embeddings) and time_text_embed.text_embedder.linear_1 (the "
                      "pooled one) read the text encoders' outputs; image tokens read the text through each joint "
                      "block's attn.add_k_proj / attn.add_v_proj")
    samplers = ("euler",)

    @abstractmethod
    def default_sequence_length(self, pipe) -> int:
        """The T5 length of the family's checkpoints when ``model.max_sequence_length`` is unset."""

    def sequence_length(self, pipe, requested: int | None = None) -> int:
        length = requested or self.default_sequence_length(pipe)
        if not 0 < length <= T5_LIMIT:
            raise UserError(f"model.max_sequence_length={length} is out of range: the {self.title} pipeline encodes "
                            f"1 to {T5_LIMIT} T5 tokens")
        return length

    def objective(self, scheduler_config: Any, train):
        from swapbench.families.objectives import FlowMatching

        return FlowMatching(scheduler_config, train)

    def text_projections(self, denoiser) -> list[Projection]:
        pooled = "time_text_embed.text_embedder.linear_1"
        return [Projection("context_embedder", denoiser.context_embedder, "text"),
                Projection(pooled, denoiser.get_submodule(pooled), "pooled")]

    def text_attention_modules(self, denoiser) -> list:
        joint = [(name, module) for name, module in denoiser.named_modules() if name.endswith(JOINT_KV)]
        return [(p.name, p.module) for p in self.text_projections(denoiser)] + joint

    def cross_attention_modules(self, denoiser) -> list:
        """The two embedders of the text (the pooled one whole) and the text side of every joint block's
        attention; the image side's projections also serve the image's self-attention and stay out."""
        embedders = [("context_embedder", denoiser.context_embedder),
                     ("time_text_embed.text_embedder", denoiser.get_submodule("time_text_embed.text_embedder"))]
        return embedders + [(name, module) for name, module in denoiser.named_modules()
                            if name.endswith(JOINT_CONTEXT)]

    def img2img_kwargs(self, size: int) -> dict[str, Any]:
        """The SD3 and FLUX image-to-image pipelines size their noise by ``height`` / ``width`` (default: the
        checkpoint's native size), not by the start latents."""
        return {"height": size, "width": size}

    def lora_layers(self, denoiser) -> dict:
        """The peft state dict as is, as diffusers' SD3 and FLUX trainers save a transformer's adapters."""
        from peft.utils import get_peft_model_state_dict

        return get_peft_model_state_dict(denoiser)

    def sampler(self, name: str, config: Any):
        from diffusers import FlowMatchEulerDiscreteScheduler

        self.check_sampler(name)
        return FlowMatchEulerDiscreteScheduler.from_config(config)

    @abstractmethod
    def sigma_grid(self, pipe, steps: int):
        """The unshifted sigmas (float64 numpy) of ``steps``-step sampling, as the pipeline spaces them before
        the scheduler shifts them (SD3's ``shift``, FLUX's resolution-dependent ``mu``)."""

    def continuation(self, pipe, steps: int, k: int, latents) -> dict[str, Any]:
        """The tail of the unshifted grid as ``sigmas``: the scheduler's shift (and terminal stretch, which
        reads only the last sigma) is elementwise, so it maps the tail to the tail of the shifted schedule
        the full call steps through; the pipeline computes ``mu`` from the latents, as in the full call.
        The latents go in as they are: flow-matching pipelines do not scale given latents."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        config = pipe.scheduler.config
        if not isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler) or any(config.get(r) for r in RESPACED):
            raise UserError(f"a {self.title} trajectory continues only with the flow-matching Euler sampler on its "
                            f"plain sigma grid ({', '.join(RESPACED)} off), not this {type(pipe.scheduler).__name__}")
        return {"sigmas": self.sigma_grid(pipe, steps)[k:].tolist(), "latents": latents}
