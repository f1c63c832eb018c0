"""``lora``: a LoRA file in the diffusers / peft layout (what ``save_lora_weights`` writes; ``RUN/lora/``).

Applied as a user of diffusers applies it, and as ``swapbench train --method lora`` merges its own export:
``pipe.load_lora_weights`` (a safetensors file by name, so the ``lora_alpha`` in its adapter metadata is
read), ``fuse_lora``, ``unload_lora_weights``. :func:`fuse` is shared with the kohya format, whose keys the
same loader converts.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path

from swapbench.errors import UserError
from swapbench.weights_formats import SAFETENSORS, Base, Weights, WeightsFormat, sample

KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")
SIZE_MISMATCH = re.compile(r"size mismatch for (\S+): copying a param with shape torch\.Size\(\[([^\]]*)\]\) from "
                           r"checkpoint, the shape in current model is torch\.Size\(\[([^\]]*)\]\)")
"""torch's ``load_state_dict`` message, which peft's adapter loading raises for a LoRA of another shape."""


class Lora(WeightsFormat):
    name = "lora"
    detection = "every key names a LoRA tensor ('lora' in it, diffusers' own test): *.lora_A.weight, *.lora.down.weight"
    loads = "pipe.load_lora_weights, then fuse_lora: the adapters merged into the denoiser and text encoders they name"

    def detects(self, weights: Weights, base: Base) -> bool:
        keys = list(weights.content)
        return bool(keys) and all(isinstance(k, str) and "lora" in k for k in keys)

    def apply(self, weights: Weights, base: Base):
        return fuse(weights, base)


@contextmanager
def _loader_quiet():
    """diffusers logs a failed adapter load at error level before raising it; the raised error is turned into
    the one line a user sees, so the log would only repeat it."""
    from diffusers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity(logging.CRITICAL)
    try:
        yield
    finally:
        logging.set_verbosity(level)


def _lora_matrices(module) -> int:
    """The LoRA A/B matrices an adapter put into ``module`` (0 when it has none)."""
    from peft.utils import get_peft_model_state_dict

    return sum(sum(1 for v in get_peft_model_state_dict(module, adapter_name=name).values() if v.ndim >= 2)
               for name in getattr(module, "peft_config", {}) or {})


def _source(weights: Weights, file: Path) -> tuple[str | dict, dict]:
    """What the loader reads: a safetensors file by name (so its adapter metadata, ``lora_alpha``, comes with it),
    else the weights-only tensors, a fresh copy each time (the loader pops the keys it converts)."""
    if file.suffix == SAFETENSORS:
        return str(file.parent), {"weight_name": file.name}
    return dict(weights.tensors()), {}


def fuse(weights: Weights, base: Base):
    """The LoRA file loaded by the pipeline's own loader, checked, and fused into the weights."""
    import torch

    pipe, family, where = base.pipe, base.family, f"--weights {weights.path}"
    if len(weights.files) != 1:
        raise UserError(f"{where}: a LoRA is one file and this folder holds {len(weights.files)} "
                        f"({sample(f.name for f in weights.files)}); pass the file")
    file = weights.files[0]
    source, kwargs = _source(weights, file)
    state = pipe.lora_state_dict(source, return_lora_metadata=True, **kwargs)[0]
    kohya = [k for k in state if k.startswith(KOHYA_PREFIXES)]
    if kohya:
        raise UserError(f"{where}: diffusers' {type(pipe).__name__} LoRA loader does not convert kohya-style keys "
                        f"(such as {kohya[0]}) for the {family.title} family; convert the file to the diffusers LoRA "
                        "format first")
    matrices = sum(1 for v in state.values() if v.ndim >= 2)  # alphas and DoRA scales are not matrices
    source, kwargs = _source(weights, file)
    try:
        with _loader_quiet():
            pipe.load_lora_weights(source, **kwargs)
    except RuntimeError as e:
        mismatch = SIZE_MISMATCH.search(str(e))
        if mismatch is None:
            raise
        key = re.sub(r"\.default_\d+", "", mismatch[1])  # peft's adapter name is not in the file
        raise UserError(f"{where} does not fit the base: {key} is [{mismatch[2]}] in the file but [{mismatch[3]}] in "
                        "the base; is it made for another base model? (--base)") from None
    except ValueError as e:
        if "not found in the base model" not in str(e):
            raise
        raise UserError(f"{where} covers none of the base: no module its LoRA names exists there (keys such as "
                        f"{sample(state)}); is it made for another base model?") from None
    loaded = {}
    for name, module in pipe.components.items():
        n = _lora_matrices(module) if isinstance(module, torch.nn.Module) else 0
        if n:
            loaded[name] = n
    if not loaded:
        raise UserError(f"{where} covers none of the base: diffusers loaded none of its {matrices} LoRA matrices "
                        f"(keys such as {sample(state)}); is it made for another base model?")
    if sum(loaded.values()) < matrices:
        raise UserError(f"{where} has {matrices - sum(loaded.values())} LoRA matrices outside the base (of "
                        f"{matrices}; the loader found no module for them); is it made for another base model?")
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    return pipe, {name: {"tensors": n, "load": "fused LoRA"} for name, n in loaded.items()}


FORMAT = Lora()
