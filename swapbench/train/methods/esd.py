"""``esd``: Erased Stable Diffusion (Gandikota et al., ICCV 2023), the model unlearning a concept from itself.

No data is read. Each step takes one source concept ``c`` of the run's edits (cycling through all of
them) in one of :data:`TEMPLATES`, samples with the *edited* model conditioned on ``c`` from pure noise
for a random ``k`` of :data:`SAMPLING_STEPS` steps (no gradient) to get ``x_t``, and regresses the
edited model's prediction for ``c`` at ``x_t`` on the frozen base's negatively guided one:

    target = e_g - eta (e_c - e_g),   loss = || eps_edited(x_t, c) - target ||^2,

with ``e_c = eps_base(x_t, c)`` and ``e_g = eps_base(x_t, g)``. For a plain erasure ``g`` is the empty
prompt (ESD's own rule: steer away from ``c`` towards the unconditional prediction); for an anchored
erasure, a remap and each direction of a swap it is the concept ``c``'s prompts should draw instead,
named in the same template. Flow-matching families predict a velocity: the rule is linear in the
prediction and applies as it is.

The family decides everything model-specific: the sampler (DDIM, ESD's own, where the family offers
it; the flow families' Euler otherwise), the pipeline call that samples ``x_t`` and its timestep, the
conditioning and the denoiser call, and which weights each ``train.esd_variant`` names.
"""

from __future__ import annotations

import copy
import random
import time
from typing import TYPE_CHECKING, Any

from swapbench.config import Config
from swapbench.errors import UserError
from swapbench.rundir import RunDir
from swapbench.train.methods import Method

if TYPE_CHECKING:
    import torch

    from swapbench.families import Conditioning, Family

TEMPLATES = ("{a}", "a {a}", "{plural}", "two {plural}")
"""The prompts a concept is trained in (``{a}``: the concept, ``{plural}``: its plural): short ones, as UCE's
default templates, and none an evaluation suite's prompt."""
SAMPLING_STEPS = 50
"""The trajectory ``x_t`` is taken from: ESD's 50 DDIM steps, stopped after a random 1 to 49 of them."""
GUIDANCE = 3.0
"""The guidance scale ``x_t`` is sampled with (ESD's ``start_guidance``)."""


def prompt(template: str, concept: str) -> str:
    from swapbench.edits.words import plural

    return template.replace("{a}", concept).replace("{plural}", plural(concept))


def esd_target(e_c: torch.Tensor, e_g: torch.Tensor, eta: float) -> torch.Tensor:
    """ESD's negatively guided prediction: from ``e_g`` away from the concept's ``e_c``."""
    return e_g - eta * (e_c - e_g)


def variant_parameters(family: Family, denoiser: torch.nn.Module, variant: str) -> list[tuple[str, Any]]:
    """The (name, parameter) pairs of ``denoiser`` that ``train.esd_variant`` trains."""

    def names(modules: list[tuple[str, torch.nn.Module]]) -> set[str]:
        return {f"{name}.{p}" for name, module in modules for p, _ in module.named_parameters()}

    cross = names(family.cross_attention_modules(denoiser))
    if variant == "x-strict":
        chosen = names(family.text_attention_modules(denoiser))
    elif variant == "x":
        chosen = cross
    else:
        chosen = {n for n, _ in denoiser.named_parameters()} - cross
    params = [(n, p) for n, p in denoiser.named_parameters() if n in chosen]
    if not params:
        raise UserError(f"train.esd_variant={variant} names no weight of the {family.title} {family.denoiser}; "
                        "use another variant")
    return params


def guides(cfg: Config) -> dict[str, str]:
    """Each source concept and the prompt ``e_g`` reads instead of the concept: the edit's target or anchor,
    else the empty prompt (``""``)."""
    edits = cfg.edit_set
    return {concept: edits.of(concept).replacement(concept) or "" for concept in edits.sources}


def sample_xt(pipe, family: Family, text: str, k: int, seed: int, size: int,
              max_sequence_length: int | None) -> torch.Tensor:
    """The latents after ``k`` of :data:`SAMPLING_STEPS` steps of ``pipe``'s sampling of ``text`` from the noise
    of ``seed``, in the layout :meth:`Family.predict` reads; they sit at ``pipe.scheduler.timesteps[k]``."""
    import torch

    captured = {}

    def stop(p, i, t, kwargs):
        if i + 1 == k:
            captured["latents"] = kwargs["latents"]
            p._interrupt = True  # diffusers' documented early stop: later steps are skipped
        return kwargs

    latents = family.initial_latents(pipe, [seed], size, size)
    with torch.no_grad():
        pipe(prompt=[text], num_inference_steps=SAMPLING_STEPS, guidance_scale=GUIDANCE, height=size, width=size,
             latents=latents.to(pipe.device, family.denoiser_of(pipe).dtype), output_type="latent",
             callback_on_step_end=stop, callback_on_step_end_tensor_inputs=["latents"],
             **family.prompt_kwargs(pipe, max_sequence_length))
    pipe._interrupt = False
    return family.denoiser_latents(pipe, captured["latents"], size, size)


