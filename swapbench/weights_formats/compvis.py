"""``compvis``: a CompVis/LDM (or SGM) checkpoint, the denoiser under ``model.diffusion_model.*``, usually inside
``{'state_dict': ...}`` (UnlearnCanvas's baselines, the original ESD code).

The denoiser keys are converted by diffusers' own single-file converter for the base denoiser's class
(``convert_ldm_unet_checkpoint`` for a UNet, the SD3 and FLUX transformer converters), the one
``from_single_file`` uses; no key map is written here. The unlearning methods that publish this format
edit the denoiser only, so the checkpoint's other parts (the VAE, the text encoders, the EMA copy and the
noise-schedule buffers) are not loaded: the base's are used, and provenance counts what was left out.
"""

from __future__ import annotations

from swapbench.errors import UserError
from swapbench.weights_formats import Base, Weights, WeightsFormat, load_state

DENOISER_PREFIX = "model.diffusion_model."
NOT_LOADED = ("first_stage_model.", "cond_stage_model.", "conditioner.", "model_ema.")
"""The VAE, the text encoders (SD1/2, SDXL) and the EMA weights of an LDM checkpoint."""
SCHEDULE = "schedule buffers"
"""How provenance names the top-level, dot-free tensors (betas, alphas_cumprod, ...) of an LDM checkpoint."""


class CompVis(WeightsFormat):
    name = "compvis"
    detection = "keys under model.diffusion_model. (wrapped in {'state_dict': ...} or not)"
    loads = ("the family's denoiser, converted by diffusers' single-file converter of its class; the checkpoint's "
             "VAE, text encoders, EMA copy and schedule buffers are counted, not loaded")

    def detects(self, weights: Weights, base: Base) -> bool:
        return any(isinstance(k, str) and k.startswith(DENOISER_PREFIX) for k in weights.content)

    def apply(self, weights: Weights, base: Base):
        from diffusers.loaders.single_file_model import SINGLE_FILE_LOADABLE_CLASSES

        family, pipe, where = base.family, base.pipe, f"--weights {weights.path}"
        denoiser = family.denoiser_of(pipe)
        tensors = weights.tensors()
        source = {k: v for k, v in tensors.items() if k.startswith(DENOISER_PREFIX)}
        not_loaded: dict[str, int] = {}
        for key in (k for k in tensors if k not in source):
            part = next((p for p in NOT_LOADED if key.startswith(p)), SCHEDULE if "." not in key else None)
            if part is None:
                raise UserError(f"{where} has keys outside the parts of a CompVis checkpoint (such as {key}); is it "
                                "in another format? (--weights-format)")
            not_loaded[part] = not_loaded.get(part, 0) + 1
        convert = SINGLE_FILE_LOADABLE_CLASSES.get(type(denoiser).__name__, {}).get("checkpoint_mapping_fn")
        if convert is None:
            raise UserError(f"diffusers has no single-file converter for the {type(denoiser).__name__} of the base "
                            f"{base.name}, so a CompVis checkpoint cannot be read for it")
        # The converters take what they use (some pop it from the dict they are given): what is left in
        # ``remaining`` and did not pass through unchanged has no place in the base's denoiser.
        remaining = dict(source)
        try:
            converted = convert(checkpoint=remaining, config=denoiser.config)
        except (KeyError, IndexError, ValueError) as e:
            raise UserError(f"{where}: diffusers' {convert.__name__} cannot convert it for the base's "
                            f"{family.denoiser} ({type(e).__name__}: {e}); is it made for another base model?"
                            ) from None
        used = {id(t) for t in converted.values()}
        unused = [k for k, t in remaining.items() if id(t) not in used]
        if unused:
            raise UserError(f"{where} has {len(unused)} keys outside the base's {family.denoiser} (such as "
                            f"{unused[0]}: diffusers' {convert.__name__} finds no place for it); is it made for "
                            "another base model?")
        record = load_state(denoiser, converted, where, family.denoiser)
        if not_loaded:
            record["not_loaded"] = dict(sorted(not_loaded.items()))
        return pipe, {family.denoiser: record}


FORMAT = CompVis()