def esd_loss(family: Family, pipe, edited: torch.nn.Module, frozen: torch.nn.Module, x_t: torch.Tensor,
             timestep: torch.Tensor, concept: Conditioning, guide: Conditioning, eta: float, train) -> torch.Tensor:
    """MSE of the edited model's prediction for ``concept`` at ``x_t`` against :func:`esd_target` of the frozen
    base's predictions for ``concept`` and ``guide`` (one batch of two)."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        both = {key: torch.cat([concept[key], guide[key]]) for key in concept}
        e_c, e_g = family.predict(pipe, frozen, torch.cat([x_t, x_t]), timestep.repeat(2), both,
                                  train).float().chunk(2)
    pred = family.predict(pipe, edited, x_t, timestep, concept, train)
    return F.mse_loss(pred.float(), esd_target(e_c, e_g, eta))


class ESD(Method):
    name = "esd"
    summary = ("ESD's self-distilled erasure: gradient steps towards the frozen base's negatively guided "
               "prediction, no data; loop-free here (one pass, no checkpoints or resume)")
    edits = ("train.esd_variant's part of the denoiser is tuned: the UNet's cross-attention (esd-x; an MMDiT's "
             "text embedders and the text side of its joint attention), its text key/value projections only "
             "(esd-x-strict) or everything but the cross-attention (esd-u); the VAE and text encoders are the "
             "base model's")
    card_keys = ("train.esd_variant", "train.esd_eta", "train.lr", "train.max_steps")

    def edit(self, pipe, cfg: Config, run: RunDir) -> dict[str, Any]:
        import torch

        from swapbench.devices import mixed_precision
        from swapbench.families import for_pipeline
        from swapbench.progress import progress_bar

        t = cfg.train
        if t.max_steps < 1 or t.lr <= 0:
            raise UserError(f"esd needs train.max_steps >= 1 (got {t.max_steps}) and train.lr > 0 (got {t.lr}); "
                            "e.g. --set train.max_steps=300 --set train.lr=1e-5")
        family = for_pipeline(pipe)
        size, length = cfg.data.resolution, cfg.model.max_sequence_length
        edited = family.denoiser_of(pipe)
        # The frozen copy is ESD's teacher; both stay in eval mode (no dropout: sampling x_t is a pure function
        # of the weights, the prompt and the seed).
        frozen = copy.deepcopy(edited).eval().requires_grad_(False)
        edited.eval().requires_grad_(False)
        trained = variant_parameters(family, edited, t.esd_variant)
        params = [p.requires_grad_(True) for _, p in trained]
        optimizer = torch.optim.AdamW(params, lr=t.lr, betas=(t.adam_beta1, t.adam_beta2),
                                      weight_decay=t.adam_weight_decay, eps=t.adam_epsilon)
        device = pipe.device
        precision = mixed_precision(t.mixed_precision, device)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

        def autocast():
            return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)

        concepts = guides(cfg)
        texts = {prompt(tp, w) if w else "" for c, g in concepts.items() for tp in TEMPLATES for w in (c, g)}
        cond = {text: {k: v.to(device) for k, v in family.encode(pipe, [text], device, length).items()}
                for text in sorted(texts)}
        sources = list(concepts)
        rng = random.Random(cfg.seed)
        sampler = family.sampler("ddim" if "ddim" in family.samplers else family.samplers[0], pipe.scheduler.config)
        own_scheduler, pipe.scheduler = pipe.scheduler, sampler
        pipe.set_progress_bar_config(disable=True)
        losses, counts = [], dict.fromkeys(sources, 0)
        started = time.perf_counter()
        try:
            with progress_bar() as bar:
                task = bar.add_task("esd", total=t.max_steps, info="")
                for step in range(t.max_steps):
                    concept = sources[step % len(sources)]
                    template = rng.choice(TEMPLATES)
                    k, seed = rng.randint(1, SAMPLING_STEPS - 1), rng.randrange(2**31)
                    text, guide = prompt(template, concept), concepts[concept]
                    guide_text = prompt(template, guide) if guide else ""
                    with autocast():
                        x_t = sample_xt(pipe, family, text, k, seed, size, length)
                    timestep = sampler.timesteps[k].reshape(1).to(device)
                    with autocast():
                        loss = esd_loss(family, pipe, edited, frozen, x_t, timestep, cond[text], cond[guide_text],
                                        t.esd_eta, t)
                    if not torch.isfinite(loss):
                        raise UserError(f"esd: the loss became NaN/inf at step {step + 1}; rerun with a lower "
                                        f"train.lr (now {t.lr:g})")
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    losses.append(loss.item())
                    counts[concept] += 1
                    bar.update(task, completed=step + 1, info=f"{concept} k={k} loss {losses[-1]:.4f}")
        finally:
            pipe.scheduler = own_scheduler
            edited.requires_grad_(False)
        seconds = time.perf_counter() - started
        tail = losses[-max(1, len(losses) // 10):]
        return {"steps": t.max_steps, "esd": {
            "variant": t.esd_variant, "eta": t.esd_eta, "lr": t.lr, "steps": t.max_steps,
            "loss_first": round(losses[0], 6), "loss_last": round(losses[-1], 6),
            "loss_mean_last_10pct": round(sum(tail) / len(tail), 6),
            "s_per_step": round(seconds / t.max_steps, 4), "loop_s": round(seconds, 2),
            "trainable_parameters": sum(p.numel() for p in params), "trainable_tensors": len(params),
            "guides": concepts, "steps_per_concept": counts, "templates": list(TEMPLATES),
            "sampler": type(sampler).__name__, "sampling_steps": SAMPLING_STEPS, "guidance_scale": GUIDANCE,
            "resolution": size, "mixed_precision": precision,
            "loop_free": "one pass in memory: no checkpoints, no resume, no in-loop evaluation"}}


METHOD = ESD()
